"""Reports still to be written, and the give-up clock.

A report is pending while it waits for the next backend call: held back by a batching worker
(at most ``REPORT_DELAY``), or kept after a write that failed (a full disk, a lock held too
long), to be retried with the next call, at the latest by the next beat; its job stays the
worker's meanwhile. A report still unwritten after a lease is dropped and its job left to go
back to the queue when its lease runs out.

:class:`Troubles` notes since when the worker's claims, report writes and heartbeats keep
failing: a worker built with ``give_up`` gives up once one of them kept failing that long.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.records import Failure

if TYPE_CHECKING:
    from conveyor.job import ErrorInfo
    from conveyor.records import Report, RunnableJob
    from conveyor.worker.seam import Seam
    from conveyor.worker.state import WorkerState

log = logging.getLogger("conveyor.worker")

#: a batching worker writes a report it held back at most this long (seconds) after the job
#: ended, plus the time the write takes (its heartbeat thread looks every REPORT_DELAY / 2)
REPORT_DELAY = 0.05


@dataclass(slots=True)
class FailedAttempt:
    """A failed attempt whose report is still to be written, and what it raised (kept once
    the job failed for good, see ``WorkerState.keep_exception``)."""

    job: RunnableJob
    error: ErrorInfo
    exception: BaseException | None
    started: float | None


class Troubles:
    """Since when (monotonic seconds) each kind of backend call of worker ``worker_id`` keeps
    failing; None while it succeeds."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        #: the first failure of a claim since the last success
        self.claims: float | None = None
        #: the first failure to write a report since the last write
        self.writes: float | None = None
        #: the first failure of a heartbeat since the last success
        self.beats: float | None = None

    def log(self, first: bool, what: str, exc: Exception) -> None:
        """Say that ``what`` failed: with the traceback the ``first`` time, then in a line."""
        if first:
            log.warning("worker %s: %s failed", self.worker_id, what, exc_info=exc)
        else:
            log.warning(
                "worker %s: %s failed again: %s: %s", self.worker_id, what, type(exc).__name__, exc
            )

    def claim_failed(self, exc: Exception, what: str) -> None:
        """A slot's claim failed."""
        first = self.claims is None
        if first:
            self.claims = time.monotonic()
        self.log(first, what, exc)

    def write_failed(self, job_id: str, exc: Exception) -> None:
        """The report of ``job_id`` could not be written; it is kept."""
        first = self.writes is None
        if first:
            self.writes = time.monotonic()
        self.log(first, f"writing the report of job {job_id}", exc)
        log.warning(
            "worker %s: the report of job %s is kept and retried (at the next call or beat)",
            self.worker_id,
            job_id,
        )

    def beat_failed(self, exc: Exception) -> None:
        """A heartbeat failed."""
        first = self.beats is None
        if first:
            self.beats = time.monotonic()
        self.log(first, "the heartbeat", exc)

    def failing_for(self) -> tuple[float, str] | None:
        """How long the backend calls have kept failing, and which, if they do."""
        now = time.monotonic()
        spans = [(self.claims, "claims"), (self.writes, "reports"), (self.beats, "heartbeats")]
        failing = [(now - since, what) for since, what in spans if since is not None]
        return max(failing) if failing else None

    def give_up(self, limit: float) -> str | None:
        """Why the worker gives up, if its backend calls kept failing longer than ``limit``."""
        failing = self.failing_for()
        if failing is None or failing[0] <= limit:
            return None
        return f"its {failing[1]} kept failing for {failing[0]:.1f} s"


class Reports:
    """The reports a worker still has to write, guarded by ``state.cond``: finished attempts,
    failures, and the jobs claimed ahead that a slot started (see :meth:`write`)."""

    def __init__(self, state: WorkerState, seam: Seam, troubles: Troubles, lease: float) -> None:
        self.state = state
        self.seam = seam
        self.troubles = troubles
        self.lease = lease
        #: ended attempts, held back or kept after a failed write (their results encoded: a
        #: result that could not be is a failure, see ``Codec.finished``)
        self.finished: list[Report] = []
        #: failed attempts kept after a failed write
        self.failures: list[FailedAttempt] = []
        #: ``(job id, attempt)`` of jobs claimed ahead that a slot has started since
        self.started: list[tuple[str, int]] = []
        #: jobs whose report a backend call is writing right now (not pending, not yet
        #: written: a stop must not put them back, a heartbeat must not stop them)
        self.writing: set[str] = set()
        #: when (monotonic) the oldest pending item came; None: nothing is pending
        self.since: float | None = None

    def pend(self, items: list[Any], item: Any) -> None:
        """(Under ``state.cond``) keep ``item`` to be written, noting when the oldest came."""
        items.append(item)
        if self.since is None:
            self.since = time.monotonic()

    def keep(self, report: Report, exc: Exception) -> None:
        """Writing ``report`` failed with ``exc``: keep it for the next call."""
        with self.state.cond:
            self.pend(self.finished, report)
        self.troubles.write_failed(report.job_id, exc)

    def keep_failure(self, failure: FailedAttempt, exc: Exception) -> None:
        """Writing ``failure`` failed with ``exc``: keep it for the next call."""
        with self.state.cond:
            self.pend(self.failures, failure)
        self.troubles.write_failed(failure.job.id, exc)

    def write_failure(self, failure: FailedAttempt) -> None:
        """Write one failed attempt, say what became of it, and let its job go. What it
        raised is kept before the write (a waiter may read the failure as soon as it is
        written) and forgotten if the job is retried or the report dropped."""
        job, state, exception = failure.job, self.state, failure.exception
        if exception is not None:
            state.keep_exception(job.id, exception)
        report = Failure(job.id, job.attempt, failure.error, failure.started)
        self.writing.add(job.id)  # a heartbeat meanwhile must not stop the job (it ended)
        try:
            (outcome,) = self.seam.report([report]).recorded
        except BaseException:
            self.writing.discard(job.id)
            if exception is not None:
                state.exceptions.pop(job.id, None)
            raise
        if exception is not None and (outcome.retrying or not outcome.held):
            state.exceptions.pop(job.id, None)
        try:
            state.outcomes.failure_written(job, failure.error, outcome)
        finally:
            # said first: a worker that stops once its jobs ended reports the outcome counted
            # under the lock: a retry of the job may already run in another slot, under its id
            self.state.ended(job)
            self.writing.discard(job.id)  # after: a heartbeat looks at it before `running`

    def write(self, claim: int = 0, extra: int = 0) -> list[RunnableJob]:
        """Write what is pending and claim up to ``claim`` jobs, plus ``extra`` ahead, in one
        backend call (not under ``cond``; failures, rare, each in its own); the reported jobs
        leave ``running``. If the call fails, what was not written stays pending for the next
        call, and the jobs stay running (leases renewed)."""
        state = self.state
        with state.cond:
            reports, self.finished = self.finished, []
            failures, self.failures = self.failures, []
            started, self.started = self.started, []
            since, self.since = self.since, None
            in_flight = {r.job_id for r in reports} | {f.job.id for f in failures}
            self.writing |= in_flight
        if not (reports or failures or started or claim):
            return []
        if reports and started:  # a job reported here needs no word that it started
            ended = {report.job_id for report in reports}
            started = [item for item in started if item[0] not in ended]
        written = 0
        try:
            for failure in failures:
                self.write_failure(failure)
                written += 1
            reported = None
            if reports or started or claim:
                if state.stopping.is_set():
                    claim = extra = 0
                reported = self.seam.report(reports, claim + extra, ahead=extra, started=started)
        except BaseException:
            with state.cond:
                self.failures[:0] = failures[written:]
                self.finished[:0] = reports
                self.started[:0] = started
                if since is not None and (self.since is None or since < self.since):
                    self.since = since
                self.writing -= in_flight
            if (reports or failures) and self.troubles.writes is None:
                self.troubles.writes = time.monotonic()
            raise
        if reports or failures:
            self.troubles.writes = None
        jobs = state.sift(reported.claimed) if reported and reported.claimed else []
        with state.cond:
            self.writing -= in_flight
            running = state.running
            if reported is not None:
                for report, recorded in zip(reports, reported.recorded, strict=True):
                    job = running.get(report.job_id)
                    if job is not None and job.attempt == report.attempt:
                        if isinstance(report, Failure):
                            state.outcomes.failure_written(job, report.error, recorded)
                        else:
                            state.outcomes.finished(job)
                        del running[report.job_id]
            if reports:
                state.cond.notify_all()
                if state.draining and not running:
                    state.changed()
            return state.track(jobs) if jobs else jobs

    def flush(self) -> None:
        """Write what is pending, if anything; a failure is logged, the reports kept."""
        if self.since is None:
            return
        first = self.troubles.writes is None
        try:
            self.write()
        except Exception as exc:
            self.troubles.log(first, "writing the pending reports", exc)

    def unwritten_ids(self) -> set[str]:
        """(Under ``state.cond``) the jobs whose report is still to be written, or being
        written."""
        return {r.job_id for r in self.finished} | {f.job.id for f in self.failures} | self.writing

    def drop_stale(self) -> None:
        """Drop the pending reports if writes have failed, and they waited, for a lease."""
        failing, since = self.troubles.writes, self.since
        if failing is not None and since is not None:
            now = time.monotonic()
            if now - failing > self.lease and now - since > self.lease:
                self._drop_unwritten()

    def _drop_unwritten(self) -> None:
        """Give up on the reports unwritten for a lease: their jobs leave the worker, their
        leases are no longer renewed, and they go back to the queue when those run out."""
        state = self.state
        with state.cond:
            reports, self.finished = self.finished, []
            failures, self.failures = self.failures, []
            self.since = time.monotonic() if self.started else None
            dropped = {r.job_id: r.attempt for r in reports}
            dropped.update({f.job.id: f.job.attempt for f in failures})
            for job_id, attempt in dropped.items():
                job = state.running.get(job_id)
                if job is not None and job.attempt == attempt:
                    del state.running[job_id]
            state.cond.notify_all()
            idle = not state.running
        if dropped:
            log.error(
                "worker %s: the reports of %d job(s) could not be written for %g s and are"
                " dropped; their jobs go back to the queue when their lease runs out: %s",
                self.seam.worker_id,
                len(dropped),
                self.lease,
                sorted(dropped),
            )
        if idle and state.draining:
            state.changed()
