"""The records that cross the backend seam: what the facade submits, what a worker claims and
reports, and what the worker registry holds. Plain data (the model layer, beside
:mod:`conveyor.job`); the protocol that carries them is :mod:`conveyor.backends.base`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from conveyor.job import ErrorInfo, JobOptions, JobRecord


@dataclass(slots=True)
class JobSpec:
    """A job as the facade hands it to ``submit``: validated, ready to store."""

    id: str
    task: str
    mode: str
    options: JobOptions
    #: the arguments, as the in-process backend's records show them
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: what a worker runs: the encoded arguments (durable backends), the encoded function and
    #: arguments (in-process process mode), or a :class:`Call` (in-process, other modes)
    payload: object = None
    #: the task's max_concurrency, if it has one
    max_concurrency: int | None = None
    #: how a worker in another process finds the function: a registered task name or
    #: ``module:qualname`` (durable backends)
    ref: str | None = None


class Call(NamedTuple):
    """An in-process job's function and arguments: its payload on ``memory://`` (but in
    process mode), stored and handed back untouched."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass(slots=True)
class ClaimedJob:
    """What a worker gets from ``claim``/``report``: the stored job, still encoded. The worker
    decodes it (checks ``mac``, its trust in ``ref``, loads ``payload``) -- never the backend."""

    id: str
    attempt: int
    task: str
    mode: str
    #: how a worker finds the function: a registered task name or ``module:qualname``
    ref: str
    #: bytes (durable backends, process mode); on memory:// the call object, handed back untouched
    payload: object
    timeout: float | None
    #: the envelope's signature (with a secret), else None
    mac: bytes | None = None

    def envelope(self) -> list[bytes]:
        """The fields its signature covers (see :func:`envelope`)."""
        assert isinstance(self.payload, bytes)
        return envelope(self.id, self.ref, self.task, self.mode, self.payload, self.timeout)


def envelope(
    job_id: str, ref: str, task: str, mode: str, payload: bytes, timeout: float | None
) -> list[bytes]:
    """The fields of a job that a worker obeys, as its signature covers them."""
    texts = [job_id, ref, task, mode, "none" if timeout is None else float(timeout).hex()]
    fields = [text.encode("utf-8", "surrogatepass") for text in texts]
    return [*fields[:4], bytes(payload), fields[4]]


@dataclass(slots=True)
class RunnableJob:
    """A claimed job its worker decoded: what an executor's slot runs and reports.

    ``fn``, ``args`` and ``kwargs`` are the call; in-process jobs in process mode carry it
    encoded for the child process in ``payload`` instead (``fn`` None)."""

    id: str
    attempt: int
    task: str
    mode: str
    fn: Callable[..., Any] | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    payload: bytes | None
    timeout: float | None


class Finished(NamedTuple):
    """A finished attempt: its result (encoded bytes on durable backends; the object itself on
    memory://), and when (queue clock) its slot started it and it ended (None: the claim's time,
    and the time the report is recorded)."""

    job_id: str
    attempt: int
    result: object
    started: float | None = None
    ended: float | None = None


class Failure(NamedTuple):
    """A failed attempt. ``final``: no retry can mend it (a forged, untrusted or corrupt job,
    refused by the worker), so the job fails for good whatever its retries."""

    job_id: str
    attempt: int
    error: ErrorInfo
    started: float | None = None
    ended: float | None = None
    final: bool = False


Report = Finished | Failure


class Recorded(NamedTuple):
    """What one report became: dropped (``held`` False: the attempt no longer held its job),
    recorded, and for a failure whether it is retried from ``retry_at`` (queue clock)."""

    held: bool
    retry_at: float | None = None

    @property
    def retrying(self) -> bool:
        """True if the job will run again."""
        return self.retry_at is not None


class Reported(NamedTuple):
    """``report``'s answer: one :class:`Recorded` per report, in order, and the jobs claimed."""

    recorded: list[Recorded]
    claimed: list[ClaimedJob]


class Cancelled(NamedTuple):
    """``cancel``'s answer: whether the job was still active, and the worker slot
    (``"<worker id>/<slot>"``) that ran it if it was running."""

    ended: bool
    worker: str | None = None

    def __bool__(self) -> bool:
        return self.ended


@dataclass(slots=True)
class WorkerInfo:
    """One worker as the backend knows it (for ``conveyor status`` and the dashboard)."""

    id: str
    host: str
    pid: int
    mode: str
    slots: int
    started: float
    last_seen: float
    #: the worker's own lease in seconds (None: not recorded, a file of an older version)
    lease: float | None = None

    def lost(self, now: float, lease: float) -> bool:
        """True once the worker was silent longer than its own lease (``lease`` if it has
        none recorded): it died or hangs, and its jobs go back to the queue."""
        return now - self.last_seen > (self.lease if self.lease is not None else lease)


#: the ``meta`` key of a retried job's earlier ends (a list of :func:`history_entry` dicts)
HISTORY = "conveyor.history"


def history_entry(
    status: str,
    error: str | None,
    traceback: str | None,
    attempts: int,
    ended: float | None,
    now: float,
) -> dict[str, Any]:
    """How a job ended before it was retried, as JSON data (times ISO 8601, UTC)."""
    ended_at = JobRecord.timestamp(ended)
    retried_at = JobRecord.timestamp(now)
    return {
        "status": status,
        "error": error,
        "traceback": traceback,
        "attempts": attempts,
        "ended": None if ended_at is None else ended_at.isoformat(),
        "retried": None if retried_at is None else retried_at.isoformat(),
    }


def with_history(meta: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``meta`` with ``entry`` appended to its history."""
    earlier = meta.get(HISTORY)
    return {**meta, HISTORY: [*(earlier if isinstance(earlier, list) else []), entry]}


def ended_before(moment: float | None, before: float | None) -> bool:
    """Whether a job's ``moment`` (its end, or its submission) lies before ``before``
    (None: no limit)."""
    return before is None or (moment is not None and moment < before)
