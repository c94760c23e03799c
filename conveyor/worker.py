"""The worker: claims jobs of one mode for an executor's slots, reports how they ended,
heartbeats, and stops gracefully.

::

    backend.claim ──> Worker.claim ──> executor slot runs the job ──> Worker.finished / failed
          ^                                                                   │
          └─────────────────────── backend.finish / fail <─────────────────────┘

    heartbeat thread (``start(heartbeat=True)``), every lease / 3 seconds (1 s at most):
        backend.heartbeat(worker id, running ids) ──> executor.stop_job(each id it lost)
        backend.recover_expired()                     (jobs of workers that died)

Each executor slot pulls its own work through :meth:`Worker.claim` (one lock round trip, no
dispatcher thread in between), so an idle slot wakes the moment a job becomes startable.
Recovering jobs of dead workers is the backend's job; the heartbeat only asks for it.

The worker keeps the jobs it runs in :attr:`Worker.running` (set on claim, popped on report).
A dict set or pop is atomic under the GIL, so the per-job path takes no lock; the lock below
is taken only by what is rare (a stop, a cancel) or opted into (``burst``, ``max_jobs``).
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conveyor.backends.base import Finished, WorkerInfo
from conveyor.clock import Clock
from conveyor.job import ErrorInfo
from conveyor.settings import DEFAULT_LEASE

if TYPE_CHECKING:
    from conveyor.backends.base import Backend, ClaimedJob
    from conveyor.executors.base import Executor

log = logging.getLogger("conveyor.worker")

#: seconds between heartbeats at most (lease / 3 when that is shorter)
MAX_BEAT_INTERVAL = 1.0
_numbers = itertools.count(1)

#: a burst slot that found nothing startable while the worker's other jobs run re-checks this
#: often (seconds), so a job put by another process meanwhile is not left for the end
BURST_RECHECK = 0.5

#: a batching worker claims extra jobs only while its jobs lately ran shorter than this
#: (seconds), so that long jobs are never hoarded by one worker while another idles
PREFETCH_BELOW = 0.02


def error_info(exc: BaseException) -> ErrorInfo:
    """Describe an exception so it can cross processes: type, message, traceback text."""
    text = "".join(traceback.format_exception(exc))
    return ErrorInfo(type(exc).__qualname__, str(exc), text)


class _Tally:
    """A counter bumped by many threads without a lock (``next`` on ``itertools.count`` is
    atomic); reading it consumes one number, so reads are counted and serialised."""

    def __init__(self) -> None:
        self._count = itertools.count()
        self.bump = self._count.__next__
        self._reads = 0
        self._lock = threading.Lock()

    def value(self) -> int:
        with self._lock:
            value = next(self._count) - self._reads
            self._reads += 1
        return value


class Worker:
    """Connects one executor's slots to a backend for jobs of one mode.

    Args:
        backend: where jobs are claimed and reported.
        executor: runs the jobs (its mode is the worker's mode).
        name: the worker id (default ``host:pid:mode-n``); a job's recorded worker is
            ``"<id>/<slot thread name>"``.
        lease: the queue's lease in seconds; the heartbeat beats every ``lease / 3``.
        clock: the queue's clock (for the times the worker registry shows).
        max_jobs: claim no more than this many jobs in all; :attr:`done` is set once claimed.
        burst: claim only what may start now; once nothing may and nothing of this worker
            runs, :attr:`done` is set and every slot stops claiming.
        on_change: called (from any thread) when :attr:`done` is set, and when the last
            running job ends after :meth:`stop_claiming`.
        prefetch: batch the backend calls (for durable backends, where each is a
            transaction): claim up to this many jobs beyond the slots' own while recent jobs
            ran shorter than ``PREFETCH_BELOW``, and write the reports of jobs that end while
            claimed jobs are at hand together with the next claim (at the latest at the next
            heartbeat). 0 (the default, and always with ``max_jobs``): one call per report.
    """

    def __init__(
        self,
        backend: Backend,
        executor: Executor,
        *,
        name: str | None = None,
        lease: float = DEFAULT_LEASE,
        clock: Clock | None = None,
        max_jobs: int | None = None,
        burst: bool = False,
        on_change: Callable[[], object] | None = None,
        prefetch: int = 0,
    ) -> None:
        if max_jobs is not None and max_jobs < 1:
            raise ValueError(f"max_jobs must be >= 1 or None, got {max_jobs!r}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch!r}")
        self.backend = backend
        self.executor = executor
        self.mode = executor.mode
        self.id = name or f"{socket.gethostname()}:{os.getpid()}:{self.mode}-{next(_numbers)}"
        self.lease = lease
        self.clock = clock or Clock()
        #: the jobs this worker runs now, by id
        self.running: dict[str, ClaimedJob] = {}
        #: set once the worker has no more work to claim (burst drained, max_jobs claimed)
        self.done = threading.Event()
        self._stopping = threading.Event()
        self._draining = False  # a plain copy of _stopping, cheaper to test per job
        self._refusing = False  # running jobs were put back: a claim landing now is put back
        self._cond = threading.Condition()  # guards the rare paths; notified when a job ends
        self._burst = burst
        self._left = max_jobs  # jobs still to claim (None: no limit)
        self._reserved = 0  # of _left, held by claims in progress
        self._careful = burst or max_jobs is not None
        self._on_change = on_change
        self._claimed = _Tally()
        self._requeued = 0
        self._beat_stop = threading.Event()
        self._beat_thread: threading.Thread | None = None
        self._registered = False
        # batching (prefetch > 0), all guarded by _cond
        self._prefetch = 0 if max_jobs is not None else prefetch
        self._at_hand: deque[ClaimedJob] = deque()  # claimed, not yet given to a slot
        self._reports: list[Finished] = []  # finished, not yet written
        self._given: dict[str, tuple[float, float]] = {}  # id: (monotonic, clock) given
        self._recent_runtime: float | None = None  # moving average, seconds

    # ------------------------------------------------------------ life cycle
    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called: slots finish their job and claim no more."""
        return self._stopping.is_set()

    @property
    def ran(self) -> int:
        """How many jobs this worker started and did not put back."""
        return self._claimed.value() - self._requeued

    def start(self, *, heartbeat: bool = False) -> None:
        """Register the worker and start the executor's slots; with ``heartbeat``, also the
        heartbeat thread (long-running workers on durable backends)."""
        now = self.clock.now()
        self.backend.register_worker(
            WorkerInfo(
                self.id, socket.gethostname(), os.getpid(), self.mode, self.executor.slots, now, now
            )
        )
        self._registered = True
        if not heartbeat:
            self._prefetch = 0  # a report held back is written at the latest by the beat
        self.executor.start(self)
        if heartbeat:
            self._beat_thread = threading.Thread(
                target=self._beat_loop, daemon=True, name=f"conveyor-heartbeat-{self.id}"
            )
            self._beat_thread.start()

    def stop(
        self,
        graceful_timeout: float | None = None,
        *,
        wait: bool = True,
        timeout: float | None = None,
    ) -> list[str]:
        """Stop claiming, let running jobs end, put back those that do not; return their ids.

        Args:
            graceful_timeout: seconds the running jobs get to end (None: as long as they
                take; 0: none). A job still running then goes back to waiting with its attempt
                not counted, and is stopped where it runs: a process is killed; a thread cannot
                be, so it runs on, its result dropped, until this process exits.
            wait: False stops claiming and returns at once, leaving running jobs to end on
                their own (what ``Queue.close(wait=False)`` does with in-process jobs).
            timeout: the former name of ``graceful_timeout``.
        """
        if graceful_timeout is None:
            graceful_timeout = timeout
        self.stop_claiming()
        if not wait:
            self.executor.stop(wait=False)
            self._shutdown()
            return []
        deadline = None if graceful_timeout is None else time.monotonic() + graceful_timeout
        self.wait_idle(graceful_timeout)
        requeued = self.requeue_running()
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.executor.stop(wait=True, timeout=remaining)
        requeued += self.requeue_running()  # claimed in the instant before the stop
        self._shutdown()
        return requeued

    def stop_claiming(self) -> None:
        """Let no slot claim again; running jobs go on (jobs claimed ahead go back)."""
        self._stopping.set()
        self._draining = True
        with self._cond:
            self._cond.notify_all()
        if self._prefetch:
            self._hand_back()
        self.backend.wake()
        if not self.running:
            self._changed()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job of this worker runs (or ``timeout``); True if none does."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self.running:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def requeue_running(self) -> list[str]:
        """Put every running job back to waiting (attempt not counted) and stop it where it
        runs; a claim that lands afterwards is put back too. Return the ids put back."""
        self._flush_reports()  # finished jobs are reported, not put back
        with self._cond:
            self._refusing = True
            self._at_hand.clear()
            jobs = list(self.running.values())
            self.running.clear()
            self._cond.notify_all()
        requeued = []
        for job in jobs:
            # stop it first, so that the slot drops its report rather than racing the requeue
            self.executor.stop_job(job.id, "requeued: its worker is stopping")
            if self.backend.requeue(job.id, job.attempt):
                requeued.append(job.id)
        self._requeued += len(requeued)
        if requeued:
            log.warning(
                "worker %s put back %d running job(s): %s", self.id, len(requeued), requeued
            )
        return requeued

    def _shutdown(self) -> None:
        self._beat_stop.set()
        thread = self._beat_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if self._registered:
            self._registered = False
            self.backend.unregister_worker(self.id)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    # -------------------------------------------------------- the slots' calls
    def slot_name(self) -> str:
        """Who runs the job, as recorded on it: the worker id and the calling slot thread."""
        return f"{self.id}/{threading.current_thread().name}"

    def claim(self, limit: int = 1, timeout: float | None = None) -> list[ClaimedJob]:
        """Block until up to ``limit`` jobs may start; ``[]`` when the worker is stopping
        (or, with ``burst`` or ``max_jobs``, has no more work to claim)."""
        if self._prefetch:
            return self._exchange(limit, timeout)
        if self._careful:
            return self._claim_careful(limit, timeout)
        jobs = self.backend.claim(
            self.slot_name(), self.mode, limit, timeout=timeout, stop=self._stopping.is_set
        )
        return self._track(jobs) if jobs else jobs

    def finished(self, job: ClaimedJob, result: Any, *, claim_next: int = 0) -> list[ClaimedJob]:
        """Report that ``job`` returned ``result``; with ``claim_next``, claim that many more
        in the same backend call (blocking like :meth:`claim`).

        A job leaves :attr:`running` only once its report is recorded, so a worker that stops
        once nothing runs never exits with a report still on its way.
        """
        if self._prefetch:
            return self._finish_batched(job, result, claim_next)
        if self._careful:
            return self._finish_careful(job, result, claim_next)
        if not claim_next:
            self.backend.finish(job.id, job.attempt, result)
            jobs: list[ClaimedJob] = []
        else:
            # no waiting inside: the finished job must leave `running` before this slot idles
            jobs = self.backend.finish_and_claim(
                job.id,
                job.attempt,
                result,
                self.slot_name(),
                self.mode,
                claim_next,
                timeout=0,
                stop=self._stopping.is_set,
            )
        running = self.running
        if running.get(job.id) is job:
            del running[job.id]
        if self._draining:
            self._ended(None)
        if jobs:
            return self._track(jobs)
        if claim_next:
            return self.claim(claim_next)
        return jobs

    def failed(self, job: ClaimedJob, error: BaseException | ErrorInfo) -> None:
        """Report that ``job`` failed (it raised, timed out, or its process died)."""
        started = self._taken(job)
        if isinstance(error, BaseException):
            self.backend.fail(job.id, job.attempt, error_info(error), error, started=started)
        else:
            self.backend.fail(job.id, job.attempt, error, started=started)
        # under the lock: a retry of the job may already run in another slot, under its id
        self._ended(job)

    def stop_job(self, job_id: str, reason: str) -> None:
        """Stop ``job_id`` where it runs (it was cancelled); its report will be dropped."""
        if self._at_hand:
            with self._cond:
                for waiting in [j for j in self._at_hand if j.id == job_id]:
                    self._at_hand.remove(waiting)
        self._given.pop(job_id, None)
        job = self.running.get(job_id)
        if job is not None:
            self._ended(job)
        self.executor.stop_job(job_id, reason)

    def _track(self, jobs: list[ClaimedJob]) -> list[ClaimedJob]:
        running, bump = self.running, self._claimed.bump
        for job in jobs:
            running[job.id] = job
            bump()
        if self._refusing:
            return self._refuse(jobs)
        return jobs

    def _refuse(self, jobs: list[ClaimedJob]) -> list[ClaimedJob]:
        """Put back jobs claimed after :meth:`requeue_running` emptied the worker."""
        with self._cond:
            late = [job for job in jobs if self.running.pop(job.id, None) is not None]
        self._requeued += sum(self.backend.requeue(job.id, job.attempt) for job in late)
        return []

    def _ended(self, job: ClaimedJob | None) -> None:
        """A job of this worker ended (``None``: already popped): wake who waits on that."""
        with self._cond:
            if job is not None and self.running.get(job.id) is job:
                del self.running[job.id]
            self._cond.notify_all()
            idle = not self.running
        if idle and self._draining:
            self._changed()

    # ----------------------------------------------------------- batched calls
    def _finish_batched(self, job: ClaimedJob, result: Any, claim_next: int) -> list[ClaimedJob]:
        started = self._taken(job)
        with self._cond:  # the report goes with the next backend call
            self._reports.append(Finished(job.id, job.attempt, result, started, self.clock.now()))
        return self._exchange(claim_next, None)

    def _taken(self, job: ClaimedJob) -> float | None:
        """When a slot took ``job`` (queue clock; None if not given by a batching worker); its
        runtime, finished or failed, goes into the average that decides on claiming ahead."""
        given = self._given.pop(job.id, None)
        if given is None:
            return None
        runtime = time.monotonic() - given[0]
        recent = self._recent_runtime
        self._recent_runtime = runtime if recent is None else 0.8 * recent + 0.2 * runtime
        return given[1]

    def _give(self, limit: int) -> list[ClaimedJob]:
        """(Under ``_cond``) up to ``limit`` jobs at hand for the calling slot, which starts
        them now: the time is noted for their reports and the runtime average."""
        jobs = [self._at_hand.popleft() for _ in range(min(limit, len(self._at_hand)))]
        mono, now = time.monotonic(), self.clock.now()
        for job in jobs:
            self._given[job.id] = (mono, now)
        return jobs

    def _exchange(self, limit: int, timeout: float | None) -> list[ClaimedJob]:
        """Write the pending reports and claim up to ``limit`` jobs for the calling slot (and
        some at hand while jobs are short) in one backend call; when none may start, block
        like :meth:`claim` (a burst worker instead ends once none of its jobs runs).

        No backend call is made under ``_cond``: the backend runs event and done callbacks on
        the calling thread, and a callback may put a job and wait for it."""
        while True:
            with self._cond:
                if limit and self._at_hand and not self._draining:
                    return self._give(limit)  # claimed ahead: pending reports wait a call
                stopping = self._draining or self.done.is_set()
                want = 0 if stopping or not limit else limit + self._extra()
            self._keep(self._write_reports(want))
            with self._cond:
                if self._at_hand and not self._draining:
                    if len(self._at_hand) > limit:
                        self._cond.notify_all()  # a burst slot waiting for work may take some
                        self.backend.wake()  # so may a slot blocked in a claim
                    return self._give(limit)
                if not want:
                    return []
                if self._burst:
                    if not self.running:
                        self._mark_done()
                        return []
                    self._cond.wait(BURST_RECHECK)  # ours still run and may unblock more
                    continue
            jobs = self.backend.claim(
                self.slot_name(), self.mode, want, timeout=timeout, stop=self._claim_stop
            )
            if not jobs and not self._at_hand:
                return []  # stopping, closed, or the timeout passed
            self._keep(self._track(jobs) if jobs else jobs)

    def _claim_stop(self) -> bool:
        """A blocked claim of a batching slot ends on a stop, or once jobs are at hand."""
        return self._stopping.is_set() or bool(self._at_hand)

    def _keep(self, jobs: list[ClaimedJob]) -> None:
        """Keep claimed jobs at hand; once the worker is stopping, put them back at once."""
        if not jobs:
            return
        with self._cond:
            if not self._draining:
                self._at_hand.extend(jobs)
                return
            for job in jobs:
                self.running.pop(job.id, None)
        self._requeued += sum(self.backend.requeue(job.id, job.attempt) for job in jobs)
        with self._cond:
            self._cond.notify_all()
            if not self.running:
                self._changed()

    def _extra(self) -> int:
        recent = self._recent_runtime
        return self._prefetch if recent is not None and recent < PREFETCH_BELOW else 0

    def _write_reports(self, claim: int = 0) -> list[ClaimedJob]:
        """Write the pending reports and claim up to ``claim`` jobs in one backend call (not
        under ``_cond``); the reported jobs leave :attr:`running`. If the call fails, the
        reports stay pending for the next call, and their jobs stay running (leases renewed)."""
        with self._cond:
            reports, self._reports = self._reports, []
        if not reports and not claim:
            return []
        try:
            jobs = self.backend.finish_many_and_claim(
                reports, self.slot_name(), self.mode, claim, stop=self._stopping.is_set
            )
        except BaseException:
            with self._cond:
                self._reports[:0] = reports
            raise
        with self._cond:
            running = self.running
            for report in reports:
                job = running.get(report.job_id)
                if job is not None and job.attempt == report.attempt:
                    del running[report.job_id]
            if reports:
                self._cond.notify_all()
                if self._draining and not running:
                    self._changed()
            return self._track(jobs) if jobs else jobs

    def _flush_reports(self) -> None:
        """Write the reports held back, if any; a failure is logged, the reports kept."""
        if not self._reports:
            return
        try:
            self._write_reports()
        except Exception:
            log.exception("worker %s: writing %d report(s) failed", self.id, len(self._reports))

    def _hand_back(self) -> None:
        """Stopping: write the pending reports, put back the jobs at hand (not started)."""
        self._flush_reports()
        with self._cond:
            spare = list(self._at_hand)
            self._at_hand.clear()
            for job in spare:
                self.running.pop(job.id, None)
        self._requeued += sum(self.backend.requeue(job.id, job.attempt) for job in spare)

    # -------------------------------------------------- burst and max_jobs claims
    def _claim_careful(self, limit: int, timeout: float | None) -> list[ClaimedJob]:
        if self._burst:
            return self._claim_burst(limit)
        with self._cond:
            assert self._left is not None
            allowed = min(limit, self._left - self._reserved)
            if allowed <= 0 or self._draining:
                return []  # the rest of the budget is held by claims in progress
            self._reserved += allowed
        jobs: list[ClaimedJob] = []
        try:
            jobs = self.backend.claim(
                self.slot_name(), self.mode, allowed, timeout=timeout, stop=self._stopping.is_set
            )
        finally:
            with self._cond:
                self._reserved -= allowed
                self._left -= len(jobs)
                exhausted = self._left == 0
        tracked = self._track(jobs) if jobs else jobs
        if exhausted and not self.done.is_set():
            self._mark_done()  # after tracking: whoever wakes on it sees the jobs running
        return tracked

    def _finish_careful(self, job: ClaimedJob, result: Any, claim_next: int) -> list[ClaimedJob]:
        """``finished`` for burst and max_jobs workers: the report and the next claim share one
        backend call when the budget allows, under the lock their claims take."""
        with self._cond:
            allowed = (
                claim_next if self._left is None else min(claim_next, self._left - self._reserved)
            )
            if allowed <= 0 or self._draining or self.done.is_set():
                jobs: list[ClaimedJob] = []
                self.backend.finish(job.id, job.attempt, result)
            else:
                jobs = self.backend.finish_and_claim(
                    job.id, job.attempt, result, self.slot_name(), self.mode, allowed,
                    timeout=0, stop=self._stopping.is_set,
                )  # fmt: skip
                if self._left is not None:
                    self._left -= len(jobs)
            self._ended(job)
            tracked = self._track(jobs) if jobs else jobs
        if self._left == 0 and not self.done.is_set():
            self._mark_done()
        if tracked or not claim_next:
            return tracked
        return self.claim(claim_next)

    def _claim_burst(self, limit: int) -> list[ClaimedJob]:
        """Claim what may start now. Claims and the ends of jobs (popped only after their
        report) go through one lock, so "nothing startable and nothing of ours running" is
        decided on a consistent view: a job that ours would unblock is never left behind."""
        with self._cond:
            while True:
                if self._draining or self.done.is_set():
                    return []
                allowed = limit if self._left is None else min(limit, self._left)
                jobs = []
                if allowed > 0:
                    jobs = self.backend.claim(self.slot_name(), self.mode, allowed, timeout=0)
                if jobs:
                    if self._left is not None:
                        self._left -= len(jobs)
                    return self._track(jobs)
                if not self.running or allowed <= 0:
                    self._mark_done()
                    return []
                # ours still run and may unblock more: wait for one to end, then look again
                self._cond.wait(BURST_RECHECK)

    def _mark_done(self) -> None:
        self.done.set()
        with self._cond:
            self._cond.notify_all()
        self._changed()

    # -------------------------------------------------------------- heartbeat
    def _beat_loop(self) -> None:
        # at least once a second: the beat is also how a cancel made in another process
        # reaches the job (its slot is freed within a second, not lease / 3)
        interval = min(self.lease / 3, MAX_BEAT_INTERVAL)
        while not self._beat_stop.wait(interval):
            try:
                self.beat()
            except Exception:  # a backend hiccup must not end the heartbeat
                log.exception("worker %s: heartbeat failed", self.id)

    def beat(self) -> None:
        """Renew the leases of the running jobs; stop those this worker no longer holds
        (cancelled elsewhere, or recovered after a lost lease); recover expired leases."""
        self._flush_reports()  # a report is held back no longer than a beat
        running = self.running.copy()  # one C call: atomic under the GIL
        lost = self.backend.heartbeat(self.id, list(running))
        for job_id in lost:
            job = running.get(job_id)
            if job is not None and self.running.get(job_id) is job:
                log.info("worker %s: job %s is no longer its own; stopping it", self.id, job_id)
                self.stop_job(job_id, "cancelled")
        recovered = self.backend.recover_expired()
        if recovered:
            log.warning("recovered %d job(s) whose worker stopped heartbeating", recovered)
