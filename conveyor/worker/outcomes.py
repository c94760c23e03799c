"""Saying and counting what happened to each job a worker ended.

Everything is said on the logger ``conveyor.worker``, from what the backend recorded: an
attempt that failed and is retried (INFO, with the next attempt and when), a job failed for
good or refused (WARNING), a job stopped because it was cancelled (INFO), each finished job
(DEBUG). :meth:`Outcomes.counts` counts them (see :data:`OUTCOMES`).
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.clock import Clock
    from conveyor.job import ErrorInfo
    from conveyor.records import ClaimedJob, Recorded, RunnableJob

    #: a job as the worker claimed it, or decoded
    AnyJob = ClaimedJob | RunnableJob

log = logging.getLogger("conveyor.worker")

#: how the attempts a worker ended are counted (:meth:`Worker.counts`): finished, failed for
#: good (refused jobs too), failed and retried, cancelled (stopped where they ran), put back
OUTCOMES = ("finished", "failed", "retried", "cancelled", "put back")


def job_fields(job: AnyJob) -> dict[str, Any]:
    """A job's fields for a log record (``extra``; the JSON log format makes them keys)."""
    return {"job_id": job.id, "task": job.task, "attempt": job.attempt}


def first_line(error: ErrorInfo) -> str:
    """``Type: message`` up to the message's first line break."""
    return str(error).split("\n", 1)[0]


class Tally:
    """A counter bumped by many threads without a lock (``next`` on ``itertools.count`` is
    atomic); reading it consumes one number, so reads are counted and serialised."""

    def __init__(self) -> None:
        self._count = itertools.count()
        self.bump = self._count.__next__
        self._reads = 0
        self._lock = threading.Lock()

    def value(self) -> int:
        """How many bumps so far."""
        with self._lock:
            value = next(self._count) - self._reads
            self._reads += 1
        return value


class Outcomes:
    """Says and counts how the attempts of worker ``worker_id`` ended (``clock``: the queue's,
    for when a retry is due)."""

    def __init__(self, worker_id: str, clock: Clock) -> None:
        self.worker_id = worker_id
        self.clock = clock
        #: jobs claimed (and tracked as running)
        self.claimed = Tally()
        #: jobs put back (their attempt not counted)
        self.requeued = 0
        self._tallies = {outcome: Tally() for outcome in OUTCOMES}

    def counts(self) -> dict[str, int]:
        """How the attempts ended so far, by :data:`OUTCOMES`."""
        counts = {outcome: tally.value() for outcome, tally in self._tallies.items()}
        counts["put back"] = self.requeued
        return counts

    def ran(self) -> int:
        """How many jobs were started and not put back."""
        return self.claimed.value() - self.requeued

    def finished(self, job: RunnableJob) -> None:
        """``job`` finished and its report was written."""
        self._tallies["finished"].bump()
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s: job %s (task %s, attempt %d) finished",
                self.worker_id,
                job.id,
                job.task,
                job.attempt,
                extra={**job_fields(job), "outcome": "finished"},
            )

    def failure_written(self, job: AnyJob, error: ErrorInfo, outcome: Recorded) -> None:
        """The failure of ``job`` was written; ``outcome`` is the backend's answer (not
        ``held``: the attempt no longer held the job, and the report was dropped)."""
        if not outcome.held:
            log.debug(
                "%s: the failure of job %s (attempt %d) was dropped: the job no longer held"
                " this attempt (cancelled, or taken back meanwhile)",
                self.worker_id,
                job.id,
                job.attempt,
                extra=job_fields(job),
            )
        else:
            self.failed(job, error, outcome)

    def failed(
        self, job: AnyJob, error: ErrorInfo, outcome: Recorded, *, refused: bool = False
    ) -> None:
        """A failed attempt as the backend recorded it: retried, or failed for good
        (``refused``: the job could not run here, and no retry can mend it)."""
        first = first_line(error)
        fields = {**job_fields(job), "error_type": error.type, "error": first}
        if outcome.retry_at is not None:
            self._tallies["retried"].bump()
            wait = outcome.retry_at - self.clock.now()
            log.info(
                "%s: job %s (task %s) attempt %d failed: %s; attempt %d %s",
                self.worker_id,
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
            self._tallies["failed"].bump()
            log.warning(
                "%s: job %s (task %s) %s: %s",
                self.worker_id,
                job.id,
                job.task,
                "refused" if refused else f"failed (attempt {job.attempt}, no retry left)",
                first,
                extra={**fields, "outcome": "refused" if refused else "failed"},
            )
        if error.traceback and log.isEnabledFor(logging.DEBUG):
            log.debug("%s: the traceback of job %s:\n%s", self.worker_id, job.id, error.traceback)

    def stopped(self, job: RunnableJob, reason: str) -> None:
        """``job`` was stopped where it ran (cancelled, or no longer this worker's)."""
        self._tallies["cancelled"].bump()
        log.info(
            "%s: job %s (task %s, attempt %d) stopped: %s",
            self.worker_id,
            job.id,
            job.task,
            job.attempt,
            reason,
            extra={**job_fields(job), "outcome": "cancelled"},
        )
