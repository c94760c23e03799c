"""How a worker's slots claim jobs and report them: one small class per way, chosen once when
the worker is built.

- :class:`Direct`: one backend call per report; a slot's report and its next claim share it.
- :class:`Budgeted` (``burst``, ``max_jobs``): careful claims that count a budget, and a burst
  that ends once nothing may start and nothing runs anywhere.
- :class:`~conveyor.worker.batching.Batched` (``prefetch``): claims ahead while jobs run
  short, and holds reports back to write them with the next claim.

What they share (:class:`Claiming`): a claim that fails is retried after a growing pause, the
reports still unwritten are written first, and a failed attempt is reported in a call of its
own (failures are rare).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from conveyor.job import ErrorInfo
from conveyor.records import Failure, Finished
from conveyor.worker.reports import FailedAttempt

if TYPE_CHECKING:
    from conveyor.clock import Clock
    from conveyor.records import Report, Reported, RunnableJob
    from conveyor.worker.reports import Reports, Troubles
    from conveyor.worker.seam import Seam
    from conveyor.worker.state import WorkerState

#: seconds a slot waits before it retries a backend call that failed, doubling up to RETRY_MAX
RETRY_FIRST = 0.05
RETRY_MAX = 1.0

#: a burst slot that found nothing startable while the worker's other jobs run re-checks this
#: often (seconds), so a job put by another process meanwhile is not left for the end
BURST_RECHECK = 0.5


class Claiming:
    """The claims and reports of one worker's slots (subclasses say how they reach the
    backend: :meth:`take` and :meth:`finished`)."""

    #: reports wait for the next backend call (a claim, a beat, a stop) instead of their own
    holds_back = False
    #: how many jobs are claimed ahead of the slots at most
    prefetch = 0

    def __init__(
        self,
        state: WorkerState,
        seam: Seam,
        reports: Reports,
        troubles: Troubles,
        clock: Clock,
    ) -> None:
        self.state = state
        self.seam = seam
        self.reports = reports
        self.troubles = troubles
        self.clock = clock

    def claim(self, limit: int = 1, timeout: float | None = None) -> list[RunnableJob]:
        """Block until up to ``limit`` jobs may start (see ``Worker.claim``). A claim that
        fails is retried after a pause (logged); so are the reports still unwritten, first."""
        state, reports, troubles = self.state, self.reports, self.troubles
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = RETRY_FIRST
        while True:
            if reports.failures or (reports.finished and not self.holds_back):
                reports.flush()
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            state.local.sifted = False
            try:
                jobs = self.take(limit, remaining)
            except Exception as exc:
                troubles.claim_failed(exc, "claiming jobs")
                if state.draining or (deadline is not None and time.monotonic() >= deadline):
                    return []
                state.stopping.wait(pause if deadline is None else min(pause, remaining or 0))
                pause = min(pause * 2, RETRY_MAX)
                continue
            if troubles.claims is not None:
                troubles.claims = None
            if not jobs and state.local.sifted:
                continue  # every job claimed could not run (said and recorded): claim again
            return jobs

    def take(self, limit: int, timeout: float | None) -> list[RunnableJob]:
        """One try of :meth:`claim`: the jobs claimed and tracked (raises if the backend
        does)."""
        raise NotImplementedError

    def finished(self, job: RunnableJob, result: Any, claim_next: int) -> list[RunnableJob]:
        """Report that ``job`` returned ``result``; claim ``claim_next`` more (see
        ``Worker.finished``)."""
        raise NotImplementedError

    def failed(self, job: RunnableJob, error: BaseException | ErrorInfo) -> None:
        """Report that ``job`` failed; a report that could not be written is kept."""
        started = self.taken(job)
        if isinstance(error, BaseException):
            failure = FailedAttempt(job, ErrorInfo.of(error), error, started)
        else:
            failure = FailedAttempt(job, error, None, started)
        reports = self.reports
        if reports.failures or (reports.finished and not self.holds_back):
            reports.flush()
        try:
            reports.write_failure(failure)
        except Exception as exc:
            reports.keep_failure(failure, exc)

    def taken(self, job: RunnableJob) -> float | None:
        """When a slot took ``job`` from the jobs claimed ahead (queue clock); None: at its
        claim."""
        return None

    def stop_claiming(self) -> None:
        """The worker stops claiming: let go of what was claimed for later."""

    def drop(self, job_id: str) -> None:
        """``job_id`` was stopped: never give it to a slot."""

    def clear(self) -> None:
        """(Under ``state.cond``) the running jobs are put back: forget those claimed ahead."""

    def _keep(self, report: Report, exc: Exception) -> None:
        """Writing ``report`` failed: keep it (ended now, if it does not say when)."""
        if report.ended is None:
            report = report._replace(ended=self.clock.now())
        self.reports.keep(report, exc)

    def _written(self, job: RunnableJob, report: Report, reported: Reported) -> None:
        """Say what became of the report of ``job`` (a result that could not be stored is a
        failure)."""
        outcomes = self.state.outcomes
        if isinstance(report, Failure):
            outcomes.failure_written(job, report.error, reported.recorded[0])
        else:
            outcomes.finished(job)


class Direct(Claiming):
    """One backend call per claim and per report; a slot's report and its next claim share
    one (the default)."""

    def take(self, limit: int, timeout: float | None) -> list[RunnableJob]:
        state = self.state
        jobs = self.seam.claim(limit, timeout, state.stopping.is_set)
        return state.track(state.sift(jobs)) if jobs else []

    def finished(self, job: RunnableJob, result: Any, claim_next: int) -> list[RunnableJob]:
        reports = self.reports
        if reports.failures or reports.finished:
            reports.flush()
        state = self.state
        codec = state.codec
        report: Report
        if codec.serializer is None:  # in process: the result as it is (the common path)
            report = Finished(job.id, job.attempt, result)
        else:
            report = codec.finished(job, result)
        writing = reports.writing  # a heartbeat meanwhile must not stop the job (it ended)
        writing.add(job.id)
        try:
            # no waiting inside: the finished job must leave `running` before this slot idles
            claim = 0 if state.draining else claim_next
            reported = self.seam.report([report], claim)
        except Exception as exc:
            self._keep(report, exc)
            writing.discard(job.id)
            return self.claim(claim_next) if claim_next else []
        if report.__class__ is Finished:
            state.outcomes.finished(job)
        else:
            self._written(job, report, reported)
        jobs = reported.claimed
        running = state.running
        if running.get(job.id) is job:
            del running[job.id]
        writing.discard(job.id)  # after: a heartbeat looks at `writing` before `running`
        if state.draining:
            state.ended(None)
        runnable = state.sift(jobs) if jobs else []
        if runnable:
            return state.track(runnable)
        if claim_next:
            return self.claim(claim_next)
        return runnable


class Budgeted(Claiming):
    """Careful claims for ``burst`` and ``max_jobs`` workers: claims count against the budget
    of ``max_jobs`` (None: no limit), and a ``burst`` claims only what may start now.

    A burst worker that finds nothing to start, with none of its own jobs running, recovers
    the expired leases and ends only if no job runs anywhere in the queue: a job that runs may
    still fail and be retried, come back when its worker is lost, or unblock others."""

    def __init__(
        self,
        state: WorkerState,
        seam: Seam,
        reports: Reports,
        troubles: Troubles,
        clock: Clock,
        *,
        burst: bool,
        max_jobs: int | None,
    ) -> None:
        super().__init__(state, seam, reports, troubles, clock)
        self.burst = burst
        self.left = max_jobs  # jobs still to claim (None: no limit)
        self.reserved = 0  # of left, held by claims in progress

    def take(self, limit: int, timeout: float | None) -> list[RunnableJob]:
        if self.burst:
            return self._take_burst(limit)
        state = self.state
        with state.cond:
            assert self.left is not None
            allowed = min(limit, self.left - self.reserved)
            if allowed <= 0 or state.draining:
                return []  # the rest of the budget is held by claims in progress
            self.reserved += allowed
        jobs: list[RunnableJob] = []
        try:
            jobs = state.sift(self.seam.claim(allowed, timeout, state.stopping.is_set))
        finally:
            with state.cond:
                self.reserved -= allowed
                self.left -= len(jobs)
                exhausted = self.left == 0
        tracked = state.track(jobs) if jobs else jobs
        if exhausted and not state.done.is_set():
            state.mark_done()  # after tracking: whoever wakes on it sees the jobs running
        return tracked

    def finished(self, job: RunnableJob, result: Any, claim_next: int) -> list[RunnableJob]:
        """The report and the next claim share one backend call when the budget allows,
        under the lock their claims take."""
        reports = self.reports
        if reports.failures or reports.finished:
            reports.flush()
        state = self.state
        with state.cond:
            left = self.left
            allowed = claim_next if left is None else min(claim_next, left - self.reserved)
            if allowed <= 0 or state.draining or state.done.is_set():
                allowed = 0
            jobs: list[RunnableJob] = []
            report = state.codec.finished(job, result)
            try:
                reported = self.seam.report([report], 0 if state.draining else allowed)
                if reported.claimed:
                    jobs = state.sift(reported.claimed)
                    if self.left is not None:
                        self.left -= len(jobs)
            except Exception as exc:
                self._keep(report, exc)
            else:
                self._written(job, report, reported)
                state.ended(job)
            tracked = state.track(jobs) if jobs else jobs
        if self.left == 0 and not state.done.is_set():
            state.mark_done()
        if tracked or not claim_next:
            return tracked
        return self.claim(claim_next)

    def _take_burst(self, limit: int) -> list[RunnableJob]:
        """Claim what may start now. Claims and the ends of jobs (popped only after their
        report) go through one lock, so "nothing startable and nothing of ours running" is
        decided on a consistent view: a job that ours would unblock is never left behind."""
        state = self.state
        with state.cond:
            while True:
                if state.draining or state.done.is_set():
                    return []
                allowed = limit if self.left is None else min(limit, self.left)
                claimed = []
                if allowed > 0:
                    claimed = self.seam.claim(allowed, 0)
                jobs = state.sift(claimed)
                if jobs:
                    if self.left is not None:
                        self.left -= len(jobs)
                    return state.track(jobs)
                if claimed:
                    continue  # none of them could run (said and recorded): look again
                if allowed <= 0:
                    state.mark_done()
                    return []
                if not state.running:
                    if self.seam.recover_expired() > 0:
                        continue
                    if not self.seam.others_run():
                        state.mark_done()
                        return []
                # ours (or others') still run and may unblock more, fail and be retried, or
                # come back when their worker is lost: wait for a change, then look again
                state.cond.wait(BURST_RECHECK)
