"""The worker: claims jobs of one mode for an executor's slots, reports how they ended,
heartbeats, and stops gracefully.

::

    backend.claim ──> Worker.claim ──> executor slot runs the job ──> Worker.finished / failed
          ^          (decoded: Codec)                                          │
          └───────────────────────────── backend.report <──────────────────────┘

Each executor slot pulls its own work through :meth:`Worker.claim` (one lock round trip, no
dispatcher thread in between), so an idle slot wakes the moment a job becomes startable. How
claims and reports reach the backend is one of the ways in :mod:`conveyor.worker.claiming`,
chosen once when the worker is built; what is still to be written, and the give-up clock, are
in :mod:`conveyor.worker.reports`; the beat in :mod:`conveyor.worker.heartbeat`.

A backend call that fails (a full disk, a lock held too long) never ends a slot: a report that
could not be written is kept and retried, a claim that failed is retried after a pause. A
worker built with ``give_up`` stops claiming and heartbeating once its backend calls have kept
failing that long, and says why in :attr:`Worker.broken` (``conveyor worker`` then exits with
status 1, for a supervisor to restart it).

The worker decodes what it claims (:mod:`conveyor.worker.decoding`, with the queue's
:class:`~conveyor.worker.decoding.Codec`): a job it cannot run here (refused, or its function
could not be loaded) is reported failed, said and counted (:mod:`conveyor.worker.outcomes`),
and never reaches a slot. It also owns stopping what it runs: a job cancelled is stopped by
:meth:`Worker.stop_job`, called by the Queue that cancelled it or by the heartbeat. Recovering
jobs of dead workers is the backend's job; the heartbeat only asks for it.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conveyor.clock import Clock
from conveyor.records import WorkerInfo
from conveyor.settings import DEFAULT_LEASE
from conveyor.worker.batching import Batched
from conveyor.worker.claiming import Budgeted, Claiming, Direct
from conveyor.worker.decoding import Codec
from conveyor.worker.heartbeat import Heartbeat
from conveyor.worker.outcomes import Outcomes
from conveyor.worker.reports import Reports, Troubles
from conveyor.worker.seam import Seam
from conveyor.worker.state import WorkerState

if TYPE_CHECKING:
    from conveyor.backends.base import Backend
    from conveyor.executors.base import Executor
    from conveyor.job import ErrorInfo
    from conveyor.records import RunnableJob

log = logging.getLogger("conveyor.worker")

_numbers = itertools.count(1)


class Worker:
    """Connects one executor's slots to a backend for jobs of one mode.

    Args:
        backend: where jobs are claimed and reported.
        executor: runs the jobs.
        claims: the mode of the jobs it claims (:attr:`mode`); default: the executor's. A
            process executor may run jobs put in thread mode, say.
        codec: decodes the jobs it claims and encodes their results: the queue's
            (``Queue.codec``: its serializer and the functions it trusts); default: that of
            an in-process backend (``memory://``).
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
            ``max_jobs``, or without a heartbeat): one call per report.
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
        codec: Codec | None = None,
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
        #: why the worker gave up (its backend calls kept failing for ``give_up`` seconds)
        self.broken: str | None = None
        self._give_up = give_up
        self._registered = False
        self._burst = burst
        self._max_jobs = max_jobs
        self._seam = Seam(backend, self.id, self.mode)
        self._outcomes = Outcomes(self.id, self.clock)
        self._state = state = WorkerState(self._seam, self._outcomes, codec or Codec(), on_change)
        #: the jobs this worker runs now, by id
        self.running: dict[str, RunnableJob] = state.running
        #: set once the worker has no more work to claim (burst drained, max_jobs claimed)
        self.done = state.done
        self._troubles = Troubles(self.id)
        self._reports = Reports(state, self._seam, self._troubles, lease)
        self._claims = self._claiming(0 if max_jobs is not None else prefetch)
        self._heartbeat = Heartbeat(
            state,
            self._seam,
            self._reports,
            self._troubles,
            lease=lease,
            stop_job=self.stop_job,
            give_up=self._check_give_up,
        )

    def _claiming(self, prefetch: int) -> Claiming:
        """The way this worker claims and reports: batched with ``prefetch``, else budgeted
        for ``burst`` and ``max_jobs``, else direct."""
        parts = (self._state, self._seam, self._reports, self._troubles, self.clock)
        if prefetch:
            return Batched(*parts, prefetch=prefetch, burst=self._burst)
        if self._burst or self._max_jobs is not None:
            return Budgeted(*parts, burst=self._burst, max_jobs=self._max_jobs)
        return Direct(*parts)

    # ------------------------------------------------------------ life cycle
    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called: slots finish their job and claim no more."""
        return self._state.stopping.is_set()

    @property
    def ran(self) -> int:
        """How many jobs this worker started and did not put back."""
        return self._outcomes.ran()

    def counts(self) -> dict[str, int]:
        """How the attempts this worker ended, so far, ended (see :data:`OUTCOMES`); jobs it
        claimed that could not run (refused, or their function not loaded) are among the
        failed and retried."""
        return self._outcomes.counts()

    def start(self, *, heartbeat: bool = False) -> None:
        """Register the worker and start the executor's slots; with ``heartbeat``, also the
        heartbeat thread (long-running workers on durable backends)."""
        now = self.clock.now()
        self._seam.register(
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
        if not heartbeat and self._claims.holds_back:
            # a report held back is written at the latest by the beat: with none, no batching
            self._claims = self._claiming(0)
        self.executor.start(self)
        if heartbeat:
            self._heartbeat.start(holds_back=self._claims.holds_back)

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
        state = self._state
        state.stopping.set()
        state.draining = True
        with state.cond:
            state.cond.notify_all()
        self._claims.stop_claiming()
        self._seam.wake()
        if not self.running:
            state.changed()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job of this worker runs (or ``timeout``); True if none does."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cond = self._state.cond
        with cond:
            while self.running:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                cond.wait(remaining)
        return True

    def requeue_running(self) -> list[str]:
        """Put every running job back to waiting (attempt not counted) and stop it where it
        runs; a claim that lands afterwards is put back too. Return the ids put back.

        A job that ended but whose report cannot be written is not put back (it ran): it stays
        claimed until its lease runs out, then goes back to the queue with its attempt counted.
        """
        self._reports.flush()  # finished jobs are reported, not put back
        state = self._state
        with state.cond:
            state.refusing = True
            self._claims.clear()
            ended = self._reports.unwritten_ids()
            jobs = [job for job in self.running.values() if job.id not in ended]
            for job in jobs:
                del self.running[job.id]
            state.cond.notify_all()
        for job in jobs:
            # stop it first, so that the slot drops its report rather than racing the requeue
            self.executor.stop_job(job.id, "requeued: its worker is stopping")
        requeued = state.put_back(jobs)
        if requeued:
            log.warning(
                "worker %s put back %d running job(s): %s", self.id, len(requeued), requeued
            )
        return requeued

    def _shutdown(self) -> None:
        self._heartbeat.stop()
        if self._registered:
            self._registered = False
            try:
                self._seam.unregister()
            except Exception as exc:
                log.warning("worker %s: leaving the worker registry failed (%s)", self.id, exc)

    def _check_give_up(self) -> bool:
        """Give up if the backend calls kept failing for ``give_up`` seconds; True if so."""
        if self._give_up is None or self.broken is not None:
            return self.broken is not None
        reason = self._troubles.give_up(self._give_up)
        if reason is None:
            return False
        self.broken = reason
        log.error(
            "worker %s gives up: %s; it stops claiming and heartbeating (its jobs go back to"
            " the queue when their lease runs out)",
            self.id,
            self.broken,
        )
        self._heartbeat.halt()
        try:
            self.stop_claiming()
        except Exception:
            log.exception("worker %s: stopping after giving up failed", self.id)
        self._state.changed()
        return True

    # -------------------------------------------------------- the slots' calls
    def slot_name(self) -> str:
        """Who runs the job, as recorded on it: the worker id and the calling slot thread."""
        return self._seam.slot_name()

    def claim(self, limit: int = 1, timeout: float | None = None) -> list[RunnableJob]:
        """Block until up to ``limit`` jobs may start; ``[]`` when the worker is stopping
        (or, with ``burst`` or ``max_jobs``, has no more work to claim, or it gave up).

        A claim that fails is retried after a pause (logged); so are the reports still
        unwritten, first."""
        return self._claims.claim(limit, timeout)

    def finished(self, job: RunnableJob, result: Any, *, claim_next: int = 0) -> list[RunnableJob]:
        """Report that ``job`` returned ``result``; with ``claim_next``, claim that many more
        in the same backend call (blocking like :meth:`claim`).

        A job leaves :attr:`running` only once its report is recorded, so a worker that stops
        once nothing runs never exits with a report still on its way. A report that could not
        be written is kept and retried; the job stays the worker's meanwhile.
        """
        return self._claims.finished(job, result, claim_next)

    def failed(self, job: RunnableJob, error: BaseException | ErrorInfo) -> None:
        """Report that ``job`` failed (it raised, timed out, or its process died). A report
        that could not be written is kept and retried; the job stays the worker's meanwhile."""
        self._claims.failed(job, error)

    def progress(self, job: RunnableJob, fraction: float, message: str | None) -> None:
        """Record the progress ``job`` reported (``conveyor.progress``); the backend drops it
        if the attempt no longer holds the job. A backend that fails is logged, never raised
        into the job: progress is advice, and the job's report is what counts."""
        try:
            self._seam.progress(job, fraction, message)
        except Exception as exc:
            log.warning(
                "worker %s: the progress of job %s was not recorded: %s",
                self.id,
                job.id,
                exc,
                extra={"job_id": job.id, "task": job.task, "attempt": job.attempt},
            )

    def stop_job(self, job_id: str, reason: str) -> None:
        """Stop ``job_id`` where it runs (it was cancelled); its report will be dropped."""
        self._claims.drop(job_id)
        job = self.running.get(job_id)
        if job is not None:
            self._outcomes.stopped(job, reason)
            self._state.ended(job)
        self.executor.stop_job(job_id, reason)

    def exception(self, job_id: str) -> BaseException | None:
        """What job ``job_id`` raised, if this worker ran it and failed it for good (the last
        ``KEPT_EXCEPTIONS`` such jobs)."""
        return self._state.exceptions.get(job_id)

    def beat(self) -> None:
        """Renew the leases of the running jobs; stop those this worker no longer holds
        (cancelled elsewhere, or recovered after a lost lease); recover expired leases.

        Reports still unwritten are retried first; those that could not be written for a
        lease are dropped, and their jobs' leases no longer renewed."""
        self._heartbeat.beat()
