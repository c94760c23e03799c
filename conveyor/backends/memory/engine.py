"""The memory engine: the rules of :mod:`conveyor.rules` over dicts and heaps.

The same engine as SQLite's (and later Lua's), method for method and under the same names, so
the two read side by side. It holds no lock (the backend calls it under its own) and knows no
put option behind a key: a job's plan, compiled once in :meth:`Engine.insert`, tells it which
keys the job needs, holds and frees. An entry keeps its plan's
:class:`~conveyor.rules.plan.Shape`, shared by every job of its kind, and the two keys naming the
job (``decl:<id>``, ``job:<id>``) are built where they are read: a tuple per job would be one
more object per job for the garbage collector to walk, over and over while the job waits.

What backs each part:

- ready index: ``ready[mode]``, a heap of (priority, seq, id) of jobs that nothing but keys can
  still hold back (``Entry.where == READY``); stale items (cancelled, parked, started) are
  dropped when they reach the top;
- parked keys: ``parked[(mode, park key)]``, a heap per key of the jobs found blocked by it at
  claim time (``Entry.where`` is the key); ``parks`` keeps the need behind a park key that is
  not itself a key of capacity 1 (``limit:<t>``: the task's count and its capacity);
- freed keys: ``freed[mode]``, the park keys a release gave back since the last claim of that
  mode: a claim looks at their parked tops beside the ready top, never at the backlog;
- held counts: ``counted``, running jobs per counted key (``task:``, ``group:``, ``decl:``); a
  ``job:<id>`` key is never counted: it is held while job ``id`` is in ``running``;
- dependency counters: ``Entry.pending_deps`` and ``Entry.dependents``;
- lane order: ``lanes``, per lane a heap of the jobs that joined it and its current holder;
- timers: ``timers``, a heap of (when, seq, DUE or EXPIRE, id);
- the cascade's work list: ``work``, ended jobs (``after_end``) and lanes to advance.

The memory backend has no leases: its workers live in its process, so no claim outlives the
one who made it (``take_back`` has no memory counterpart). Events and done callbacks are
queued in ``effects`` for the backend to run after it lets its lock go; ``wakeups`` counts the
claimers of each mode to wake, ``changes`` every change of a job's status (the backend's
``version``).
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from typing import Any

from conveyor import events as ev
from conveyor import rules
from conveyor.backends.memory.state import READY, Entry, HeapItem, Lane
from conveyor.clock import Clock
from conveyor.events import EventBus
from conveyor.job import PENDING, TERMINAL, ErrorInfo, Status
from conveyor.records import ClaimedJob, JobSpec
from conveyor.rules.plan import DECL, JOB, Need, key, plan_shape

#: timer kinds: a scheduled job becomes waiting; a job not started by then is cancelled
DUE, EXPIRE = 0, 1
#: a ``job:<id>`` key, held while job ``id`` runs
JOB_KEY = key(JOB, "")
#: a job's own ``decl:<id>`` key, counting the running jobs that name it incompatible
DECL_KEY = key(DECL, "")
END_EVENTS = {
    Status.FINISHED: ev.FINISHED,
    Status.FAILED: ev.FAILED,
    Status.CANCELLED: ev.CANCELLED,
}


class Engine:
    """Every job of one memory backend and the rules over them; the caller holds the lock."""

    def __init__(self, clock: Clock, bus: EventBus) -> None:
        self.clock = clock
        self.bus = bus
        self.jobs: dict[str, Entry] = {}
        self.seq = itertools.count()
        self.ready: defaultdict[str, list[HeapItem]] = defaultdict(list)
        self.parked: dict[tuple[str, str], list[HeapItem]] = {}
        self.parks: dict[str, Need] = {}
        self.freed: defaultdict[str, set[str]] = defaultdict(set)
        self.counted: dict[str, int] = {}
        self.running: dict[str, Entry] = {}
        self.lanes: dict[str | int, Lane] = {}
        self.timers: list[tuple[float, int, int, str]] = []
        self.work: list[Entry | str | int] = []
        # plain dicts, not Counters: a Counter's item costs twice a dict's, and a job changes
        # these several times
        self.counts: dict[Status, int] = dict.fromkeys(Status, 0)
        self.ended: OrderedDict[str, None] = OrderedDict()  # ended, not yet popped
        self.unique: dict[str, tuple[str, float | None]] = {}
        self.effects: list[Callable[[], object]] = []
        self.wakeups: dict[str, int] = {}  # claimers to wake per mode
        self.timer_moved = False  # a new first timer: every blocked wait must re-measure
        self.changes = 0  # grows with every job stored, dropped or changing status

    # ------------------------------------------------------------------ insert
    def insert(self, spec: JobSpec, now: float, aliases: dict[str, str]) -> None:
        """Store a job (its plan compiled now); ``cascade`` settles what it set off."""
        opts = spec.options
        plan = plan_shape(spec.task, opts.exclusive, opts.incompatible, spec.max_concurrency)
        entry = Entry(spec, next(self.seq), now, plan)
        self.jobs[entry.id] = entry
        if opts.unique:
            self.unique[opts.unique] = (entry.id, None)
        self.counts[Status.WAITING] += 1
        self.changes += 1
        if opts.at is not None and opts.at > now:
            self.set_status(entry, Status.SCHEDULED)
            entry.due = opts.at
            self.add_timer(opts.at, DUE, entry)
        if opts.expires_at is not None:
            self.add_timer(opts.expires_at, EXPIRE, entry)
        self.emit(ev.QUEUED, entry)
        failed: Entry | None = None
        for dep_id in rules.dependencies(opts.after, aliases) if opts.after else ():
            dep = self.jobs[dep_id]
            if dep.status is Status.FINISHED:
                continue
            if dep.status in TERMINAL:
                failed = failed or dep
                continue
            entry.pending_deps += 1
            dep.add_dependent(entry.id)
        if failed is not None:
            reason = rules.cascade_reason(failed.id, failed.status.value)
            self.end(entry, Status.CANCELLED, reason=reason)
        elif not entry.pending_deps:
            self.deps_done(entry)

    def deps_done(self, entry: Entry) -> None:
        """Every dependency of ``entry`` finished: it joins its lane's order, or may start."""
        if entry.opts.lane is None:
            self.consider(entry)
        else:
            self.join_lane(entry)

    # ------------------------------------------------------------------- lanes
    def join_lane(self, entry: Entry) -> None:
        """Give ``entry`` its place in its lane's order (priority, then submission)."""
        name = entry.opts.lane
        assert name is not None
        lane = self.lanes.setdefault(name, Lane())
        heapq.heappush(lane.heap, entry.item())
        if lane.current is None:
            # the lane's front may change; it advances once the jobs that join in the same
            # step have all joined, so the front is the first of them in the lane's order
            self.work.append(name)

    def advance_lane(self, name: str | int) -> None:
        """A free lane: its front is cancelled (stop_on_lane_error after a failure), or
        considered for the ready index."""
        lane = self.lanes.get(name)
        if lane is None or lane.current is not None:
            return
        heap = lane.heap
        while heap:
            entry = self.jobs.get(heap[0][2])
            if entry is None or entry.status in TERMINAL:
                lane.previous = heapq.heappop(heap)[2]
                lane.previous_failed = True
                continue
            if lane.previous_failed and entry.opts.stop_on_lane_error:
                reason = rules.lane_reason(lane.previous or "?", name, "failed or was cancelled")
                self.end(entry, Status.CANCELLED, reason=reason)
                continue  # ended: the next pass takes it off the lane as the previous job
            self.consider(entry)
            return
        if not lane.previous_failed:
            # an empty lane whose last job failed is kept: the next stop_on_lane_error job
            # put into it must still see that failure
            del self.lanes[name]

    def lane_allows(self, entry: Entry) -> bool:
        """Whether ``entry`` is its lane's next job (or the one holding it)."""
        lane = self.lanes.get(entry.opts.lane)  # type: ignore[arg-type]
        if lane is None:
            return False
        if lane.current is not None:
            return lane.current == entry.id
        return bool(lane.heap) and lane.heap[0][2] == entry.id

    # ------------------------------------------------------------ ready, claim
    def consider(self, entry: Entry) -> None:
        """Put ``entry`` in the ready index if nothing but keys can still hold it back."""
        if entry.status is not Status.WAITING or entry.pending_deps or entry.where is not None:
            return
        if entry.opts.lane is not None and not self.lane_allows(entry):
            return
        entry.where = READY
        heapq.heappush(self.ready[entry.mode], entry.item())
        self.wakeups[entry.mode] = self.wakeups.get(entry.mode, 0) + 1

    def next_startable(self, mode: str) -> Entry | None:
        """The best job of ``mode`` that may start now, or None: the better of the ready top
        and the parked tops of freed keys; stale items are dropped, a blocked job parked."""
        ready = self.ready[mode]
        freed = self.freed[mode]
        jobs = self.jobs
        while True:
            while ready:
                top = jobs.get(ready[0][2])
                if top is not None and top.where == READY and top.seq == ready[0][1]:
                    break
                heapq.heappop(ready)
            best = ready[0] if ready else None
            source: tuple[str, str] | None = None
            for park in list(freed) if freed else ():
                heap = self.parked.get((mode, park))
                while heap:
                    top = jobs.get(heap[0][2])
                    if top is not None and top.where == park and top.seq == heap[0][1]:
                        break
                    heapq.heappop(heap)
                if not heap or not self.is_free(park):
                    freed.discard(park)
                    if not heap:
                        self.parked.pop((mode, park), None)
                    continue
                if best is None or heap[0] < best:
                    best, source = heap[0], (mode, park)
            if best is None:
                return None
            heapq.heappop(ready if source is None else self.parked[source])
            entry = jobs[best[2]]
            entry.where = None
            if entry.status is not Status.WAITING:
                continue
            if entry.opts.lane is not None and not self.lane_allows(entry):
                continue  # stale: another job became the lane's next; it is in the index
            blocker = self.conflict(entry)
            if blocker is None:
                return entry
            self.park(entry, blocker)

    def conflict(self, entry: Entry) -> str | None:
        """The park key of the first need in ``entry``'s plan that is not met, or None: the
        needs of its shape before ``decl:<id>``, that key, then the needs after it.

        A need that is not simply its own park key at capacity 1 (a task's limit) is kept
        under its park key, so that ``is_free`` can tell when it is met."""
        counted, running = self.counted, self.running
        plan = entry.plan
        for need in plan.before:  # exclusive groups and incompatible names: often none
            name = need.key
            count = counted.get(name)  # ``held``, inlined: a claim walks every need
            if count is None:
                count = name.startswith(JOB_KEY) and name[len(JOB_KEY) :] in running
            if count >= need.capacity:
                return self._blocked(need)
        own = DECL_KEY + entry.id
        if own in counted:  # a count of 0 is dropped: held by one at least, capacity 1
            return own
        for need in plan.after:  # ``decl:<task>`` and the task's limit: never a ``job:`` key
            if counted.get(need.key, 0) >= need.capacity:
                return self._blocked(need)
        return None

    def _blocked(self, need: Need) -> str:
        """The park key of ``need``, not met; one that is not simply its own key at capacity
        1 (a task's limit) is kept (a few, one per limit: never dropped)."""
        if need.capacity != 1 or need.park != need.key:
            self.parks[need.park] = need
        return need.park

    def held(self, key: str) -> int:
        """How many running jobs hold ``key``."""
        count = self.counted.get(key)
        if count is not None:
            return count
        return int(key.startswith(JOB_KEY) and key[len(JOB_KEY) :] in self.running)

    def is_free(self, park: str) -> bool:
        """Whether the need a job waits on, parked on ``park``, is met now: ``park`` itself
        is not held, or the need kept under it (``conflict``) is below its capacity."""
        need = self.parks.get(park)
        if need is None:
            return not self.held(park)
        return self.held(need.key) < need.capacity

    def park(self, entry: Entry, park: str) -> None:
        """Put blocked ``entry`` on the park key ``park`` (it left the ready index)."""
        entry.where = park
        heapq.heappush(self.parked.setdefault((entry.mode, park), []), entry.item())

    def start(self, entry: Entry, worker: str, now: float) -> ClaimedJob:
        """``entry`` starts for ``worker``: it holds its keys and its lane."""
        self.set_status(entry, Status.RUNNING)
        entry.attempts += 1
        entry.started = now
        entry.ended = None
        entry.worker = worker
        entry.progress = entry.progress_message = None
        self.running[entry.id] = entry
        self.hold(entry.plan.holds, 1)
        opts = entry.opts
        if opts.lane is not None:
            lane = self.lanes[opts.lane]
            if lane.current != entry.id:
                heapq.heappop(lane.heap)
                lane.current = entry.id
        self.emit(ev.STARTED, entry)
        return ClaimedJob(
            entry.id, entry.attempts, entry.task, entry.mode, entry.task, entry.payload,
            opts.timeout,
        )  # fmt: skip

    def hold(self, keys: tuple[str, ...], delta: int) -> None:
        """Add ``delta`` to the count of each counted key of ``keys`` (a count of 0 is
        dropped)."""
        counted = self.counted
        for name in keys:
            count = counted.get(name, 0) + delta
            if count:
                counted[name] = count
            else:
                del counted[name]

    # --------------------------------------------------------- end of an attempt
    def holding(self, job_id: str, attempt: int) -> Entry | None:
        """The running job if ``attempt`` still holds it, else None."""
        entry = self.jobs.get(job_id)
        if entry is None or entry.status is not Status.RUNNING or entry.attempts != attempt:
            return None  # cancelled or timed out meanwhile: the late report is dropped
        return entry

    def release(self, entry: Entry) -> None:
        """A running job gives back the keys it held; those of its frees with parked jobs are
        marked freed."""
        del self.running[entry.id]
        plan = entry.plan
        self.hold(plan.holds, -1)
        if self.parked:
            frees = (JOB_KEY + entry.id, *plan.frees)
            for mode, freed in self.freed.items():
                for park in frees:
                    if (mode, park) in self.parked:
                        freed.add(park)
                        self.wakeups[mode] = self.wakeups.get(mode, 0) + 1

    def schedule_retry(self, entry: Entry, error: ErrorInfo) -> float:
        """A failed attempt with retries left: scheduled after its delay, or waiting again at
        once; return when it may start."""
        opts = entry.opts
        entry.error, entry.traceback = str(error), error.traceback
        delay = rules.retry_delay(opts.retry_delay, opts.backoff, entry.attempts)
        now = self.clock.now()
        if delay > 0:
            self.set_status(entry, Status.SCHEDULED)
            entry.due = now + delay
            self.add_timer(entry.due, DUE, entry)
        else:
            self.set_status(entry, Status.WAITING)
            self.consider(entry)
        self.emit(ev.RETRYING, entry)
        return now + max(delay, 0.0)

    # ------------------------------------------------------------ end, cascade
    def end(
        self,
        entry: Entry,
        status: Status,
        *,
        result: Any = None,
        error: ErrorInfo | None = None,
        reason: str | None = None,
    ) -> None:
        """Make ``entry`` terminal and tell who waits for it; its cascade goes on the work
        list (the caller runs ``cascade``)."""
        self.set_status(entry, status)
        entry.ended = self.clock.now()
        entry.where = None
        if status is Status.FINISHED:
            entry.result = result
            entry.error = entry.traceback = None
        elif error is not None:
            entry.error, entry.traceback = str(error), error.traceback
        else:
            entry.error = reason
        self.ended[entry.id] = None
        opts = entry.opts
        if entry.dependents or opts.lane is not None or opts.unique:
            self.work.append(entry)  # else after_end has nothing to do
        self.emit(END_EVENTS[status], entry)

    def cascade(self) -> None:
        """Run the work list: ``after_end`` of each ended job, lanes to advance. A work list,
        not recursion, so a chain of thousands of dependents cannot overflow the stack."""
        work = self.work
        while work:
            item = work.pop()
            if isinstance(item, Entry):
                self.after_end(item)
            else:
                self.advance_lane(item)

    def after_end(self, entry: Entry) -> None:
        """What a job's end sets off, in the order of :mod:`conveyor.rules`: its unique key,
        its dependents, its lane."""
        opts = entry.opts
        if opts.unique and self.unique.get(opts.unique, ("",))[0] == entry.id:
            if opts.unique_for and entry.ended is not None:
                self.unique[opts.unique] = (entry.id, entry.ended + opts.unique_for)
            else:
                del self.unique[opts.unique]
        if entry.dependents:
            self.settle_dependents(entry)
        if opts.lane is not None:
            lane = self.lanes.get(opts.lane)
            if lane is not None:
                if lane.current == entry.id:
                    lane.current = None
                    lane.previous = entry.id
                    lane.previous_failed = entry.status is not Status.FINISHED
                if lane.current is None:
                    self.advance_lane(opts.lane)

    def settle_dependents(self, dep: Entry) -> None:
        """``dep`` ended: its dependents count down (it finished) or are cancelled."""
        for job_id in dep.dependents or ():
            entry = self.jobs.get(job_id)
            if entry is None or entry.status in TERMINAL:
                continue
            if dep.status is Status.FINISHED:
                entry.pending_deps -= 1
                if entry.pending_deps == 0:
                    self.deps_done(entry)
            else:
                reason = rules.cascade_reason(dep.id, dep.status.value)
                self.end(entry, Status.CANCELLED, reason=reason)
        dep.dependents = None

    # ------------------------------------------------------------------ timers
    def tick(self, now: float) -> None:
        """Apply every timer due by ``now``: delays and retry waits end (the job is
        considered), expiry passes (a job not started yet is cancelled, "expired")."""
        timers = self.timers
        if not timers or timers[0][0] > now:
            return
        while timers and timers[0][0] <= now:
            when, _, kind, job_id = heapq.heappop(timers)
            entry = self.jobs.get(job_id)
            if entry is None:
                continue
            if kind == DUE:
                if entry.status is Status.SCHEDULED and entry.due == when:
                    entry.due = None
                    self.set_status(entry, Status.WAITING)
                    self.consider(entry)
            elif entry.status in PENDING and entry.attempts == 0:
                self.end(entry, Status.CANCELLED, reason="expired")
        self.cascade()

    def add_timer(self, when: float, kind: int, entry: Entry) -> None:
        """Set a timer; one earlier than every other wakes the blocked claims and waits,
        whose sleep was measured to the timer that was first before it."""
        item = (when, entry.seq, kind, entry.id)
        heapq.heappush(self.timers, item)
        if self.timers[0] is item:
            self.timer_moved = True

    def timer_wait(self) -> float | None:
        """Real seconds until the first timer (None: no timer)."""
        if not self.timers:
            return None
        return self.clock.wait_time(self.timers[0][0])

    # ------------------------------------------------------------- bookkeeping
    def set_status(self, entry: Entry, status: Status) -> None:
        """Change ``entry``'s status, keeping the counts by status."""
        if entry.status is not status:
            counts = self.counts
            counts[entry.status] -= 1
            counts[status] += 1
            entry.status = status
            self.changes += 1

    def emit(self, name: str, entry: Entry) -> None:
        """Queue event ``name`` about ``entry`` if anyone listens."""
        if name in self.bus.wanted:
            record = entry.record()
            self.effects.append(lambda: self.bus.emit(name, record))

    def drop(self, entry: Entry) -> None:
        """Forget an ended job for good (popped, forgotten or purged)."""
        del self.jobs[entry.id]
        self.ended.pop(entry.id, None)
        self.counts[entry.status] -= 1
        self.changes += 1
