"""The operations on a queue that the command line and the HTTP API share, written once: find a
task by name, submit it with JSON arguments and put options, list jobs (filtered, paged), a
record as JSON, cancel, retry, purge, counts by status and the workers.

They raise conveyor errors (:class:`UnknownTask`, InvalidJob, UnknownJob); ``conveyor.cli``
turns them into click errors, ``conveyor.web`` into HTTP statuses.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidJob
from conveyor.job import TERMINAL, JobRecord, Status, age, check_name, status_of
from conveyor.records import HISTORY, WorkerInfo
from conveyor.references import how_to_trust
from conveyor.task import Task

if TYPE_CHECKING:
    from conveyor.handle import Job
    from conveyor.queue import Queue


class UnknownTask(InvalidJob):
    """No task of that name is registered with the queue (nor allowed by import path)."""


#: the put options a submit by name takes (JSON-expressible; ``at`` as epoch seconds or ISO 8601)
PUT_OPTIONS = frozenset(
    {
        "after", "exclusive", "incompatible", "lane", "stop_on_lane_error", "priority",
        "timeout", "expires", "retries", "retry_delay", "backoff", "delay", "at", "unique",
        "unique_for", "meta",
    }
)  # fmt: skip


# ------------------------------------------------------------------ submitting
def find_task(queue: Queue, name: str, *, trusted: bool = True) -> Callable[..., Any]:
    """A registered task by name or import path, or the function (or Task) at
    ``module:qualname`` of a module the queue allows (checked before importing it; a queue
    in this process allows any module to a ``trusted`` caller, not to a remote one).
    Raises :class:`UnknownTask`."""
    if ":" not in name:
        task = queue.tasks.get(name)
        if task is None:
            known = ", ".join(sorted(queue.tasks)) or "none"
            raise UnknownTask(
                f"no task named {name!r} is registered with the queue (registered: {known});"
                " give module:function for a function of a module the queue allows"
            )
        return task
    registered = queue.task_paths.get(name)
    if registered is not None:
        return registered
    module_name, _, qualname = name.partition(":")
    if (queue.durable or not trusted) and module_name not in queue.allowed:
        # not imported: a durable queue's workers would refuse it anyway
        raise UnknownTask(
            f"{name} is not a task registered with the queue and module {module_name!r} is not"
            f" allowed; {how_to_trust(module_name)}"
        )
    if not trusted and any(part.startswith("_") for part in qualname.split(".")):
        raise UnknownTask(f"{name}: a private name is not a task")
    try:
        target: Any = importlib.import_module(module_name)
    except (ImportError, ValueError) as exc:
        raise UnknownTask(f"cannot import {module_name!r}: {exc}") from exc
    for part in qualname.split("."):
        if not hasattr(target, part):
            raise UnknownTask(f"module {module_name!r} has no {qualname!r}")
        target = getattr(target, part)
    if not isinstance(target, Task) and not callable(target):
        raise UnknownTask(f"{name} is not callable")
    found: Callable[..., Any] = target
    return found


def parse_moment(value: Any) -> datetime | float:
    """An ``at``: epoch seconds, or an ISO 8601 time (naive: local). InvalidJob otherwise."""
    if isinstance(value, datetime | int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise InvalidJob(
        f"{value!r} is neither an ISO 8601 time (2030-01-02T03:04:05) nor epoch seconds"
    )


def submit(
    queue: Queue,
    task_name: str,
    args: Iterable[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    job_id: str | None = None,
    trusted: bool = True,
    block: bool = True,
    **options: Any,
) -> Job:
    """Put a job calling the task named ``task_name`` (see :func:`find_task`); ``options`` are
    put's (:data:`PUT_OPTIONS`; None means "the default"). ``trusted``: see :func:`find_task`
    (the HTTP API is not); ``block``: see :meth:`Queue.put`. Bad input raises InvalidJob (an
    UnknownTask for the name) and puts nothing."""
    unknown = sorted(set(options) - PUT_OPTIONS)
    if unknown:
        raise InvalidJob(f"unknown put option(s): {', '.join(unknown)}")
    given = {name: value for name, value in options.items() if value is not None}
    if "at" in given:
        given["at"] = parse_moment(given["at"])
    fn = find_task(queue, task_name, trusted=trusted)
    return queue.put(fn, list(args), dict(kwargs or {}), id=job_id, block=block, **given)


# ------------------------------------------------------------------ reading
@dataclass(frozen=True, slots=True)
class Page:
    """One page of jobs: ``total`` match the filter, ``jobs`` are those from ``offset``."""

    jobs: list[JobRecord]
    total: int
    limit: int
    offset: int


def list_jobs(
    queue: Queue,
    status: Status | str | None = None,
    *,
    task: str | None = None,
    limit: int = 50,
    offset: int = 0,
    newest_first: bool = True,
) -> Page:
    """The jobs in ``status`` (of ``task``), newest submitted first (or in submission order),
    ``limit`` of them from ``offset`` (``limit`` 0: all). InvalidJob for a bad value."""
    if limit < 0:
        raise InvalidJob(f"limit must be >= 0, got {limit}")
    if offset < 0:
        raise InvalidJob(f"offset must be >= 0, got {offset}")
    records = queue.jobs(None if status is None else status_of(status))
    if task is not None:
        records = [r for r in records if r.task == task]
    if newest_first:
        records.reverse()
    shown = records[offset : offset + limit] if limit else records[offset:]
    return Page(shown, len(records), limit, offset)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 with its UTC offset, or None."""
    return None if moment is None else moment.isoformat()


def history_of(record: JobRecord) -> list[dict[str, Any]]:
    """How a retried job ended before (oldest first)."""
    history = record.meta.get(HISTORY)
    return [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []


def record_json(record: JobRecord) -> dict[str, Any]:
    """A job as JSON data: every JobRecord field, times as ISO 8601 (UTC), and ``history``
    (earlier ends of a retried job)."""
    data = record.as_dict()
    for name in ("submitted", "started", "ended"):
        data[name] = iso(getattr(record, name))
    data["args"] = list(record.args)
    data["after"], data["exclusive"] = list(record.after), list(record.exclusive)
    data["incompatible"] = list(record.incompatible)
    data["meta"] = {k: v for k, v in record.meta.items() if k != HISTORY}
    data["history"] = history_of(record)
    return data


def counts(queue: Queue) -> dict[str, int]:
    """How many jobs are in each status (every status named)."""
    found = queue.backend.counts()
    return {s.value: found.get(s, 0) for s in Status}


def workers(queue: Queue) -> list[WorkerInfo]:
    """Every worker of the queue, the lost ones too (see :func:`lost_workers`)."""
    return queue.backend.workers(include_lost=True)


def lost_workers(queue: Queue, found: Iterable[WorkerInfo]) -> set[str]:
    """The ids of the workers silent longer than their lease."""
    now = queue.clock.now()
    return {w.id for w in found if w.lost(now, queue.settings.lease)}


def worker_json(worker: WorkerInfo, lost: Iterable[str] = ()) -> dict[str, Any]:
    """A worker as JSON data, with its ``state``: ``alive`` or ``lost``."""
    return {
        "id": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "mode": worker.mode,
        "slots": worker.slots,
        "started": iso(datetime.fromtimestamp(worker.started, UTC)),
        "last_seen": iso(datetime.fromtimestamp(worker.last_seen, UTC)),
        "state": "lost" if worker.id in set(lost) else "alive",
    }


# ------------------------------------------------------------------ changing
def cancel(queue: Queue, job_id: str) -> bool:
    """Cancel a job, stopping it if it runs; False if it had already ended. UnknownJob."""
    return queue.cancel(job_id)


def retry(queue: Queue, job_id: str) -> Job:
    """Put a failed or cancelled job back to waiting. UnknownJob, InvalidJob."""
    return queue.retry(job_id)


def failed_ids(queue: Queue, task: str | None = None) -> list[str]:
    """The ids of the failed jobs (of ``task``), in submission order."""
    return [r.id for r in queue.jobs(Status.FAILED) if task is None or r.task == task]


def purge(
    queue: Queue,
    statuses: Iterable[Status | str] | None = None,
    *,
    task: str | None = None,
    older_than: float | None = None,
) -> int:
    """Drop jobs (default: the ended ones) and their results; return how many. InvalidJob
    (nothing dropped) for a bad status, ``running``, or a bad age."""
    chosen = set(TERMINAL) if statuses is None else {status_of(s) for s in statuses}
    if task is not None:
        check_name(task, "task")
    if older_than is not None:
        age(older_than)
    return queue.purge(chosen or None, task=task, older_than=older_than)
