"""Every call a worker makes to its backend, one method per concern.

The rest of the worker speaks of jobs (claim some, report how some ended, put one back, beat)
and never names a backend method: when the Backend protocol changes, this module is what
changes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

from conveyor.errors import QueueClosed
from conveyor.job import Status
from conveyor.records import Failure, Recorded, Reported

if TYPE_CHECKING:
    from conveyor.backends.base import Backend
    from conveyor.records import ClaimedJob, Report, RunnableJob, WorkerInfo

#: a report dropped (its attempt no longer held the job, or the backend closed)
DROPPED = Recorded(False)


class Seam:
    """The backend as worker ``worker_id`` sees it, claiming jobs of ``mode``."""

    def __init__(self, backend: Backend, worker_id: str, mode: str) -> None:
        self.backend = backend
        self.worker_id = worker_id
        self.mode = mode
        self._slot = threading.local()  # the calling slot's name, made once per thread

    def slot_name(self) -> str:
        """Who runs the job, as recorded on it: the worker id and the calling slot thread."""
        try:
            name: str = self._slot.name
        except AttributeError:
            name = self._slot.name = f"{self.worker_id}/{threading.current_thread().name}"
        return name

    # ------------------------------------------------------------------- claims
    def claim(
        self,
        limit: int,
        timeout: float | None,
        stop: Callable[[], bool] | None = None,
        *,
        since: int | None = None,
    ) -> list[ClaimedJob]:
        """Claim up to ``limit`` jobs for the calling slot, waiting up to ``timeout`` for one
        (None: until one may start, ``stop()`` is true or the backend closes).

        The backend's claim never blocks: when nothing may start, the slot waits for a change
        that may let a job of its mode start (the version read before the claim, so none is
        missed), looking at ``stop()`` before each claim; a worker that stops wakes it. With
        ``since`` (the :meth:`version` read before a claim of the caller's that found nothing),
        the first claim waits for a change after it."""
        backend, mode, slot = self.backend, self.mode, self.slot_name()
        try:
            if timeout is not None and timeout <= 0:
                return [] if stop is not None and stop() else backend.claim(slot, mode, limit)
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                if stop is not None and stop():
                    return []
                if since is None:
                    since = backend.version(mode)
                    jobs = backend.claim(slot, mode, limit)
                    if jobs:
                        return jobs
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                backend.wait(since, remaining, mode=mode)
                since = None
        except QueueClosed:
            return []

    def version(self) -> int:
        """The backend's version of this worker's mode (see ``Backend.version``)."""
        return self.backend.version(self.mode)

    # ------------------------------------------------------------------ reports
    def report(
        self,
        reports: Sequence[Report],
        claim: int = 0,
        *,
        ahead: int = 0,
        started: Sequence[tuple[str, int]] = (),
    ) -> Reported:
        """Report how attempts ended, tell which jobs claimed ahead started, and claim up to
        ``claim`` jobs (the last ``ahead`` of them ahead of the slots), in one step that never
        blocks. Once the backend is closed, reports of finished attempts are dropped (nothing
        can be written, nor claimed); a failure's report raises QueueClosed."""
        try:
            return self.backend.report(
                reports,
                worker=self.slot_name(),
                mode=self.mode,
                claim=claim,
                ahead=ahead,
                started=started,
            )
        except QueueClosed:
            if any(isinstance(report, Failure) for report in reports):
                raise
            return Reported([DROPPED] * len(reports), [])

    def requeue(self, job: RunnableJob) -> bool:
        """Put ``job`` back to waiting, its attempt not counted; False if it was no longer
        this attempt's."""
        return self.backend.requeue(job.id, job.attempt)

    def progress(self, job: RunnableJob, fraction: float, message: str | None) -> bool:
        """Record how far ``job`` got; False if it was no longer this attempt's."""
        return self.backend.progress(job.id, job.attempt, fraction, message)

    # ---------------------------------------------------------------- heartbeat
    def heartbeat(self, ids: Collection[str]) -> set[str]:
        """Renew the leases of ``ids``; the ids no longer this worker's."""
        return self.backend.heartbeat(self.worker_id, ids)

    def stop_pending(self) -> bool:
        """True if the backend heard that a job this worker runs was cancelled elsewhere (a
        backend that hears of it at once has ``stops_pending``; the heartbeat then beats
        now rather than at its interval)."""
        pending = getattr(self.backend, "stops_pending", None)
        return bool(pending is not None and pending(self.worker_id))

    def recover_expired(self) -> int:
        """Return to the queue the jobs whose lease ran out; how many."""
        return self.backend.recover_expired(by=self.worker_id)

    def others_run(self) -> bool:
        """True if any job runs anywhere in the queue."""
        return bool(self.backend.query(Status.RUNNING))

    def wake(self) -> None:
        """Wake the slots blocked in a claim, to look at their stop condition again."""
        self.backend.wake()

    # ----------------------------------------------------------------- registry
    def register(self, info: WorkerInfo) -> None:
        """Enter the worker registry."""
        self.backend.register_worker(info)

    def unregister(self) -> None:
        """Leave the worker registry."""
        self.backend.unregister_worker(self.worker_id)
