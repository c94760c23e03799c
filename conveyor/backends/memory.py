"""The in-process backend: dicts and heaps under one lock.

Only runnable jobs sit in the ready heaps (one per execution mode). A job blocked on
dependencies or on its lane waits beside them and is moved in by the event that frees it (a
finish, a release). A job found blocked at claim time by an exclusive group, an incompatible
running job or its task's ``max_concurrency`` is *parked* under that resource; when the
resource is released the resource is marked *freed*, and the claim looks at the best parked job
of each freed resource beside the top of the ready heap. So a claim never scans the backlog:
it touches the heap tops and the handful of resources released since.

Every public method takes the lock once, applies the rules, and runs callbacks (events, done
callbacks, stop requests) after releasing it.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Sequence
from typing import Any

from conveyor import events as ev
from conveyor import rules
from conveyor.backends.locking import YieldingLock
from conveyor.clock import Clock
from conveyor.errors import (
    InvalidJob,
    QueueClosed,
    QueueFull,
    UnknownJob,
)
from conveyor.events import EventBus
from conveyor.job import PENDING, TERMINAL, ErrorInfo, JobOptions, JobRecord, Status
from conveyor.records import (
    ClaimedJob,
    Failed,
    Finished,
    JobSpec,
    WorkerInfo,
    ended_before,
    history_entry,
    with_history,
)

log = logging.getLogger("conveyor.backends.memory")

_HeapItem = tuple[int, int, str]  # (priority, seq, job id)
_Key = tuple[str, str]  # ("group" | "job" | "task" | "limit", name)
_READY = ("ready", "")
_DUE, _EXPIRE = 0, 1
_END_EVENTS = {
    Status.FINISHED: ev.FINISHED,
    Status.FAILED: ev.FAILED,
    Status.CANCELLED: ev.CANCELLED,
}


class _Entry:
    """The mutable state of one job, private to the memory backend."""

    __slots__ = (
        "args",
        "attempts",
        "dependents",
        "due",
        "ended",
        "error",
        "exception",
        "fn",
        "id",
        "kwargs",
        "limit",
        "mode",
        "opts",
        "payload",
        "pending_deps",
        "result",
        "seq",
        "started",
        "status",
        "submitted",
        "task",
        "traceback",
        "where",
        "worker",
    )

    def __init__(self, spec: JobSpec, seq: int, now: float) -> None:
        self.id = spec.id
        self.seq = seq
        self.task = spec.task
        self.mode = spec.mode
        self.fn = spec.fn
        self.args = spec.args
        self.kwargs = spec.kwargs
        self.payload = spec.payload
        self.opts: JobOptions = spec.options
        self.limit = spec.max_concurrency
        self.status = Status.WAITING
        self.attempts = 0
        self.worker: str | None = None
        self.submitted = now
        self.started: float | None = None
        self.ended: float | None = None
        self.result: Any = None
        self.error: str | None = None
        self.traceback: str | None = None
        self.exception: BaseException | None = None
        self.pending_deps = 0
        self.dependents: list[str] = []
        self.due: float | None = None
        self.where: _Key | None = None

    def item(self) -> _HeapItem:
        return (self.opts.priority, self.seq, self.id)


class _Lane:
    """One sequential lane: members not yet started, by (priority, seq), and who holds it."""

    __slots__ = ("current", "heap", "previous", "previous_failed")

    def __init__(self) -> None:
        self.heap: list[_HeapItem] = []
        self.current: str | None = None
        self.previous: str | None = None
        self.previous_failed = False


class _Latch:
    """Opens when ``count`` watched jobs have ended, or at the first failure if asked."""

    __slots__ = ("count", "event", "job_ids", "on_failure")

    def __init__(self, job_ids: list[str], on_failure: bool) -> None:
        self.job_ids = job_ids
        self.count = len(job_ids)
        self.on_failure = on_failure
        self.event = threading.Event()

    def ended(self, status: Status) -> None:
        self.count -= 1
        if self.count <= 0 or (self.on_failure and status is not Status.FINISHED):
            self.event.set()


class MemoryBackend:
    """Jobs in this process's memory; every rule applied under one lock."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        events: EventBus | None = None,
        max_size: int | None = None,
    ) -> None:
        self._clock = clock or Clock()
        self._bus = events or EventBus()
        self._max_size = max_size
        self._lock = YieldingLock()
        self._changed = threading.Condition(self._lock)  # type: ignore[arg-type]  # ends, space, idle
        self._claimable: dict[str, threading.Condition] = {}
        self._jobs: dict[str, _Entry] = {}
        self._seq = itertools.count()
        self._ready: dict[str, list[_HeapItem]] = {}
        self._parked: dict[tuple[str, _Key], list[_HeapItem]] = {}
        self._freed: dict[str, set[_Key]] = {}
        self._timers: list[tuple[float, int, int, str]] = []
        self._lanes: dict[str | int, _Lane] = {}
        self._running: dict[str, _Entry] = {}
        self._group_holder: dict[str, str] = {}
        self._task_running: Counter[str] = Counter()
        self._declared: dict[str, set[str]] = {}
        self._limits: dict[str, int] = {}
        self._counts: Counter[Status] = Counter()
        self._ended: OrderedDict[str, None] = OrderedDict()  # ended, not yet popped
        self._done_callbacks: dict[str, list[Callable[[JobRecord], object]]] = {}
        self._latches: dict[str, list[_Latch]] = {}
        self._unique: dict[str, tuple[str, float | None]] = {}
        self._work: list[tuple[str, Any]] = []
        self._wakeups: Counter[str] = Counter()  # claimers to wake per mode, at lock release
        self._timer_moved = False  # a new first timer: every blocked wait must re-measure
        self._effects: list[Callable[[], object]] = []
        self._stop_hook: Callable[[str, str], object] | None = None
        self._waiters = 0
        self._workers: dict[str, WorkerInfo] = {}
        self._closed = False
        self._clock.subscribe(self.wake)

    # ----------------------------------------------------------------- submit
    def submit(
        self, specs: Sequence[JobSpec], *, block: bool = True, timeout: float | None = None
    ) -> list[str]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            now = self._clock.now()
            self._tick(now)
            resolved = self._resolve_unique(specs, now)
            fresh = [
                spec for spec, existing in zip(specs, resolved, strict=True) if existing is None
            ]
            self._validate(fresh, specs)
            self._wait_for_room(len(fresh), block, deadline)
            aliases = {
                spec.id: existing
                for spec, existing in zip(specs, resolved, strict=True)
                if existing is not None
            }
            for spec in fresh:
                self._insert(spec, now, aliases)
            self._process()
            effects = self._take_effects()
        self._run(effects)
        return [existing or spec.id for spec, existing in zip(specs, resolved, strict=True)]

    def _resolve_unique(self, specs: Sequence[JobSpec], now: float) -> list[str | None]:
        def holder_of(key: str) -> str | None:
            held = self._unique.get(key)
            if held is None:
                return None
            job_id, until = held
            entry = self._jobs.get(job_id)
            # a popped or forgotten holder frees its key: no handle on a gone job
            if entry is not None and rules.unique_still_held(
                entry.status not in TERMINAL, until, now
            ):
                return job_id
            del self._unique[key]
            return None

        return rules.resolve_unique([(s.id, s.options.unique) for s in specs], holder_of)

    def _validate(self, fresh: Sequence[JobSpec], specs: Sequence[JobSpec]) -> None:
        if self._closed:
            raise QueueClosed("the queue is closed; it takes no more jobs")
        rules.check_batch(fresh, {spec.id for spec in specs}, self._jobs.__contains__)

    def _wait_for_room(self, count: int, block: bool, deadline: float | None) -> None:
        if self._max_size is None or count == 0:
            return
        while True:
            pending = self._counts[Status.WAITING] + self._counts[Status.SCHEDULED]
            if pending == 0 or pending + count <= self._max_size:
                return
            if not block:
                raise QueueFull(
                    f"the queue holds {pending} jobs not yet started (max_size="
                    f"{self._max_size}); wait, or put with block=True"
                )
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise QueueFull(f"no room under max_size={self._max_size} before the timeout")
            self._waiters += 1
            try:
                self._changed.wait(remaining)
            finally:
                self._waiters -= 1
            if self._closed:
                raise QueueClosed("the queue closed while put waited for room")

    def _insert(self, spec: JobSpec, now: float, aliases: dict[str, str]) -> None:
        entry = _Entry(spec, next(self._seq), now)
        opts = entry.opts
        self._jobs[entry.id] = entry
        self._ready.setdefault(entry.mode, [])
        self._freed.setdefault(entry.mode, set())
        if entry.limit is not None:
            self._limits[entry.task] = entry.limit
        if opts.unique:
            self._unique[opts.unique] = (entry.id, None)
        self._counts[Status.WAITING] += 1
        if opts.at is not None and opts.at > now:
            self._set_status(entry, Status.SCHEDULED)
            entry.due = opts.at
            self._add_timer(opts.at, _DUE, entry)
        if opts.expires_at is not None:
            self._add_timer(opts.expires_at, _EXPIRE, entry)
        self._emit(ev.QUEUED, entry)
        failed_dep: _Entry | None = None
        for dep_id in rules.dependencies(opts.after, aliases):
            dep = self._jobs[dep_id]
            if dep.status is Status.FINISHED:
                continue
            if dep.status in TERMINAL:
                failed_dep = failed_dep or dep
                continue
            entry.pending_deps += 1
            dep.dependents.append(entry.id)
        if failed_dep is not None:
            self._end(
                entry,
                Status.CANCELLED,
                reason=rules.cascade_reason(failed_dep.id, failed_dep.status.value),
            )
        elif not entry.pending_deps:
            self._deps_done(entry)

    # ------------------------------------------------------------------ claim
    def claim(
        self,
        worker: str,
        mode: str,
        limit: int = 1,
        *,
        timeout: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> list[ClaimedJob]:
        with self._lock:
            got = self._claim(worker, mode, limit, timeout, stop)
            effects = self._take_effects()
        self._run(effects)
        return got

    def finish_and_claim(
        self,
        job_id: str,
        attempt: int,
        result: Any,
        worker: str,
        mode: str,
        limit: int = 1,
        *,
        timeout: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> list[ClaimedJob]:
        """``finish`` then ``claim`` under one lock: one round trip per job for a busy slot."""
        with self._lock:
            entry = self._holding(job_id, attempt)
            if entry is not None:
                self._release(entry)
                self._end(entry, Status.FINISHED, result=result)
                self._process()
            got = self._claim(worker, mode, limit, timeout, stop)
            effects = self._take_effects()
        self._run(effects)
        return got

    def _claim(
        self,
        worker: str,
        mode: str,
        limit: int,
        timeout: float | None,
        stop: Callable[[], bool] | None,
    ) -> list[ClaimedJob]:
        deadline = None if timeout is None else time.monotonic() + timeout
        cond = self._claimable.get(mode)
        if cond is None:
            cond = self._claimable[mode] = threading.Condition(self._lock)  # type: ignore[arg-type]
            self._ready.setdefault(mode, [])
            self._freed.setdefault(mode, set())
        while True:
            if self._closed or (stop is not None and stop()):
                return []
            now = self._clock.now()
            self._tick(now)
            got: list[ClaimedJob] = []
            while len(got) < limit:
                entry = self._next_startable(mode)
                if entry is None:
                    break
                got.append(self._start(entry, worker, now))
            if got:
                self._process()
                if self._waiters:
                    self._changed.notify_all()  # room under max_size
                return got
            if self._run_locked_effects():  # events of what just ended run before we block
                continue  # the lock was let go meanwhile: look again
            wait = self._timer_wait()
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                wait = remaining if wait is None else min(wait, remaining)
            cond.wait(wait)

    def _next_startable(self, mode: str) -> _Entry | None:
        ready = self._ready[mode]
        freed = self._freed[mode]
        jobs = self._jobs
        while True:
            while ready:
                top = jobs.get(ready[0][2])
                if top is not None and top.where is _READY and top.seq == ready[0][1]:
                    break
                heapq.heappop(ready)
            best = ready[0] if ready else None
            source: tuple[str, _Key] | None = None
            if freed:
                for key in list(freed):
                    heap = self._parked.get((mode, key))
                    while heap:
                        top = jobs.get(heap[0][2])
                        if top is not None and top.where == key and top.seq == heap[0][1]:
                            break
                        heapq.heappop(heap)
                    if not heap or not self._is_free(key):
                        freed.discard(key)
                        if not heap:
                            self._parked.pop((mode, key), None)
                        continue
                    if best is None or heap[0] < best:
                        best, source = heap[0], (mode, key)
            if best is None:
                return None
            heapq.heappop(ready if source is None else self._parked[source])
            entry = jobs[best[2]]
            entry.where = None
            if entry.status is not Status.WAITING:
                continue
            if entry.opts.lane is not None and not self._lane_allows(entry):
                continue  # stale: another job became the lane's next; it is in the heap
            blocker = self._conflict(entry)
            if blocker is None:
                return entry
            entry.where = blocker
            heapq.heappush(self._parked.setdefault((mode, blocker), []), best)

    def _conflict(self, entry: _Entry) -> _Key | None:
        """The resource that keeps ``entry`` from starting now, or None."""
        opts = entry.opts
        for group in opts.exclusive:
            if group in self._group_holder:
                return ("group", group)
        for name in opts.incompatible:
            if name in self._running:
                return ("job", name)
            if self._task_running.get(name):
                return ("task", name)
        if self._declared:
            holders = self._declared.get(entry.id) or self._declared.get(entry.task)
            if holders:
                return ("job", next(iter(holders)))
        limit = self._limits.get(entry.task)
        if limit is not None and self._task_running.get(entry.task, 0) >= limit:
            return ("limit", entry.task)
        return None

    def _is_free(self, key: _Key) -> bool:
        kind, name = key
        if kind == "group":
            return name not in self._group_holder
        if kind == "job":
            return name not in self._running
        if kind == "task":
            return not self._task_running.get(name)
        limit = self._limits.get(name)
        return limit is None or self._task_running.get(name, 0) < limit

    def _start(self, entry: _Entry, worker: str, now: float) -> ClaimedJob:
        self._set_status(entry, Status.RUNNING)
        entry.attempts += 1
        entry.started = now
        entry.ended = None
        entry.worker = worker
        self._running[entry.id] = entry
        opts = entry.opts
        for group in opts.exclusive:
            self._group_holder[group] = entry.id
        self._task_running[entry.task] += 1
        for name in opts.incompatible:
            self._declared.setdefault(name, set()).add(entry.id)
        if opts.lane is not None:
            lane = self._lanes[opts.lane]
            if lane.current != entry.id:
                heapq.heappop(lane.heap)
                lane.current = entry.id
        self._emit(ev.STARTED, entry)
        return ClaimedJob(
            entry.id,
            entry.attempts,
            entry.task,
            entry.mode,
            entry.fn,
            entry.args,
            entry.kwargs,
            entry.payload,
            opts.timeout,
        )

    # ----------------------------------------------------------- end of an attempt
    def finish(self, job_id: str, attempt: int, result: Any) -> bool:
        with self._lock:
            entry = self._holding(job_id, attempt)
            if entry is None:
                return False
            self._release(entry)
            self._end(entry, Status.FINISHED, result=result)
            self._process()
            effects = self._take_effects()
        self._run(effects)
        return True

    def finish_many_and_claim(
        self,
        finished: Sequence[Finished],
        worker: str,
        mode: str,
        limit: int,
        *,
        stop: Callable[[], bool] | None = None,
        ahead: int = 0,
        started: Sequence[tuple[str, int]] = (),
    ) -> list[ClaimedJob]:
        """Every ``finish``, then a ``claim`` that does not wait, under one lock (no lease
        outlives this process: jobs claimed ahead need no marking)."""
        with self._lock:
            for report in finished:
                entry = self._holding(report.job_id, report.attempt)
                if entry is None:
                    continue
                if report.started is not None:
                    entry.started = report.started
                self._release(entry)
                self._end(entry, Status.FINISHED, result=report.result)
                if report.ended is not None:
                    entry.ended = report.ended
            self._process()
            got = self._claim(worker, mode, limit, 0, stop) if limit > 0 else []
            effects = self._take_effects()
        self._run(effects)
        return got

    def fail(
        self,
        job_id: str,
        attempt: int,
        error: ErrorInfo,
        exception: BaseException | None = None,
        *,
        started: float | None = None,
    ) -> Failed | None:
        with self._lock:
            entry = self._holding(job_id, attempt)
            if entry is None:
                return None
            if started is not None:
                entry.started = started
            self._release(entry)
            if entry.attempts <= entry.opts.retries:
                outcome = Failed(self._retry(entry, error))
            else:
                self._end(entry, Status.FAILED, error=error, exception=exception)
                outcome = Failed()
            self._process()
            effects = self._take_effects()
        self._run(effects)
        return outcome

    def requeue(self, job_id: str, attempt: int) -> bool:
        with self._lock:
            entry = self._holding(job_id, attempt)
            if entry is None:
                return False
            self._release(entry)
            entry.attempts -= 1  # a stopped worker, not a failed attempt
            self._set_status(entry, Status.WAITING)
            self._consider(entry)
            self._process()
            effects = self._take_effects()
        self._run(effects)
        return True

    def _holding(self, job_id: str, attempt: int) -> _Entry | None:
        entry = self._jobs.get(job_id)
        if entry is None or entry.status is not Status.RUNNING or entry.attempts != attempt:
            return None  # cancelled or timed out meanwhile: the late report is dropped
        return entry

    def _retry(self, entry: _Entry, error: ErrorInfo) -> float:
        """Put a failed attempt's job back for its next attempt; return when it may start."""
        opts = entry.opts
        entry.error, entry.traceback = str(error), error.traceback
        delay = rules.retry_delay(opts.retry_delay, opts.backoff, entry.attempts)
        now = self._clock.now()
        if delay > 0:
            self._set_status(entry, Status.SCHEDULED)
            entry.due = now + delay
            self._add_timer(entry.due, _DUE, entry)
        else:
            self._set_status(entry, Status.WAITING)
            self._consider(entry)
        self._emit(ev.RETRYING, entry)
        return now + max(delay, 0.0)

    def _release(self, entry: _Entry) -> None:
        """Give back what a running job held and mark those resources freed."""
        del self._running[entry.id]
        opts = entry.opts
        for group in opts.exclusive:
            self._group_holder.pop(group, None)
        task_running = self._task_running
        task_running[entry.task] -= 1
        if not task_running[entry.task]:
            del task_running[entry.task]
        for name in opts.incompatible:
            holders = self._declared.get(name)
            if holders is not None:
                holders.discard(entry.id)
                if not holders:
                    del self._declared[name]
        if self._parked:
            keys: list[_Key] = [("job", entry.id), ("task", entry.task), ("limit", entry.task)]
            keys += [("group", group) for group in opts.exclusive]
            for mode, freed in self._freed.items():
                for key in keys:
                    if (mode, key) in self._parked:
                        freed.add(key)
                        self._wakeups[mode] += 1

    # ----------------------------------------------------------------- cancel
    def cancel(self, job_id: str, reason: str = "cancelled") -> bool:
        with self._lock:
            self._tick(self._clock.now())
            entry = self._jobs.get(job_id)
            if entry is None:
                raise UnknownJob(job_id)
            if entry.status in TERMINAL:
                return False
            if entry.status is Status.RUNNING:
                self._release(entry)
                hook = self._stop_hook
                if hook is not None:
                    self._effects.append(lambda: hook(job_id, reason))
            self._end(entry, Status.CANCELLED, reason=reason)
            self._process()
            effects = self._take_effects()
        self._run(effects)
        return True

    # ------------------------------------------------------ the rules' bookkeeping
    def _end(
        self,
        entry: _Entry,
        status: Status,
        *,
        result: Any = None,
        error: ErrorInfo | None = None,
        exception: BaseException | None = None,
        reason: str | None = None,
    ) -> None:
        """Make ``entry`` terminal; queue the cascades it causes (run by ``_process``)."""
        self._set_status(entry, status)
        entry.ended = self._clock.now()
        entry.where = None
        if status is Status.FINISHED:
            entry.result = result
            entry.error = entry.traceback = None
        elif error is not None:
            entry.error, entry.traceback, entry.exception = str(error), error.traceback, exception
        else:
            entry.error = reason
        self._ended[entry.id] = None
        opts = entry.opts
        if opts.unique and self._unique.get(opts.unique, ("",))[0] == entry.id:
            if opts.unique_for:
                self._unique[opts.unique] = (entry.id, entry.ended + opts.unique_for)
            else:
                del self._unique[opts.unique]
        if entry.dependents:
            self._work.append(("deps", entry))
        if opts.lane is not None:
            lane = self._lanes.get(opts.lane)
            if lane is not None:
                if lane.current == entry.id:
                    lane.current = None
                    lane.previous = entry.id
                    lane.previous_failed = status is not Status.FINISHED
                if lane.current is None:
                    self._work.append(("lane", opts.lane))
        if self._latches:
            for latch in self._latches.pop(entry.id, ()):
                latch.ended(status)
        callbacks = self._done_callbacks.pop(entry.id, None) if self._done_callbacks else None
        name = _END_EVENTS[status]
        wanted = self._bus.wants(name)
        if callbacks or wanted:
            record = self._record(entry)
            if wanted:
                self._effects.append(lambda: self._bus.emit(name, record))
            for callback in callbacks or ():
                self._effects.append(lambda cb=callback: cb(record))  # type: ignore[misc]
        if self._waiters:
            self._changed.notify_all()

    def _process(self) -> None:
        """Run the cascades queued by ``_end``: dependents, then lanes."""
        work = self._work
        while work:
            kind, subject = work.pop()
            if kind == "deps":
                self._settle_dependents(subject)
            else:
                self._advance_lane(subject)

    def _settle_dependents(self, dep: _Entry) -> None:
        for job_id in dep.dependents:
            entry = self._jobs.get(job_id)
            if entry is None or entry.status in TERMINAL:
                continue
            if dep.status is Status.FINISHED:
                entry.pending_deps -= 1
                if entry.pending_deps == 0:
                    self._deps_done(entry)
            else:
                self._end(
                    entry, Status.CANCELLED, reason=rules.cascade_reason(dep.id, dep.status.value)
                )
        dep.dependents = []

    def _deps_done(self, entry: _Entry) -> None:
        """Every dependency of ``entry`` finished: it joins its lane's order, or may start."""
        if entry.opts.lane is None:
            self._consider(entry)
        else:
            self._join_lane(entry)

    def _join_lane(self, entry: _Entry) -> None:
        """Give ``entry`` its place in its lane's order (priority, then submission)."""
        name = entry.opts.lane
        assert name is not None
        lane = self._lanes.setdefault(name, _Lane())
        heapq.heappush(lane.heap, entry.item())
        if lane.current is None:  # nothing holds the lane: its front may change
            self._work.append(("lane", name))

    def _advance_lane(self, name: str | int) -> None:
        lane = self._lanes.get(name)
        if lane is None or lane.current is not None:
            return
        heap = lane.heap
        while heap:
            entry = self._jobs.get(heap[0][2])
            if entry is None or entry.status in TERMINAL:
                lane.previous = heapq.heappop(heap)[2]
                lane.previous_failed = True
                continue
            if lane.previous_failed and entry.opts.stop_on_lane_error:
                self._end(
                    entry,
                    Status.CANCELLED,
                    reason=rules.lane_reason(lane.previous or "?", name, "failed or was cancelled"),
                )
                lane.current = None  # _end queued another advance; this loop goes on
                continue
            self._consider(entry)
            return
        if not lane.previous_failed:
            # an empty lane whose last job failed is kept: the next stop_on_lane_error job
            # put into it must still see that failure
            del self._lanes[name]

    def _lane_allows(self, entry: _Entry) -> bool:
        lane = self._lanes.get(entry.opts.lane)  # type: ignore[arg-type]
        if lane is None:
            return False
        if lane.current is not None:
            return lane.current == entry.id
        return bool(lane.heap) and lane.heap[0][2] == entry.id

    def _consider(self, entry: _Entry) -> None:
        """Put ``entry`` in the ready heap if nothing but resources can still hold it back."""
        if entry.status is not Status.WAITING or entry.pending_deps or entry.where is not None:
            return
        if entry.opts.lane is not None and not self._lane_allows(entry):
            return
        entry.where = _READY
        heapq.heappush(self._ready[entry.mode], entry.item())
        self._wakeups[entry.mode] += 1

    def _tick(self, now: float) -> None:
        """Apply every timer due by ``now``: delays ending, retries due, expiry."""
        timers = self._timers
        if not timers or timers[0][0] > now:
            return
        while timers and timers[0][0] <= now:
            when, _, kind, job_id = heapq.heappop(timers)
            entry = self._jobs.get(job_id)
            if entry is None:
                continue
            if kind == _DUE:
                if entry.status is Status.SCHEDULED and entry.due == when:
                    entry.due = None
                    self._set_status(entry, Status.WAITING)
                    self._consider(entry)
            elif entry.status in PENDING and entry.attempts == 0:
                self._end(entry, Status.CANCELLED, reason="expired")
        self._process()

    def _add_timer(self, when: float, kind: int, entry: _Entry) -> None:
        """Set a timer; one earlier than every other wakes the blocked claims and waits,
        whose sleep was measured to the timer that was first before it."""
        item = (when, entry.seq, kind, entry.id)
        heapq.heappush(self._timers, item)
        if self._timers[0] is item:
            self._timer_moved = True

    def _timer_wait(self) -> float | None:
        if not self._timers:
            return None
        return self._clock.wait_time(self._timers[0][0])

    def _set_status(self, entry: _Entry, status: Status) -> None:
        counts = self._counts
        if entry.status is not status:
            counts[entry.status] -= 1
            counts[status] += 1
            entry.status = status

    def _emit(self, name: str, entry: _Entry) -> None:
        if self._bus.wants(name):
            record = self._record(entry)
            self._effects.append(lambda: self._bus.emit(name, record))

    def _take_effects(self) -> list[Callable[[], object]]:
        """Wake the claimers the change calls for; hand back the callbacks to run unlocked."""
        if self._wakeups or self._timer_moved:
            self._wake_claimers()
        effects = self._effects
        if effects:
            self._effects = []
        return effects

    def _wake_claimers(self) -> None:
        if self._timer_moved:  # every blocked wait measured its sleep to a later timer
            self._timer_moved = False
            for blocked in self._claimable.values():
                blocked.notify_all()
            if self._waiters:
                self._changed.notify_all()
        else:
            for mode, count in self._wakeups.items():
                cond = self._claimable.get(mode)
                if cond is not None:
                    cond.notify(count)
        self._wakeups.clear()

    def _run_locked_effects(self) -> bool:
        """Effects produced by a claim that found nothing (expiry ticks) run before it waits;
        True if they ran (the lock was let go, so the claim must look again)."""
        effects = self._take_effects()
        if not effects:
            return False
        self._lock.release()
        try:
            self._run(effects)
        finally:
            self._lock.acquire()
        return True

    @staticmethod
    def _run(effects: list[Callable[[], object]]) -> None:
        for effect in effects:
            try:
                effect()
            except Exception:  # a callback's error must not skip the others nor lose a job
                log.exception("a callback of the memory backend failed")

    # ---------------------------------------------------------------- reading
    def _record(self, entry: _Entry) -> JobRecord:
        started, ended = entry.started, entry.ended
        stamp = JobRecord.timestamp
        opts = entry.opts
        return JobRecord(
            id=entry.id,
            task=entry.task,
            status=entry.status,
            args=entry.args,
            kwargs=entry.kwargs,
            priority=opts.priority,
            lane=opts.lane,
            after=opts.after,
            exclusive=opts.exclusive,
            incompatible=opts.incompatible,
            attempts=entry.attempts,
            worker=entry.worker,
            submitted=stamp(entry.submitted),
            started=stamp(started),
            ended=stamp(ended),
            runtime=None if started is None or ended is None else max(0.0, ended - started),
            result=entry.result,
            error=entry.error,
            traceback=entry.traceback,
            meta=dict(opts.meta),
        )

    def _entry(self, job_id: str) -> _Entry:
        entry = self._jobs.get(job_id)
        if entry is None:
            raise UnknownJob(job_id)
        return entry

    def get(self, job_id: str) -> JobRecord:
        with self._lock:
            self._tick(self._clock.now())
            record = self._record(self._entry(job_id))
            effects = self._take_effects()
        self._run(effects)
        return record

    def exception(self, job_id: str) -> BaseException | None:
        """The exception object a failed in-process job raised (None if not kept)."""
        with self._lock:
            return self._entry(job_id).exception

    def query(self, status: Status | None = None) -> list[JobRecord]:
        with self._lock:
            self._tick(self._clock.now())
            records = [
                self._record(e) for e in self._jobs.values() if status is None or e.status is status
            ]
            effects = self._take_effects()
        self._run(effects)
        return records

    def counts(self) -> dict[Status, int]:
        with self._lock:
            self._tick(self._clock.now())
            counts = {status: self._counts[status] for status in Status}
            effects = self._take_effects()
        self._run(effects)
        return counts

    def pop_finished(
        self, limit: int | None = None, *, timeout: float | None = 0
    ) -> list[JobRecord]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                self._tick(self._clock.now())
                popped: list[JobRecord] = []
                while self._ended and (limit is None or len(popped) < limit):
                    entry = self._jobs.get(self._ended.popitem(last=False)[0])
                    if entry is None or entry.status not in TERMINAL:
                        continue  # forgotten, or retried since it was queued here
                    del self._jobs[entry.id]
                    self._counts[entry.status] -= 1
                    popped.append(self._record(entry))
                remaining = None if deadline is None else deadline - time.monotonic()
                if popped or (remaining is not None and remaining <= 0) or self._closed:
                    break
                self._waiters += 1
                try:
                    self._changed.wait(remaining)
                finally:
                    self._waiters -= 1
            effects = self._take_effects()
        self._run(effects)
        return popped

    def forget(self, job_id: str) -> None:
        with self._lock:
            entry = self._entry(job_id)
            if entry.status not in TERMINAL:
                raise InvalidJob(f"job {job_id!r} is {entry.status.value}; cancel it first")
            del self._jobs[job_id]
            self._ended.pop(job_id, None)
            self._counts[entry.status] -= 1

    def forget_many(self, job_ids: Collection[str]) -> None:
        """Forget every ended job among ``job_ids``; others are left alone."""
        with self._lock:
            for job_id in job_ids:
                entry = self._jobs.get(job_id)
                if entry is not None and entry.status in TERMINAL:
                    del self._jobs[job_id]
                    self._ended.pop(job_id, None)
                    self._counts[entry.status] -= 1

    def add_done_callback(self, job_id: str, callback: Callable[[JobRecord], object]) -> None:
        with self._lock:
            entry = self._entry(job_id)
            if entry.status not in TERMINAL:
                self._done_callbacks.setdefault(job_id, []).append(callback)
                return
            record = self._record(entry)
        callback(record)

    def _latch(self, job_ids: Sequence[str], first_failure: bool) -> _Latch | None:
        """A latch on the jobs of ``job_ids`` still active; None if there is nothing to wait for."""
        waiting = []
        for job_id in job_ids:
            entry = self._entry(job_id)
            if entry.status not in TERMINAL:
                waiting.append(job_id)
            elif first_failure and entry.status is not Status.FINISHED:
                return None
        if not waiting:
            return None
        latch = _Latch(waiting, first_failure)
        for job_id in waiting:
            self._latches.setdefault(job_id, []).append(latch)
        return latch

    def wait_done(self, job_id: str, timeout: float | None = None) -> JobRecord:
        self._wait_ended([job_id], timeout, first_failure=False)
        return self.get(job_id)

    def wait_results(
        self, job_ids: Sequence[str], timeout: float | None = None, *, first_failure: bool = False
    ) -> list[tuple[Status, Any, str | None]]:
        """Wait until every job has ended (or one did not finish, with ``first_failure``);
        return ``(status, result, error)`` per job, in order (active ones as they are)."""
        self._wait_ended(job_ids, timeout, first_failure=first_failure)
        with self._lock:
            return [
                (e.status, e.result, e.error) for e in (self._entry(job_id) for job_id in job_ids)
            ]

    def _wait_ended(
        self, job_ids: Sequence[str], timeout: float | None, *, first_failure: bool
    ) -> None:
        with self._lock:
            self._tick(self._clock.now())
            effects = self._take_effects()
            latch = self._latch(job_ids, first_failure)
        self._run(effects)
        if latch is None:
            return
        if not latch.event.wait(timeout):
            with self._lock:  # stop watching, so the latch does not outlive the call
                for job_id in latch.job_ids:
                    watching = self._latches.get(job_id)
                    if watching is not None and latch in watching:
                        watching.remove(latch)
                        if not watching:
                            del self._latches[job_id]
            raise TimeoutError(f"{latch.count} job(s) did not end within {timeout} s")

    def wait_idle(
        self,
        timeout: float | None = None,
        on_change: Callable[[dict[Status, int]], object] | None = None,
    ) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        last: dict[Status, int] | None = None
        while True:
            with self._lock:
                self._tick(self._clock.now())
                effects = self._take_effects()
                counts = {status: self._counts[status] for status in Status}
                active = counts[Status.WAITING] + counts[Status.SCHEDULED] + counts[Status.RUNNING]
                remaining = None if deadline is None else deadline - time.monotonic()
                done = not active or self._closed or (remaining is not None and remaining <= 0)
                if not done and not effects and (on_change is None or counts == last):
                    wait = self._timer_wait()
                    if remaining is not None:
                        wait = remaining if wait is None else min(wait, remaining)
                    self._waiters += 1
                    try:
                        self._changed.wait(wait)
                    finally:
                        self._waiters -= 1
                    continue
            self._run(effects)
            if on_change is not None and counts != last:
                on_change(counts)
                last = counts
            if done:
                return active

    # ---------------------------------------------------------- worker support
    def heartbeat(self, worker: str, ids: Collection[str]) -> set[str]:
        prefix = worker + "/"
        with self._lock:
            info = self._workers.get(worker)
            if info is not None:
                info.last_seen = self._clock.now()
            return {
                job_id
                for job_id in ids
                if (entry := self._jobs.get(job_id)) is None
                or entry.status is not Status.RUNNING
                or not (entry.worker or "").startswith(prefix)
            }

    def register_worker(self, info: WorkerInfo) -> None:
        with self._lock:
            self._workers[info.id] = info

    def unregister_worker(self, worker_id: str) -> None:
        with self._lock:
            self._workers.pop(worker_id, None)

    def workers(self, *, include_lost: bool = False) -> list[WorkerInfo]:
        """The workers of this process (they live while it does: none is ever lost)."""
        with self._lock:
            return [dataclasses.replace(info) for info in self._workers.values()]

    def recover_expired(self, *, by: str | None = None) -> int:
        return 0  # workers live in this process: nothing holds a lease to outlive

    def set_stop_hook(self, hook: Callable[[str, str], object] | None) -> None:
        self._stop_hook = hook

    def wake(self) -> None:
        with self._lock:
            for cond in self._claimable.values():
                cond.notify_all()
            self._changed.notify_all()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._clock.unsubscribe(self.wake)
        self.wake()

    # ------------------------------------------------------------ retry, purge
    def retry(self, job_id: str) -> None:
        """Put a failed or cancelled job back to waiting (see :meth:`Backend.retry`)."""
        with self._lock:
            now = self._clock.now()
            self._tick(now)
            entry = self._entry(job_id)
            if entry.status not in (Status.FAILED, Status.CANCELLED):
                raise InvalidJob(
                    f"job {job_id!r} is {entry.status.value}; only failed or cancelled jobs"
                    " can be retried"
                )
            awaited = self._retry_dependencies(entry)
            self._retry_unique(entry, now)
            history = history_entry(
                entry.status.value, entry.error, entry.traceback, entry.attempts, entry.ended, now
            )
            expires_at = entry.opts.expires_at
            entry.opts = entry.opts.replace(
                meta=with_history(entry.opts.meta, history),
                expires_at=None if expires_at is not None and expires_at <= now else expires_at,
            )
            self._ended.pop(job_id, None)
            entry.attempts = 0
            entry.started = entry.ended = entry.due = entry.worker = None
            entry.result = entry.error = entry.traceback = entry.exception = None
            entry.where = None
            self._set_status(entry, Status.WAITING)
            for dep in awaited:
                dep.dependents.append(entry.id)
            entry.pending_deps = len(awaited)
            self._emit(ev.QUEUED, entry)
            if awaited:
                self._leave_lane(entry)  # it joins once its dependencies finished
            elif entry.opts.lane is not None:
                self._retry_lane(entry)
            else:
                self._consider(entry)
            self._process()
            effects = self._take_effects()
        self._run(effects)

    def _retry_dependencies(self, entry: _Entry) -> list[_Entry]:
        """The dependencies a retried job waits for again; InvalidJob if one did not finish."""
        awaited = []
        for dep_id in entry.opts.after:
            dep = self._jobs.get(dep_id)
            if dep is None or dep.status is Status.FINISHED:
                continue  # gone (popped or forgotten) or finished: satisfied
            if dep.status in TERMINAL:
                raise InvalidJob(
                    f"job {entry.id!r} depends on {dep_id!r}, which {dep.status.value}; "
                    f"retry {dep_id!r} first"
                )
            awaited.append(dep)
        return awaited

    def _retry_unique(self, entry: _Entry, now: float) -> None:
        key = entry.opts.unique
        if not key:
            return
        held = self._unique.get(key)
        if held is not None and held[0] != entry.id:
            holder = self._jobs.get(held[0])
            if holder is not None and rules.unique_still_held(
                holder.status not in TERMINAL, held[1], now
            ):
                raise InvalidJob(
                    f"job {entry.id!r} cannot be retried: job {held[0]!r} holds its unique key"
                    f" {key!r}"
                )
        self._unique[key] = (entry.id, None)

    def _retry_lane(self, entry: _Entry) -> None:
        """Rejoin the lane in the job's place (priority, submission); an idle lane forgets its
        last failure, so stop_on_lane_error does not cancel the retried job at once."""
        name = entry.opts.lane
        assert name is not None
        lane = self._lanes.setdefault(name, _Lane())
        if entry.item() not in lane.heap:
            heapq.heappush(lane.heap, entry.item())
        if lane.current is None:
            lane.previous_failed = False  # the user resumes the lane: no short-circuit
            self._work.append(("lane", name))

    def _leave_lane(self, entry: _Entry) -> None:
        """Drop a place the job still holds in its lane's order (it was cancelled before its
        turn): a job waiting for dependencies has no place there."""
        lane = None if entry.opts.lane is None else self._lanes.get(entry.opts.lane)
        if lane is not None and entry.item() in lane.heap:
            lane.heap.remove(entry.item())
            heapq.heapify(lane.heap)

    def purge(
        self,
        statuses: Collection[Status],
        task: str | None = None,
        before: float | None = None,
    ) -> int:
        """Drop matching jobs; return how many (see :meth:`Backend.purge`)."""
        if Status.RUNNING in statuses:
            raise InvalidJob("running jobs are never purged; cancel them first")
        with self._lock:
            self._tick(self._clock.now())
            chosen = [
                entry
                for entry in self._jobs.values()
                if entry.status in statuses
                and (task is None or entry.task == task)
                and ended_before(
                    entry.ended if entry.status in TERMINAL else entry.submitted, before
                )
            ]
            for entry in chosen:
                if entry.status not in TERMINAL:
                    self._end(entry, Status.CANCELLED, reason="purged")
            self._process()
            for entry in chosen:
                if self._jobs.get(entry.id) is entry and entry.status in TERMINAL:
                    del self._jobs[entry.id]
                    self._ended.pop(entry.id, None)
                    self._counts[entry.status] -= 1
            effects = self._take_effects()
        self._run(effects)
        return len(chosen)
