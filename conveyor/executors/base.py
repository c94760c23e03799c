"""The Executor protocol: one strategy per execution model (thread, process, async, inline),
the :class:`JobSource` its slots pull jobs from (a worker), and what every executor's slots
share: bounded waits, the pause after a fault, the report that is made again until it lands.

Executors know jobs only as records (:class:`~conveyor.records.RunnableJob`) and their source
only through :class:`JobSource`: they import neither the worker nor the backends."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from conveyor.clock import MAX_WAIT
from conveyor.errors import QueueClosed

if TYPE_CHECKING:
    from conveyor.job import ErrorInfo
    from conveyor.records import RunnableJob

log = logging.getLogger("conveyor.executors")

# MAX_WAIT (conveyor.clock): lock and condition waits refuse more than threading.TIMEOUT_MAX,
# poll() more than 2**31 - 1 ms (about 24.8 days); a longer wait is made of several


#: a slot that hit an unexpected error pauses FAULT_PAUSE seconds before it goes on, doubling
#: while the errors go on, up to FAULT_PAUSE_MAX; a stop cuts the pause short
FAULT_PAUSE = 0.05
FAULT_PAUSE_MAX = 2.0


class JobSource(Protocol):
    """Where an executor's slots get their jobs and report how they ended (a worker)."""

    @property
    def id(self) -> str:
        """Who runs the jobs (for log lines)."""
        ...

    @property
    def running(self) -> Mapping[str, RunnableJob]:
        """The jobs claimed and not yet reported (nor put back, nor taken away), by id."""
        ...

    @property
    def stopping(self) -> bool:
        """True once the source stops: a slot ends its job and claims no more."""
        ...

    def slot_name(self) -> str:
        """The calling slot, as a job's recorded worker names it (for log lines)."""
        ...

    def claim(self, limit: int = 1, timeout: float | None = None) -> list[RunnableJob]:
        """Block until up to ``limit`` jobs may start (or ``timeout``); ``[]``: no more."""
        ...

    def finished(self, job: RunnableJob, result: Any, *, claim_next: int = 0) -> list[RunnableJob]:
        """``job`` returned ``result``; with ``claim_next``, claim that many more."""
        ...

    def failed(self, job: RunnableJob, error: BaseException | ErrorInfo) -> None:
        """``job`` failed (it raised, timed out, or its process died)."""
        ...

    def progress(self, job: RunnableJob, fraction: float, message: str | None) -> None:
        """``job`` reported how far it got (``conveyor.progress``); never raises."""
        ...


class Executor(Protocol):
    """Runs claimed jobs in its slots and enforces their timeouts.

    Each slot loops: ``worker.claim()``, run the job, ``worker.finished()`` or
    ``worker.failed()``, until ``worker.claim()`` returns nothing. An unexpected error in a
    slot's loop does not end the slot: it is logged, the job the slot held is reported failed
    (a report that raises is made again, see :func:`report`), and the slot goes on after a
    :class:`Pause`.
    """

    mode: str
    slots: int

    def start(self, worker: JobSource) -> None:
        """Start the slots; they claim through ``worker``."""
        ...

    def stop_job(self, job_id: str, reason: str) -> None:
        """Stop a running job (cancelled); no report follows."""
        ...

    def stop(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Stop the slots; with ``wait``, after their running jobs end."""
        ...


def timeout_message(seconds: float) -> str:
    """The error text of a job stopped at its timeout."""
    return f"job exceeded its timeout of {seconds:g} s and was stopped"


def log_timeout(logger: logging.Logger, worker: str, job: RunnableJob, how: str) -> None:
    """Say that ``job`` passed its timeout and ``how`` it is stopped (its failure follows)."""
    logger.info(
        "%s: job %s (task %s, attempt %d) passed its timeout of %g s: %s",
        worker,
        job.id,
        job.task,
        job.attempt,
        job.timeout,
        how,
        extra={"job_id": job.id, "task": job.task, "attempt": job.attempt, "timeout": job.timeout},
    )


def bounded(seconds: float) -> float:
    """``seconds`` as one wait that any blocking primitive accepts: 0 to MAX_WAIT (a longer,
    infinite or NaN wait becomes MAX_WAIT; the caller waits again)."""
    if not seconds < MAX_WAIT:
        return MAX_WAIT
    return max(0.0, seconds)


def join(thread: threading.Thread, timeout: float | None = None) -> None:
    """``thread.join(timeout)`` for any timeout, however long."""
    if timeout is None:
        thread.join()
        return
    deadline = time.monotonic() + timeout
    while thread.is_alive():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        thread.join(bounded(remaining))


class Pause:
    """The pause of a slot after an unexpected error: FAULT_PAUSE seconds, doubling at each
    error in a row up to FAULT_PAUSE_MAX; :meth:`reset` after a success."""

    def __init__(self) -> None:
        self._next = FAULT_PAUSE

    def reset(self) -> None:
        """The slot worked again: the next error pauses briefly."""
        self._next = FAULT_PAUSE

    def take(self) -> float:
        """The seconds to pause now (and double the next pause)."""
        seconds = self._next
        self._next = min(seconds * 2, FAULT_PAUSE_MAX)
        return seconds

    def wait(self, cut_short: Callable[[], bool]) -> None:
        """Pause, checking ``cut_short`` (a stop, say) every FAULT_PAUSE seconds."""
        deadline = time.monotonic() + self.take()
        while not cut_short():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(remaining, FAULT_PAUSE))


def holds(worker: JobSource, job: RunnableJob) -> bool:
    """True while ``job`` is one of ``worker``'s running jobs (its report has not landed, and
    it was not put back or taken from the worker)."""
    return worker.running.get(job.id) is job


def report(
    worker: JobSource,
    job: RunnableJob,
    outcome: tuple[bool, Any],
    pause: Pause,
    claim_next: int = 0,
) -> list[RunnableJob]:
    """Report how ``job`` ended, ``(True, result)`` or ``(False, error)``; after a success,
    claim ``claim_next`` more (see :meth:`JobSource.finished`) and return them.

    A report that raises (the storage is full, or gone for a moment) is logged and made again
    after a growing pause for as long as the job is still the worker's, so the job is never
    left running with its lease renewed forever. It is made again without the claim (which may
    be what fails, a new job needing room the report does not), and making it again is safe: a
    backend drops a report of an attempt that is no longer running. :class:`QueueClosed`
    propagates (nothing can be reported any more)."""
    while True:
        jobs = report_once(worker, job, outcome, claim_next)
        if jobs is not None:
            return jobs
        claim_next = 0  # again without a claim: a report may land when a claim cannot
        pause.wait(lambda: not holds(worker, job))
        if not holds(worker, job):
            return []  # put back (the worker stopped), or its report landed meanwhile


def report_once(
    worker: JobSource, job: RunnableJob, outcome: tuple[bool, Any], claim_next: int = 0
) -> list[RunnableJob] | None:
    """One try of :func:`report`: the jobs claimed after it, or None if it raised (logged)
    and ``job`` is still the worker's, to be reported again after a pause."""
    ok, value = outcome
    try:
        if ok:
            return worker.finished(job, value, claim_next=claim_next)
        worker.failed(job, value)
        return []
    except QueueClosed:
        raise
    except Exception:
        if not holds(worker, job):  # the report landed; the claim after it failed
            log.exception("%s: claiming after the report of job %s", worker.slot_name(), job.id)
            return []
        log.exception(
            "%s: reporting job %s failed; it is reported again", worker.slot_name(), job.id
        )
        return None
