"""What the Redis backend makes of a job's hash: a record (a claimed job is built in
:mod:`.backend`). Reading a record never unpickles an unsigned pickle's arguments, and its result
only when the caller asked for results (as on SQLite: :mod:`conveyor.backends.sqlite.decode`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from conveyor.backends.sqlite.decode import HIDDEN_ARGS, HIDDEN_KWARGS
from conveyor.errors import PayloadRefused
from conveyor.job import JobRecord, Status
from conveyor.serializer import NOT_DECODED, Serializer

Hash = dict[str, bytes]


def snapshot(flat: Sequence[bytes]) -> Hash:
    """A flat HGETALL reply (field, value, ...) as a dict of text fields."""
    return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}


def text(h: Hash, name: str) -> str | None:
    value = h.get(name)
    return None if value is None else value.decode("utf-8", "surrogatepass")


def number(h: Hash, name: str) -> float | None:
    value = h.get(name)
    return None if value is None else float(value)


def result_of(h: Hash, serializer: Serializer, results: bool) -> Any:
    """The job's result, decoded if reading it runs no code or the caller asked for it."""
    data = h.get("result")
    if data is None or h.get("status") != b"finished":
        return None
    if serializer.trusts_reads or results:
        try:
            return serializer.loads(data)
        except PayloadRefused as exc:
            return exc
    return NOT_DECODED


def names(h: Hash, name: str) -> tuple[Any, ...]:
    """A JSON list field (left out when empty) as a tuple."""
    value = h.get(name)
    return () if value is None else tuple(json.loads(value))


def record(h: Hash, serializer: Serializer, *, results: bool = False) -> JobRecord:
    """A job's hash as a record (see the module docstring)."""
    stamp = JobRecord.timestamp
    if serializer.trusts_reads:
        try:
            args, kwargs = serializer.loads(h["payload"])
        except PayloadRefused:
            args, kwargs = (), {}
    else:
        args, kwargs = HIDDEN_ARGS, HIDDEN_KWARGS
    started, ended = number(h, "started"), number(h, "ended")
    lane = h.get("lane")
    return JobRecord(
        id=text(h, "id") or "", task=text(h, "task") or "", status=Status(h["status"].decode()),
        args=tuple(args), kwargs=dict(kwargs), priority=int(h.get("priority", b"0")),
        lane=None if lane is None else json.loads(lane),
        after=names(h, "after"), exclusive=names(h, "exclusive"),
        incompatible=names(h, "incompatible"),
        attempts=int(h.get("attempts", b"0")), worker=text(h, "worker"),
        submitted=stamp(number(h, "submitted")), started=stamp(started), ended=stamp(ended),
        runtime=None if started is None or ended is None else max(0.0, ended - started),
        result=result_of(h, serializer, results), error=text(h, "error"),
        traceback=text(h, "traceback"), meta=json.loads(h["meta"]) if "meta" in h else {},
        progress=number(h, "progress"), progress_message=text(h, "progress_message"),
    )  # fmt: skip
