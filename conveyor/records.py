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
    fn: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: the encoded (function, args, kwargs) for executors in another process
    payload: bytes | None = None
    #: the task's max_concurrency, if it has one
    max_concurrency: int | None = None
    #: how a worker in another process finds the function: a registered task name or
    #: ``module:qualname`` (durable backends)
    ref: str | None = None


class Failed(NamedTuple):
    """What a failed attempt became, as the backend recorded it (``fail``'s answer): retried
    as the next attempt from ``retry_at`` (queue clock) on, or failed for good (None)."""

    retry_at: float | None = None

    @property
    def retrying(self) -> bool:
        """True if the job will run again."""
        return self.retry_at is not None


@dataclass(frozen=True, slots=True)
class Unrunnable:
    """Why a claimed job cannot run in this worker, already recorded by the backend: the
    job is ``refused`` (its signature, trust, reference or payload is bad: failed for good,
    no retry can mend it), or its function could not be loaded (importing its module raised,
    or the module has no such function: a failed attempt, retried if it has retries left)."""

    error: ErrorInfo
    outcome: Failed
    refused: bool


@dataclass(slots=True)
class ClaimedJob:
    """What a worker gets from ``claim``: enough to run one attempt and report it.

    A job with ``unrunnable`` set is not running: the backend recorded why it cannot run here
    (see :class:`Unrunnable`) and hands it over only so that its worker can say so."""

    id: str
    attempt: int
    task: str
    mode: str
    fn: Callable[..., Any] | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    payload: bytes | None
    timeout: float | None
    unrunnable: Unrunnable | None = None


class Finished(NamedTuple):
    """A finished attempt, as a worker reports it: the job, its attempt, what it returned, and
    when (queue clock) its slot started it and it ended; None: the claim's time, and the time
    the report is recorded."""

    job_id: str
    attempt: int
    result: Any
    started: float | None = None
    ended: float | None = None


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
