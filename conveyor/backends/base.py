"""The Backend protocol: one method per state change, each atomic.

Every scheduling rule of DESIGN §2 lives behind these methods, inside the backend, because only
there can it be atomic (the memory lock, one SQLite transaction, one Lua script). The facade
validates input and builds :class:`JobSpec`; workers call ``claim`` and ``report``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from conveyor.job import JobRecord, Status
from conveyor.records import Cancelled, ClaimedJob, JobSpec, Report, Reported, WorkerInfo


class Backend(Protocol):
    """Stores jobs and enforces the scheduling rules atomically."""

    def submit(
        self, specs: Sequence[JobSpec], *, block: bool = True, timeout: float | None = None
    ) -> list[str]:
        """Store all ``specs`` or none of them; return their ids.

        Atomic: ids unique, dependencies known (or earlier in ``specs``), no cycle. A spec whose
        unique key is held returns the holder's id instead. Waits for room under ``max_size``
        unless ``block`` is False (then raises QueueFull).
        """
        ...

    def claim(
        self,
        worker: str,
        mode: str,
        limit: int = 1,
        *,
        timeout: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> list[ClaimedJob]:
        """Mark up to ``limit`` startable jobs of ``mode`` running for ``worker``; return them.

        Blocks until at least one may start, ``timeout`` passes, ``stop()`` is true or the
        backend closes (then returns ``[]``). Atomic: every rule of DESIGN §2 is checked and the
        job's lane, groups and concurrency slot are taken in the same step.
        """
        ...

    def heartbeat(self, worker: str, ids: Collection[str]) -> set[str]:
        """Renew the leases of ``ids`` and the worker's last_seen; return the ids no longer
        running under ``worker`` (cancelled, or recovered after a lost lease).

        A job's recorded worker is ``"<worker id>/<slot>"``; it belongs to ``worker`` when it
        starts with ``worker + "/"``.
        """
        ...

    def register_worker(self, info: WorkerInfo) -> None:
        """Record a worker that started (``conveyor status`` lists them)."""
        ...

    def unregister_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped."""
        ...

    def workers(self, *, include_lost: bool = False) -> list[WorkerInfo]:
        """The workers known to be alive (seen within their own lease); with
        ``include_lost``, also those whose lease ran out and that are not forgotten yet."""
        ...

    def report(
        self,
        reports: Sequence[Report],
        *,
        worker: str,
        mode: str,
        claim: int = 0,
        ahead: int = 0,
        started: Sequence[tuple[str, int]] = (),
    ) -> Reported:
        """Record how attempts ended, then claim up to ``claim`` jobs: one atomic step (a busy
        slot makes one round trip per job). Never blocks.

        Each report is a :class:`~conveyor.records.Finished` or a
        :class:`~conveyor.records.Failure`; one whose attempt no longer holds its job
        (cancelled, recovered after a lost lease) is dropped. A failure is retried if the job
        has retries left and the failure is not ``final``, else the job fails and cascades.
        ``started`` names ``(job, attempt)`` claimed ahead that a slot has since started.
        The answer says, per report, what became of it, and lists the jobs claimed.
        """
        ...

    def requeue(self, job_id: str, attempt: int) -> bool:
        """Put a running attempt back to waiting without counting it (graceful shutdown)."""
        ...

    def cancel(self, job_id: str, reason: str = "cancelled") -> Cancelled:
        """End a job that has not ended as cancelled, with the cascade (dependents, lanes).
        The answer says whether it was still active, and which worker slot ran it if it was
        running: that worker learns it from its next report or heartbeat. Raises UnknownJob."""
        ...

    def get(self, job_id: str) -> JobRecord:
        """The job's record; raises UnknownJob."""
        ...

    def query(self, status: Status | None = None) -> list[JobRecord]:
        """Records of all jobs (or of one status), in submission order."""
        ...

    def counts(self) -> dict[Status, int]:
        """How many jobs are in each status."""
        ...

    def pop_finished(
        self, limit: int | None = None, *, timeout: float | None = 0
    ) -> list[JobRecord]:
        """Remove and return ended jobs in the order they ended; wait up to ``timeout`` for one."""
        ...

    def forget(self, job_id: str) -> None:
        """Drop an ended job and its result; raises UnknownJob, or InvalidJob if still active."""
        ...

    def wait_done(self, job_id: str, timeout: float | None = None) -> JobRecord:
        """Block until the job has ended (or ``timeout``: TimeoutError); return its record."""
        ...

    def wait_results(
        self, job_ids: Sequence[str], timeout: float | None = None, *, first_failure: bool = False
    ) -> list[tuple[Status, Any, str | None]]:
        """Wait until every job has ended (or, with ``first_failure``, one did not finish);
        return ``(status, result, error)`` for each, in order. Raises TimeoutError."""
        ...

    def forget_many(self, job_ids: Collection[str]) -> None:
        """Forget every ended job among ``job_ids``; leave the others alone."""
        ...

    def add_done_callback(self, job_id: str, callback: Callable[[JobRecord], object]) -> None:
        """Call ``callback(record)`` once the job has ended (at once if it has)."""
        ...

    def wait_idle(
        self,
        timeout: float | None = None,
        on_change: Callable[[dict[Status, int]], object] | None = None,
    ) -> int:
        """Block until no job is waiting, scheduled or running; return how many still are."""
        ...

    def recover_expired(self, *, by: str | None = None) -> int:
        """Return jobs whose lease ran out to the queue; return how many. Each is logged,
        naming ``by`` (the worker that recovers them)."""
        ...

    def wake(self) -> None:
        """Wake every blocked ``claim`` so it re-checks its ``stop`` condition."""
        ...

    def close(self) -> None:
        """Release resources and wake every blocked call."""
        ...

    def retry(self, job_id: str) -> None:
        """Put a failed or cancelled job back to waiting: attempts reset, started, ended,
        worker, result and error cleared, and how it ended (:func:`history_entry`) appended
        to ``meta[HISTORY]``.

        Its unique key is taken again (InvalidJob if another active job holds it); it rejoins
        its lane in its place (priority, submission), and an idle lane forgets its last
        failure (no stop_on_lane_error short-circuit); dependencies that finished or are gone
        are satisfied, active ones are awaited again, a failed or cancelled one refuses the
        retry (InvalidJob: retry that one first). Dependents cancelled by its end stay
        cancelled. An ``expires`` that has passed no longer applies. Raises UnknownJob, or
        InvalidJob if the job is not failed or cancelled; on refusal nothing changes.
        """
        ...

    def purge(
        self,
        statuses: Collection[Status],
        task: str | None = None,
        before: float | None = None,
    ) -> int:
        """Drop the jobs in ``statuses`` (of ``task``, if given) that ended (or, not started,
        were submitted) before ``before`` (queue-clock epoch seconds); return how many.

        Waiting and scheduled jobs are cancelled first (their dependents are cancelled by
        the cascade, as with cancel). Raises InvalidJob for ``running``: running jobs are
        never purged.
        """
        ...
