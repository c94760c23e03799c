"""Retrying an ended job and purging jobs: the memory engine's admin steps.

Rare operations, kept apart from the engine's per-job path; each runs under the backend's lock
and leaves its cascade on the engine's work list.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection

from conveyor import events as ev
from conveyor import rules
from conveyor.backends.memory.engine import Engine
from conveyor.backends.memory.state import Entry, Lane
from conveyor.errors import InvalidJob
from conveyor.job import TERMINAL, Status
from conveyor.records import ended_before, history_entry, with_history


def retry_ended(engine: Engine, entry: Entry, now: float) -> None:
    """Put a failed or cancelled job back to waiting (see :meth:`Backend.retry`); InvalidJob,
    with nothing changed, if it cannot be."""
    if entry.status not in (Status.FAILED, Status.CANCELLED):
        raise InvalidJob(
            f"job {entry.id!r} is {entry.status.value}; only failed or cancelled jobs"
            " can be retried"
        )
    awaited = _dependencies(engine, entry)
    _take_unique(engine, entry, now)
    history = history_entry(
        entry.status.value, entry.error, entry.traceback, entry.attempts, entry.ended, now
    )
    expires_at = entry.opts.expires_at
    entry.opts = entry.opts.replace(
        meta=with_history(entry.opts.meta, history),
        expires_at=None if expires_at is not None and expires_at <= now else expires_at,
    )
    engine.ended.pop(entry.id, None)
    entry.attempts = 0
    entry.started = entry.ended = entry.due = entry.worker = None
    entry.result = entry.error = entry.traceback = None
    entry.where = None
    engine.set_status(entry, Status.WAITING)
    for dep in awaited:
        dep.add_dependent(entry.id)
    entry.pending_deps = len(awaited)
    engine.emit(ev.QUEUED, entry)
    if awaited:
        _leave_lane(engine, entry)  # it joins once its dependencies finished
    elif entry.opts.lane is not None:
        _rejoin_lane(engine, entry)
    else:
        engine.consider(entry)


def _dependencies(engine: Engine, entry: Entry) -> list[Entry]:
    """The dependencies a retried job waits for again; InvalidJob if one did not finish."""
    awaited = []
    for dep_id in entry.opts.after:
        dep = engine.jobs.get(dep_id)
        if dep is None or dep.status is Status.FINISHED:
            continue  # gone (popped or forgotten) or finished: satisfied
        if dep.status in TERMINAL:
            raise InvalidJob(
                f"job {entry.id!r} depends on {dep_id!r}, which {dep.status.value}; "
                f"retry {dep_id!r} first"
            )
        awaited.append(dep)
    return awaited


def _take_unique(engine: Engine, entry: Entry, now: float) -> None:
    key = entry.opts.unique
    if not key:
        return
    held = engine.unique.get(key)
    if held is not None and held[0] != entry.id:
        holder = engine.jobs.get(held[0])
        if holder is not None and rules.unique_still_held(
            holder.status not in TERMINAL, held[1], now
        ):
            raise InvalidJob(
                f"job {entry.id!r} cannot be retried: job {held[0]!r} holds its unique key {key!r}"
            )
    engine.unique[key] = (entry.id, None)


def _rejoin_lane(engine: Engine, entry: Entry) -> None:
    """Rejoin the lane in the job's place (priority, submission); an idle lane forgets its
    last failure, so stop_on_lane_error does not cancel the retried job at once."""
    name = entry.opts.lane
    assert name is not None
    lane = engine.lanes.setdefault(name, Lane())
    if entry.item() not in lane.heap:
        heapq.heappush(lane.heap, entry.item())
    if lane.current is None:
        lane.previous_failed = False  # the user resumes the lane: no short-circuit
        engine.work.append(name)


def _leave_lane(engine: Engine, entry: Entry) -> None:
    """Drop a place the job still holds in its lane's order (it was cancelled before its
    turn): a job waiting for dependencies has no place there."""
    lane = None if entry.opts.lane is None else engine.lanes.get(entry.opts.lane)
    if lane is not None and entry.item() in lane.heap:
        lane.heap.remove(entry.item())
        heapq.heapify(lane.heap)


def purge_jobs(
    engine: Engine, statuses: Collection[Status], task: str | None, before: float | None
) -> int:
    """Drop the matching jobs (see :meth:`Backend.purge`); waiting and scheduled ones are
    cancelled first and their cascade run. Return how many."""
    chosen = [
        entry
        for entry in engine.jobs.values()
        if entry.status in statuses
        and (task is None or entry.task == task)
        and ended_before(entry.ended if entry.status in TERMINAL else entry.submitted, before)
    ]
    for entry in chosen:
        if entry.status not in TERMINAL:
            engine.end(entry, Status.CANCELLED, reason="purged")
    engine.cascade()
    for entry in chosen:
        if engine.jobs.get(entry.id) is entry and entry.status in TERMINAL:
            engine.drop(entry)
    return len(chosen)
