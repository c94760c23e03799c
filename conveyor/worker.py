"""The worker: claims jobs of one mode for an executor's slots, reports how they ended,
heartbeats, and stops gracefully.

::

    backend.claim ──> Worker.claim ──> executor slot runs the job ──> Worker.finished / failed
          ^                                                                   │
          └─────────────────────── backend.finish / fail <─────────────────────┘

    heartbeat thread (``start(heartbeat=True)``), every lease / 3 seconds (1 s at most):
        backend.heartbeat(worker id, running ids) ──> executor.stop_job(each id it lost)
        backend.recover_expired(by=worker id)         (jobs of workers that died)
      and, while batching, every REPORT_DELAY / 2: write the reports held back that long

A backend call that fails (a full disk, a lock held too long) never ends a slot: a report that
could not be written is kept and retried (with the next call, at the latest by the next beat),
its job still the worker's; a claim that failed is retried after a pause. A report still
unwritten after a lease is dropped and its job left to go back to the queue when its lease runs
out. A worker built with ``give_up`` stops claiming and heartbeating once its backend calls
have kept failing that long, and says why in :attr:`Worker.broken` (``conveyor worker`` then
exits with status 1, for a supervisor to restart it).

Each executor slot pulls its own work through :meth:`Worker.claim` (one lock round trip, no
dispatcher thread in between), so an idle slot wakes the moment a job becomes startable.
Recovering jobs of dead workers is the backend's job; the heartbeat only asks for it.

What happens to each job is said on the logger ``conveyor.worker``, from what the backend
recorded (``fail`` answers whether the job will be retried): an attempt that failed and is
retried (INFO, with the next attempt and when), a job failed for good or refused (WARNING), a
job stopped because it was cancelled (INFO), each finished job (DEBUG). A job the backend
found it cannot run here (refused, or its function could not be loaded) comes back from the
claim marked ``unrunnable``, already recorded: it is said and counted, and never reaches a
slot. :meth:`Worker.counts` counts the outcomes.

A burst worker that finds nothing to start, with none of its own jobs running or being claimed,
recovers the expired leases and ends only if no job runs anywhere in the queue: a job that runs
may still fail and be retried, come back when its worker is lost, or unblock others.

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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.clock import Clock
from conveyor.job import ErrorInfo, Status
from conveyor.records import Failed, Finished, WorkerInfo
from conveyor.settings import DEFAULT_LEASE

if TYPE_CHECKING:
    from conveyor.backends.base import Backend
    from conveyor.executors.base import Executor
    from conveyor.records import ClaimedJob

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

#: a batching worker writes a report it held back at most this long (seconds) after the job
#: ended, plus the time the write takes (its heartbeat thread looks every REPORT_DELAY / 2)
REPORT_DELAY = 0.05

#: seconds a slot waits before it retries a backend call that failed, doubling up to RETRY_MAX
RETRY_FIRST = 0.05
RETRY_MAX = 1.0

#: how the attempts a worker ended are counted (:meth:`Worker.counts`): finished, failed for
#: good (refused jobs too), failed and retried, cancelled (stopped where they ran), put back
OUTCOMES = ("finished", "failed", "retried", "cancelled", "put back")


def job_fields(job: ClaimedJob) -> dict[str, Any]:
    """A job's fields for a log record (``extra``; the JSON log format makes them keys)."""
    return {"job_id": job.id, "task": job.task, "attempt": job.attempt}


def first_line(error: ErrorInfo) -> str:
    """``Type: message`` up to the message's first line break."""
    return str(error).split("\n", 1)[0]


#: kept for callers of the earlier name; :meth:`ErrorInfo.of` is the one describer
error_info = ErrorInfo.of


@dataclass(slots=True)
class _Failure:
    """A failed attempt whose report is still to be written."""

    job: ClaimedJob
    error: ErrorInfo
    exception: BaseException | None
    started: float | None


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
        executor: runs the jobs.
        claims: the mode of the jobs it claims (:attr:`mode`); default: the executor's. A
            process executor may run jobs put in thread mode, say.
        name: the worker id (default ``host:pid:mode-n``); a job's recorded worker is
            ``"<id>/<slot thread name>"``.
        lease: the queue's lease in seconds; the heartbeat beats every ``lease / 3``. A report
            that could not be written for this long is dropped (its job goes back to the
            queue when its lease runs out).
        clock: the queue's clock (for the times the worker registry shows).
        max_jobs: claim no more than this many jobs in all; :attr:`done` is set once claimed.
        burst: claim only what may start now; once nothing may and nothing of this worker
            runs, :attr:`done` is set and every slot stops claiming.
        on_change: called (from any thread) when :attr:`done` is set, when the last running
            job ends after :meth:`stop_claiming`, and when the worker gives up.
        prefetch: batch the backend calls (for durable backends, where each is a
            transaction): claim up to this many jobs beyond the slots' own while recent jobs
            ran shorter than ``PREFETCH_BELOW``, and write the reports of jobs that end while
            claimed jobs are at hand together with the next claim, at the latest
            ``REPORT_DELAY`` after the job ended. 0 (the default, and always with
            ``max_jobs``): one call per report.
        give_up: seconds the worker's backend calls (claims, reports, heartbeats) may keep
            failing before it gives up: it stops claiming and heartbeating, puts back what it
            can and sets :attr:`broken`. None (the default): never; its slots retry.
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
        give_up: float | None = None,
        claims: str | None = None,
    ) -> None:
        if max_jobs is not None and max_jobs < 1:
            raise ValueError(f"max_jobs must be >= 1 or None, got {max_jobs!r}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch!r}")
        if give_up is not None and not give_up > 0:
            raise ValueError(f"give_up must be > 0 or None, got {give_up!r}")
        self.backend = backend
        self.executor = executor
        #: the mode of the jobs it claims
        self.mode = claims or executor.mode
        number = next(_numbers)
        self.id = name or f"{socket.gethostname()}:{os.getpid()}:{executor.mode}-{number}"
        self.lease = lease
        self.clock = clock or Clock()
        #: the jobs this worker runs now, by id
        self.running: dict[str, ClaimedJob] = {}
        #: set once the worker has no more work to claim (burst drained, max_jobs claimed)
        self.done = threading.Event()
        #: why the worker gave up (its backend calls kept failing for ``give_up`` seconds)
        self.broken: str | None = None
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
        self._outcomes = {outcome: _Tally() for outcome in OUTCOMES}
        self._local = threading.local()  # .sifted: the calling slot's claim had unrunnable jobs
        self._claiming = 0  # batching slots in a backend call that may claim (under _cond)
        self._beat_stop = threading.Event()
        self._beat_thread: threading.Thread | None = None
        self._registered = False
        self._give_up = give_up
        # monotonic times of the first failure since the last success of a claim, of a
        # report's write, of a heartbeat; None while they succeed
        self._trouble_since: float | None = None
        self._write_failed_since: float | None = None
        self._beat_trouble_since: float | None = None
        # what is still to be written, guarded by _cond: reports (held back while batching,
        # or kept after a failed write), failures kept after a failed write, and the jobs
        # claimed ahead that a slot started; _pending_since: when the oldest of them came
        self._reports: list[Finished] = []
        self._failures: list[_Failure] = []
        #: jobs whose report or failure a backend call is writing right now (not pending, not
        #: yet written: a stop must not put them back)
        self._writing: set[str] = set()
        self._announce: list[tuple[str, int]] = []
        self._pending_since: float | None = None
        # batching (prefetch > 0), all guarded by _cond
        self._prefetch = 0 if max_jobs is not None else prefetch
        self._at_hand: deque[ClaimedJob] = deque()  # claimed, not yet given to a slot
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

    def counts(self) -> dict[str, int]:
        """How the attempts this worker ended, so far, ended (see :data:`OUTCOMES`); jobs it
        claimed that could not run (refused, or their function not loaded) are among the
        failed and retried."""
        counts = {outcome: tally.value() for outcome, tally in self._outcomes.items()}
        counts["put back"] = self._requeued
        return counts

    def start(self, *, heartbeat: bool = False) -> None:
        """Register the worker and start the executor's slots; with ``heartbeat``, also the
        heartbeat thread (long-running workers on durable backends)."""
        now = self.clock.now()
        self.backend.register_worker(
            WorkerInfo(
                self.id,
                socket.gethostname(),
                os.getpid(),
                self.executor.mode,
                self.executor.slots,
                now,
                now,
                self.lease,
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
        runs; a claim that lands afterwards is put back too. Return the ids put back.

        A job that ended but whose report cannot be written is not put back (it ran): it stays
        claimed until its lease runs out, then goes back to the queue with its attempt counted.
        """
        self._flush_reports()  # finished jobs are reported, not put back
        with self._cond:
            self._refusing = True
            self._at_hand.clear()
            ended = self._unwritten_ids()
            jobs = [job for job in self.running.values() if job.id not in ended]
            for job in jobs:
                del self.running[job.id]
            self._cond.notify_all()
        for job in jobs:
            # stop it first, so that the slot drops its report rather than racing the requeue
            self.executor.stop_job(job.id, "requeued: its worker is stopping")
        requeued = self._put_back(jobs)
        if requeued:
            log.warning(
                "worker %s put back %d running job(s): %s", self.id, len(requeued), requeued
            )
        return requeued

    def _put_back(self, jobs: list[ClaimedJob]) -> list[str]:
        """Requeue ``jobs`` (no longer this worker's); return the ids put back. One that cannot
        be is logged: its lease runs out and it goes back to the queue then."""
        requeued = []
        for job in jobs:
            try:
                if self.backend.requeue(job.id, job.attempt):
                    requeued.append(job.id)
            except Exception as exc:
                log.warning(
                    "worker %s: putting back job %s failed (%s); it returns to the queue when"
                    " its lease runs out",
                    self.id,
                    job.id,
                    exc,
                )
        self._requeued += len(requeued)
        return requeued

    def _shutdown(self) -> None:
        self._beat_stop.set()
        thread = self._beat_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if self._registered:
            self._registered = False
            try:
                self.backend.unregister_worker(self.id)
            except Exception as exc:
                log.warning("worker %s: leaving the worker registry failed (%s)", self.id, exc)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    # -------------------------------------------------------- the slots' calls
    def slot_name(self) -> str:
        """Who runs the job, as recorded on it: the worker id and the calling slot thread."""
        return f"{self.id}/{threading.current_thread().name}"

    def claim(self, limit: int = 1, timeout: float | None = None) -> list[ClaimedJob]:
        """Block until up to ``limit`` jobs may start; ``[]`` when the worker is stopping
        (or, with ``burst`` or ``max_jobs``, has no more work to claim, or it gave up).

        A claim that fails is retried after a pause (logged); so are the reports still
        unwritten, first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = RETRY_FIRST
        while True:
            if self._failures or (self._reports and not self._prefetch):
                self._flush_reports()
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._local.sifted = False
            try:
                jobs = self._claim(limit, remaining)
            except Exception as exc:
                self._trouble(exc, "claiming jobs")
                if self._draining or (deadline is not None and time.monotonic() >= deadline):
                    return []
                self._stopping.wait(pause if deadline is None else min(pause, remaining or 0))
                pause = min(pause * 2, RETRY_MAX)
                continue
            self._fine()
            if not jobs and self._local.sifted:
                continue  # every job claimed could not run (said and recorded): claim again
            return jobs

    def _claim(self, limit: int, timeout: float | None) -> list[ClaimedJob]:
        if self._prefetch:
            return self._exchange(limit, timeout)
        if self._careful:
            return self._claim_careful(limit, timeout)
        jobs = self.backend.claim(
            self.slot_name(), self.mode, limit, timeout=timeout, stop=self._stopping.is_set
        )
        return self._track(self._sift(jobs)) if jobs else jobs

    def finished(self, job: ClaimedJob, result: Any, *, claim_next: int = 0) -> list[ClaimedJob]:
        """Report that ``job`` returned ``result``; with ``claim_next``, claim that many more
        in the same backend call (blocking like :meth:`claim`).

        A job leaves :attr:`running` only once its report is recorded, so a worker that stops
        once nothing runs never exits with a report still on its way. A report that could not
        be written is kept and retried; the job stays the worker's meanwhile.
        """
        if self._prefetch:
            return self._finish_batched(job, result, claim_next)
        if self._failures or self._reports:
            self._flush_reports()
        if self._careful:
            return self._finish_careful(job, result, claim_next)
        try:
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
        except Exception as exc:
            self._keep_report(Finished(job.id, job.attempt, result, None, self.clock.now()), exc)
            return self.claim(claim_next) if claim_next else []
        self._finished_one(job)
        running = self.running
        if running.get(job.id) is job:
            del running[job.id]
        if self._draining:
            self._ended(None)
        if jobs:
            jobs = self._sift(jobs)
        if jobs:
            return self._track(jobs)
        if claim_next:
            return self.claim(claim_next)
        return jobs

    def failed(self, job: ClaimedJob, error: BaseException | ErrorInfo) -> None:
        """Report that ``job`` failed (it raised, timed out, or its process died). A report
        that could not be written is kept and retried; the job stays the worker's meanwhile."""
        started = self._taken(job)
        if isinstance(error, BaseException):
            failure = _Failure(job, error_info(error), error, started)
        else:
            failure = _Failure(job, error, None, started)
        if self._failures or (self._reports and not self._prefetch):
            self._flush_reports()
        try:
            self._write_failure(failure)
        except Exception as exc:
            with self._cond:
                self._pend(self._failures, failure)
            self._report_trouble(job.id, exc)

    def _write_failure(self, failure: _Failure) -> None:
        job = failure.job
        outcome = self.backend.fail(
            job.id, job.attempt, failure.error, failure.exception, started=failure.started
        )
        try:
            self._say_outcome(job, failure.error, outcome)
        finally:
            # said first: a worker that stops once its jobs ended reports the outcome counted
            # under the lock: a retry of the job may already run in another slot, under its id
            self._ended(job)

    def _say_outcome(self, job: ClaimedJob, error: ErrorInfo, outcome: Failed | None) -> None:
        if outcome is None:
            log.debug(
                "%s: the failure of job %s (attempt %d) was dropped: the job no longer held"
                " this attempt (cancelled, or taken back meanwhile)",
                self.id,
                job.id,
                job.attempt,
                extra=job_fields(job),
            )
        else:
            self._say_failed(job, error, outcome)

    def stop_job(self, job_id: str, reason: str) -> None:
        """Stop ``job_id`` where it runs (it was cancelled); its report will be dropped."""
        if self._at_hand:
            with self._cond:
                for waiting in [j for j in self._at_hand if j.id == job_id]:
                    self._at_hand.remove(waiting)
        self._given.pop(job_id, None)
        job = self.running.get(job_id)
        if job is not None:
            self._outcomes["cancelled"].bump()
            log.info(
                "%s: job %s (task %s, attempt %d) stopped: %s",
                self.id,
                job.id,
                job.task,
                job.attempt,
                reason,
                extra={**job_fields(job), "outcome": "cancelled"},
            )
            self._ended(job)
        self.executor.stop_job(job_id, reason)

    def _sift(self, jobs: list[ClaimedJob]) -> list[ClaimedJob]:
        """The claimed jobs that may run. The backend already recorded why the others cannot
        (:class:`~conveyor.backends.base.Unrunnable`): they are said and counted here, and
        never reach a slot; the calling slot's ``_local.sifted`` notes that some were."""
        for job in jobs:
            if job.unrunnable is not None:
                break
        else:
            return jobs
        self._local.sifted = True
        runnable = []
        for job in jobs:
            why = job.unrunnable
            if why is None:
                runnable.append(job)
            else:
                self._say_failed(job, why.error, why.outcome, refused=why.refused)
        return runnable

    def _finished_one(self, job: ClaimedJob) -> None:
        self._outcomes["finished"].bump()
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s: job %s (task %s, attempt %d) finished",
                self.id,
                job.id,
                job.task,
                job.attempt,
                extra={**job_fields(job), "outcome": "finished"},
            )

    def _say_failed(
        self, job: ClaimedJob, error: ErrorInfo, outcome: Failed, *, refused: bool = False
    ) -> None:
        """Log and count a failed attempt as the backend recorded it: retried, or failed for
        good (``refused``: the job could not run here, and no retry can mend it)."""
        first = first_line(error)
        fields = {**job_fields(job), "error_type": error.type, "error": first}
        if outcome.retry_at is not None:
            self._outcomes["retried"].bump()
            wait = outcome.retry_at - self.clock.now()
            log.info(
                "%s: job %s (task %s) attempt %d failed: %s; attempt %d %s",
                self.id,
                job.id,
                job.task,
                job.attempt,
                first,
                job.attempt + 1,
                f"in {wait:.3g} s" if wait > 0.0005 else "may start now",
                extra={**fields, "outcome": "retried", "next_attempt": job.attempt + 1,
                       "retry_at": outcome.retry_at},
            )  # fmt: skip
        else:
            self._outcomes["failed"].bump()
            log.warning(
                "%s: job %s (task %s) %s: %s",
                self.id,
                job.id,
                job.task,
                "refused" if refused else f"failed (attempt {job.attempt}, no retry left)",
                first,
                extra={**fields, "outcome": "refused" if refused else "failed"},
            )
        if error.traceback and log.isEnabledFor(logging.DEBUG):
            log.debug("%s: the traceback of job %s:\n%s", self.id, job.id, error.traceback)

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
        self._put_back(late)
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

    # ------------------------------------------------------ backend faults
    def _pend(self, items: list[Any], item: Any) -> None:
        """(Under ``_cond``) keep ``item`` to be written, noting when the oldest such came."""
        items.append(item)
        if self._pending_since is None:
            self._pending_since = time.monotonic()

    def _keep_report(self, report: Finished, exc: Exception) -> None:
        with self._cond:
            self._pend(self._reports, report)
        self._report_trouble(report.job_id, exc)

    def _report_trouble(self, job_id: str, exc: Exception) -> None:
        first = self._write_failed_since is None
        if first:
            self._write_failed_since = time.monotonic()
        self._log_failure(first, f"writing the report of job {job_id}", exc)
        log.warning(
            "worker %s: the report of job %s is kept and retried (at the next call or beat)",
            self.id,
            job_id,
        )

    def _trouble(self, exc: Exception, what: str) -> None:
        """A slot's claim failed: log it, and note since when claims fail."""
        first = self._trouble_since is None
        if first:
            self._trouble_since = time.monotonic()
        self._log_failure(first, what, exc)

    def _log_failure(self, first: bool, what: str, exc: Exception) -> None:
        if first:
            log.warning("worker %s: %s failed", self.id, what, exc_info=exc)
        else:
            log.warning(
                "worker %s: %s failed again: %s: %s", self.id, what, type(exc).__name__, exc
            )

    def _fine(self) -> None:
        """A slot's claim succeeded."""
        if self._trouble_since is not None:
            self._trouble_since = None

    def _unwritten_ids(self) -> set[str]:
        """(Under ``_cond``) the jobs whose report is still to be written, or being written."""
        return (
            {r.job_id for r in self._reports} | {f.job.id for f in self._failures} | self._writing
        )

    def _drop_unwritten(self) -> None:
        """Give up on the reports unwritten for a lease: their jobs leave the worker, their
        leases are no longer renewed, and they go back to the queue when those run out."""
        with self._cond:
            reports, self._reports = self._reports, []
            failures, self._failures = self._failures, []
            self._pending_since = time.monotonic() if self._announce else None
            dropped = {r.job_id: r.attempt for r in reports}
            dropped.update({f.job.id: f.job.attempt for f in failures})
            for job_id, attempt in dropped.items():
                job = self.running.get(job_id)
                if job is not None and job.attempt == attempt:
                    del self.running[job_id]
            self._cond.notify_all()
            idle = not self.running
        if dropped:
            log.error(
                "worker %s: the reports of %d job(s) could not be written for %g s and are"
                " dropped; their jobs go back to the queue when their lease runs out: %s",
                self.id,
                len(dropped),
                self.lease,
                sorted(dropped),
            )
        if idle and self._draining:
            self._changed()

    def _failing_for(self) -> tuple[float, str] | None:
        """How long the worker's backend calls have kept failing, and which, if they do."""
        now = time.monotonic()
        spans = [
            (self._trouble_since, "claims"),
            (self._write_failed_since, "reports"),
            (self._beat_trouble_since, "heartbeats"),
        ]
        failing = [(now - since, what) for since, what in spans if since is not None]
        return max(failing) if failing else None

    def _check_give_up(self) -> bool:
        """Give up if the backend calls kept failing for ``give_up`` seconds; True if so."""
        if self._give_up is None or self.broken is not None:
            return self.broken is not None
        failing = self._failing_for()
        if failing is None or failing[0] <= self._give_up:
            return False
        self.broken = f"its {failing[1]} kept failing for {failing[0]:.1f} s"
        log.error(
            "worker %s gives up: %s; it stops claiming and heartbeating (its jobs go back to"
            " the queue when their lease runs out)",
            self.id,
            self.broken,
        )
        self._beat_stop.set()
        try:
            self.stop_claiming()
        except Exception:
            log.exception("worker %s: stopping after giving up failed", self.id)
        self._changed()
        return True

    # ----------------------------------------------------------- batched calls
    def _finish_batched(self, job: ClaimedJob, result: Any, claim_next: int) -> list[ClaimedJob]:
        started = self._taken(job)
        with self._cond:  # the report goes with the next backend call
            self._pend(
                self._reports, Finished(job.id, job.attempt, result, started, self.clock.now())
            )
        if claim_next:
            return self.claim(claim_next)
        self._flush_reports()
        return []

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
        them now: the time is noted for their reports and the runtime average, and the backend
        is told with the next call that they started (an attempt claimed ahead counts only
        once it started)."""
        jobs = [self._at_hand.popleft() for _ in range(min(limit, len(self._at_hand)))]
        mono, now = time.monotonic(), self.clock.now()
        for job in jobs:
            self._given[job.id] = (mono, now)
            self._pend(self._announce, (job.id, job.attempt))
        return jobs

    def _exchange(self, limit: int, timeout: float | None) -> list[ClaimedJob]:
        """Write the pending reports and claim up to ``limit`` jobs for the calling slot (and
        some ahead while jobs are short) in one backend call; when none may start, block
        like :meth:`claim` (a burst worker instead ends once nothing runs, see
        :meth:`_end_burst_if_over`).

        No backend call is made under ``_cond``: the backend runs event and done callbacks on
        the calling thread, and a callback may put a job and wait for it. So that a burst
        worker never ends while one of its slots is in a claim whose jobs it has not tracked
        yet, such calls are counted in ``_claiming``."""
        while True:
            with self._cond:
                if limit and self._at_hand and not self._draining:
                    return self._give(limit)  # claimed ahead: pending reports wait a call
                stopping = self._draining or self.done.is_set()
                claim = 0 if stopping else limit
                extra = self._extra() if claim else 0
                if claim:
                    self._claiming += 1
            self._local.sifted = False
            try:
                self._keep(self._write_reports(claim, extra))
            finally:
                if claim:
                    with self._cond:
                        self._claiming -= 1
            with self._cond:
                if self._at_hand and not self._draining:
                    if len(self._at_hand) > limit:
                        self._cond.notify_all()  # a burst slot waiting for work may take some
                        self.backend.wake()  # so may a slot blocked in a claim
                    return self._give(limit)
                if not claim:
                    return []
                if self._local.sifted:
                    continue  # what it claimed could not run (said and recorded): again
                if self._burst and (self.running or self._claiming):
                    self._cond.wait(BURST_RECHECK)  # ours still run and may unblock more
                    continue
            if self._burst:
                self._end_burst_if_over()
                continue
            # nothing may start now: wait for a job for this slot (none claimed ahead)
            self._local.sifted = False
            claimed = self.backend.claim(
                self.slot_name(), self.mode, limit, timeout=timeout, stop=self._claim_stop
            )
            jobs = self._sift(claimed)
            if not claimed and not self._at_hand:
                return []  # stopping, closed, or the timeout passed
            self._keep(self._track(jobs) if jobs else jobs)

    def _end_burst_if_over(self) -> None:
        """(A batching burst slot that found nothing, nothing of its worker running or being
        claimed) end the burst if nothing came back and nothing runs elsewhere, unless a claim
        began meanwhile; else wait a little before looking again."""
        if self._recovered():
            return
        over = not self._others_run()
        with self._cond:
            if self.done.is_set() or self._draining:
                return
            if over and not (self.running or self._claiming or self._at_hand):
                self._mark_done()
            else:
                self._cond.wait(BURST_RECHECK)

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
        self._put_back(jobs)
        with self._cond:
            self._cond.notify_all()
            if not self.running:
                self._changed()

    def _extra(self) -> int:
        recent = self._recent_runtime
        return self._prefetch if recent is not None and recent < PREFETCH_BELOW else 0

    def _write_reports(self, claim: int = 0, extra: int = 0) -> list[ClaimedJob]:
        """Write what is pending (reports, failures, jobs claimed ahead that started) and claim
        up to ``claim`` jobs, plus ``extra`` ahead, in one backend call (not under ``_cond``;
        failures, rare, each in its own); the reported jobs leave :attr:`running`. If the call
        fails, what was not written stays pending for the next call, and the jobs stay
        running (leases renewed)."""
        with self._cond:
            reports, self._reports = self._reports, []
            failures, self._failures = self._failures, []
            started, self._announce = self._announce, []
            since, self._pending_since = self._pending_since, None
            in_flight = {r.job_id for r in reports} | {f.job.id for f in failures}
            self._writing |= in_flight
        if not (reports or failures or started or claim):
            return []
        if reports and started:  # a job reported here needs no word that it started
            ended = {report.job_id for report in reports}
            started = [item for item in started if item[0] not in ended]
        written = 0
        try:
            for failure in failures:
                self._write_failure(failure)
                written += 1
            jobs: list[ClaimedJob] = []
            if reports or started or claim:
                jobs = self.backend.finish_many_and_claim(
                    reports,
                    self.slot_name(),
                    self.mode,
                    claim + extra,
                    stop=self._stopping.is_set,
                    ahead=extra,
                    started=started,
                )
        except BaseException:
            with self._cond:
                self._failures[:0] = failures[written:]
                self._reports[:0] = reports
                self._announce[:0] = started
                if since is not None and (
                    self._pending_since is None or since < self._pending_since
                ):
                    self._pending_since = since
                self._writing -= in_flight
            if (reports or failures) and self._write_failed_since is None:
                self._write_failed_since = time.monotonic()
            raise
        if reports or failures:
            self._write_failed_since = None
        with self._cond:
            self._writing -= in_flight
            running = self.running
            for report in reports:
                job = running.get(report.job_id)
                if job is not None and job.attempt == report.attempt:
                    self._finished_one(job)
                    del running[report.job_id]
            if reports:
                self._cond.notify_all()
                if self._draining and not running:
                    self._changed()
            return self._track(self._sift(jobs)) if jobs else jobs

    def _flush_reports(self) -> None:
        """Write what is pending, if anything; a failure is logged, the reports kept."""
        if self._pending_since is None:
            return
        first = self._write_failed_since is None
        try:
            self._write_reports()
        except Exception as exc:
            self._log_failure(first, "writing the pending reports", exc)

    def _hand_back(self) -> None:
        """Stopping: write the pending reports, put back the jobs at hand (not started)."""
        self._flush_reports()
        with self._cond:
            spare = list(self._at_hand)
            self._at_hand.clear()
            for job in spare:
                self.running.pop(job.id, None)
        self._put_back(spare)

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
            jobs = self._sift(
                self.backend.claim(
                    self.slot_name(),
                    self.mode,
                    allowed,
                    timeout=timeout,
                    stop=self._stopping.is_set,
                )
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
            jobs: list[ClaimedJob] = []
            try:
                if allowed <= 0 or self._draining or self.done.is_set():
                    self.backend.finish(job.id, job.attempt, result)
                else:
                    jobs = self.backend.finish_and_claim(
                        job.id, job.attempt, result, self.slot_name(), self.mode, allowed,
                        timeout=0, stop=self._stopping.is_set,
                    )  # fmt: skip
                    jobs = self._sift(jobs)
                    if self._left is not None:
                        self._left -= len(jobs)
            except Exception as exc:
                report = Finished(job.id, job.attempt, result, None, self.clock.now())
                self._keep_report(report, exc)
            else:
                self._finished_one(job)
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
                claimed = []
                if allowed > 0:
                    claimed = self.backend.claim(self.slot_name(), self.mode, allowed, timeout=0)
                jobs = self._sift(claimed)
                if jobs:
                    if self._left is not None:
                        self._left -= len(jobs)
                    return self._track(jobs)
                if claimed:
                    continue  # none of them could run (said and recorded): look again
                if allowed <= 0:
                    self._mark_done()
                    return []
                if not self.running:
                    if self._recovered():
                        continue
                    if not self._others_run():
                        self._mark_done()
                        return []
                # ours (or others') still run and may unblock more, fail and be retried, or
                # come back when their worker is lost: wait for a change, then look again
                self._cond.wait(BURST_RECHECK)

    # A burst worker that found nothing to start while none of its own jobs runs first
    # recovers the expired leases (jobs whose worker was lost come back: it looks again),
    # then ends only if no job runs anywhere in the queue: one that runs may still fail and
    # be retried, come back when its worker is lost, or unblock others.
    def _recovered(self) -> bool:
        return self.backend.recover_expired(by=self.id) > 0

    def _others_run(self) -> bool:
        return bool(self.backend.query(Status.RUNNING))

    def _mark_done(self) -> None:
        self.done.set()
        with self._cond:
            self._cond.notify_all()
        self._changed()

    # -------------------------------------------------------------- heartbeat
    def _beat_loop(self) -> None:
        # at least once a second: the beat is also how a cancel made in another process
        # reaches the job (its slot is freed within a second, not lease / 3); while batching,
        # it also looks every REPORT_DELAY / 2 for reports held back that long
        interval = min(self.lease / 3, MAX_BEAT_INTERVAL)
        tick = min(interval, REPORT_DELAY / 2) if self._prefetch else interval
        next_beat = time.monotonic() + interval
        while not self._beat_stop.wait(tick):
            if self._check_give_up():
                return  # it stops heartbeating: its leases run out
            now = time.monotonic()
            if now < next_beat:
                since = self._pending_since
                due = since is not None and now - since >= REPORT_DELAY / 2
                if due and self._write_failed_since is None:  # failing: retried at the beat
                    self._flush_reports()
                continue
            next_beat = now + interval
            try:
                self.beat()
            except Exception as exc:  # a backend hiccup must not end the heartbeat
                first = self._beat_trouble_since is None
                if first:
                    self._beat_trouble_since = time.monotonic()
                self._log_failure(first, "the heartbeat", exc)
            else:
                self._beat_trouble_since = None

    def beat(self) -> None:
        """Renew the leases of the running jobs; stop those this worker no longer holds
        (cancelled elsewhere, or recovered after a lost lease); recover expired leases.

        Reports still unwritten are retried first; those that could not be written for a
        lease are dropped, and their jobs' leases no longer renewed."""
        self._flush_reports()  # a report is held back no longer than a beat
        failing, since = self._write_failed_since, self._pending_since
        if failing is not None and since is not None:
            now = time.monotonic()
            if now - failing > self.lease and now - since > self.lease:
                self._drop_unwritten()
        running = self.running.copy()  # one C call: atomic under the GIL
        lost = self.backend.heartbeat(self.id, list(running))
        for job_id in lost:
            job = running.get(job_id)
            if job is not None and self.running.get(job_id) is job:
                self.stop_job(
                    job_id, "it is no longer this worker's (cancelled, or taken back elsewhere)"
                )
        self.backend.recover_expired(by=self.id)  # each job taken back is logged
