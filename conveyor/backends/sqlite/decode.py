"""What the SQLite backend makes of its rows: a claimed row into the job its worker gets (still
encoded: the worker decodes it, see :mod:`conveyor.worker.decoding`), a row into a record.

Reading a record never unpickles an unsigned pickle's arguments (:data:`HIDDEN_ARGS` stand
in), and its result only when the caller asked for results.
"""

from __future__ import annotations

import json
from typing import Any

from conveyor.backends.sqlite.schema import names
from conveyor.errors import PayloadRefused
from conveyor.job import JobRecord, Status
from conveyor.records import ClaimedJob
from conveyor.serializer import NOT_DECODED, Serializer

#: what a record shows for arguments it did not decode (an unsigned pickle)
HIDDEN_ARGS: tuple[Any, ...] = (NOT_DECODED,)
HIDDEN_KWARGS: dict[str, Any] = {"<not decoded>": NOT_DECODED}


def claimed(row: dict[str, Any]) -> ClaimedJob:
    """A row claimed (as it was before the claim) as its worker gets it: still encoded (the
    worker checks and decodes it)."""
    return ClaimedJob(
        row["id"], row["attempts"] + 1, row["task"], row["mode"], row["ref"], row["payload"],
        row["timeout"], row["mac"],
    )  # fmt: skip


def record(row: dict[str, Any], serializer: Serializer, *, results: bool = False) -> JobRecord:
    """A row as a record. Payloads that reading could make run code (pickle without a
    secret) are not decoded: the arguments never, the result only when ``results`` (the
    caller asked for results: ``result()``, ``map``, ``get``/``collect``, events of the
    process that stored it); :data:`~conveyor.serializer.NOT_DECODED` stands in."""
    stamp = JobRecord.timestamp
    trusted = serializer.trusts_reads
    if trusted:
        try:
            args, kwargs = serializer.loads(row["payload"])
        except PayloadRefused:
            args, kwargs = (), {}
    else:
        args, kwargs = HIDDEN_ARGS, HIDDEN_KWARGS
    result = None
    if row["result"] is not None and row["status"] == Status.FINISHED:
        if trusted or results:
            try:
                result = serializer.loads(row["result"])
            except PayloadRefused as exc:
                result = exc
        else:
            result = NOT_DECODED
    started, ended = row["started"], row["ended"]
    return JobRecord(
        id=row["id"], task=row["task"], status=Status(row["status"]), args=tuple(args),
        kwargs=dict(kwargs), priority=row["priority"],
        lane=None if row["lane"] is None else json.loads(row["lane"]),
        after=tuple(json.loads(row["after"])), exclusive=tuple(names(row["exclusive"])),
        incompatible=tuple(names(row["incompatible"])), attempts=row["attempts"],
        worker=row["worker"], submitted=stamp(row["submitted"]), started=stamp(started),
        ended=stamp(ended),
        runtime=None if started is None or ended is None else max(0.0, ended - started),
        result=result, error=row["error"], traceback=row["traceback"],
        meta=json.loads(row["meta"]), progress=row.get("progress"),
        progress_message=row.get("progress_message"),
    )  # fmt: skip
