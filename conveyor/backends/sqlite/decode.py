"""What the SQLite backend decodes: a claimed row into a job to run, a row into a record.

A claimed job's checks go in this order: the signature (with a secret) before any import or
decode, the trust (which modules may run) before any import. Reading a record never unpickles
an unsigned pickle's arguments (:data:`HIDDEN_ARGS` stand in), and its result only when the
caller asked for results.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from typing import Any

from conveyor.backends.sqlite.schema import names
from conveyor.errors import PayloadRefused
from conveyor.job import ErrorInfo, JobRecord, Status
from conveyor.records import ClaimedJob
from conveyor.references import CannotLoad
from conveyor.serializer import NOT_DECODED, Serializer

#: what a record shows for arguments it did not decode (an unsigned pickle)
HIDDEN_ARGS: tuple[Any, ...] = (NOT_DECODED,)
HIDDEN_KWARGS: dict[str, Any] = {"<not decoded>": NOT_DECODED}


def claimed(
    row: dict[str, Any], serializer: Serializer, resolve: Callable[[str], Callable[..., Any]]
) -> ClaimedJob:
    """A claimed row as the job its worker runs: its signature checked (with a secret), its
    function loaded, its arguments decoded; raises CannotLoad (the function cannot be
    loaded) or whatever refuses it (a bad signature, an untrusted module, a corrupt payload)."""
    if serializer.signed:
        serializer.verify_job(
            row["mac"],
            envelope(
                row["id"], row["ref"], row["task"], row["mode"], row["payload"], row["timeout"]
            ),
        )
    fn = resolve(row["ref"])
    args, kwargs = serializer.loads(row["payload"])
    return ClaimedJob(
        row["id"], row["attempts"] + 1, row["task"], row["mode"], fn, tuple(args),
        dict(kwargs), None, row["timeout"],
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
        meta=json.loads(row["meta"]),
    )  # fmt: skip


def load_error(exc: CannotLoad) -> ErrorInfo:
    """A job function that could not be loaded, as its error: the type of what importing its
    module raised (LookupError: no such function), the module named, the import's traceback."""
    cause = exc.__cause__
    if cause is None:
        return ErrorInfo("LookupError", str(exc))
    return ErrorInfo(type(cause).__qualname__, str(exc), "".join(traceback.format_exception(cause)))


def envelope(
    job_id: str, ref: str, task: str, mode: str, payload: bytes, timeout: float | None
) -> list[bytes]:
    """The fields of a job that a worker obeys, as its signature covers them."""
    texts = [job_id, ref, task, mode, "none" if timeout is None else float(timeout).hex()]
    fields = [text.encode("utf-8", "surrogatepass") for text in texts]
    return [*fields[:4], bytes(payload), fields[4]]
