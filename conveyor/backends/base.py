"""The Backend protocol: one method per state change, each atomic.

Every scheduling rule of DESIGN §2 lives behind these methods, inside the backend, because only
there can it be atomic (the memory lock, one SQLite transaction, one Lua script). The facade
validates input and builds :class:`JobSpec`; workers call ``claim`` / ``finish`` / ``fail``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from conveyor.job import ErrorInfo, JobRecord, Outcome, Status
from conveyor.records import ClaimedJob, Failed, Finished, JobSpec, WorkerInfo


class Backend(Protocol):
    """Stores jobs and enforces the scheduling rules atomically."""

    #: True when other processes change the same jobs (a waiter cannot rely on this process's
    #: events alone to learn that a job ended)
    shared: bool

    def submit(
        self, specs: Sequence[JobSpec], *, block: bool = True, timeout: float | None = None
    ) -> list[str]:
        """Store all ``specs`` or none of them; return their ids.

        Atomic: ids unique, dependencies known (or earlier in ``specs``), no cycle. A spec whose
        unique key is held returns the holder's id instead. Waits for room under ``max_size``
        unless ``block`` is False (then raises QueueFull).
        """
        ...

    def claim(self, worker: str, mode: str, limit: int = 1, *, ahead: int = 0) -> list[ClaimedJob]:
        """Start up to ``limit`` jobs of ``mode`` for ``worker`` (``"<worker id>/<slot>"``);
        return them, best first. Never blocks (:meth:`wait` does).

        Atomic: each job's rules are checked and the keys it holds taken in the same step.
        The last ``ahead`` jobs are claimed ahead of the worker's slots: a durable backend
        counts their attempt only once a report names them ``started``.
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

    def finish(self, job_id: str, attempt: int, result: Any) -> bool:
        """Record success of ``attempt``; False if the attempt no longer holds the job."""
        ...

    def finish_and_claim(
        self,
        job_id: str,
        attempt: int,
        result: Any,
        worker: str,
        mode: str,
        limit: int = 1,
        *,
        timeout: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> list[ClaimedJob]:
        """``finish`` then ``claim`` in one atomic step (one round trip for a busy slot)."""
        ...

    def finish_many_and_claim(
        self,
        finished: Sequence[Finished],
        worker: str,
        mode: str,
        limit: int,
        *,
        stop: Callable[[], bool] | None = None,
        ahead: int = 0,
        started: Sequence[tuple[str, int]] = (),
    ) -> list[ClaimedJob]:
        """Record every finished attempt (those that no longer hold their job are dropped),
        then claim up to ``limit`` jobs, in one atomic step; never blocks. The last ``ahead``
        jobs claimed are claimed ahead of the worker's slots, and ``started`` names the
        ``(job, attempt)`` claimed ahead that a slot has since started: a durable backend
        counts the attempt of a job claimed ahead only once it started."""
        ...

    def fail(
        self,
        job_id: str,
        attempt: int,
        error: ErrorInfo,
        exception: BaseException | None = None,
        *,
        started: float | None = None,
    ) -> Failed | None:
        """Record a failed attempt: schedule a retry if any are left, else fail and cascade;
        return which (None if the attempt no longer holds the job: the report is dropped).
        ``started``: when the attempt really started, if later than its claim."""
        ...

    def requeue(self, job_id: str, attempt: int) -> bool:
        """Put a running attempt back to waiting without counting it (graceful shutdown)."""
        ...

    def cancel(self, job_id: str, reason: str = "cancelled") -> bool:
        """Cancel a job that has not ended; cascade to dependents and stop_on_lane_error lanes."""
        ...

    def get(self, job_id: str) -> JobRecord:
        """The job's record; raises UnknownJob."""
        ...

    def query(
        self, status: Status | None = None, *, ids: Sequence[str] | None = None
    ) -> list[JobRecord]:
        """Records of all jobs, of one status, or of the jobs ``ids`` that exist, in
        submission order."""
        ...

    def outcomes(self, ids: Sequence[str]) -> list[Outcome]:
        """``(status, result, error)`` of each job of ``ids``, in that order (what a caller
        waiting for results reads, without building records); UnknownJob if one is gone."""
        ...

    def counts(self) -> dict[Status, int]:
        """How many jobs are in each status."""
        ...

    def pop_ended(self, limit: int | None = None) -> list[JobRecord]:
        """Remove and return up to ``limit`` ended jobs, in the order they ended. Never blocks."""
        ...

    def forget(self, job_ids: Collection[str], *, strict: bool = False) -> int:
        """Drop ended jobs and their results; return how many. Active or unknown ids are left
        alone, unless ``strict``: then the first such id raises (UnknownJob, InvalidJob) and
        nothing is dropped."""
        ...

    def recover_expired(self, *, by: str | None = None) -> int:
        """Return jobs whose lease ran out to the queue; return how many. Each is logged,
        naming ``by`` (the worker that recovers them)."""
        ...

    def set_stop_hook(self, hook: Callable[[str, str], object] | None) -> None:
        """Call ``hook(job_id, reason)`` when a running job must be stopped where it runs."""
        ...

    # ------------------------------------------------------------------ waiting
    def version(self, mode: str | None = None) -> int:
        """A number that grows with every change of the jobs (with ``mode``: with every change
        that may let a job of ``mode`` start). Read it before looking at the state, then hand
        it to :meth:`wait`: no change is missed in between."""
        ...

    def wait(self, since: int, timeout: float | None, *, mode: str | None = None) -> int:
        """Block until :meth:`version` (of ``mode``) is past ``since``, a timer of the queue
        falls due, :meth:`wake` or :meth:`close` is called, or ``timeout`` passes; return the
        version. The one blocking primitive: everything that waits is built on it."""
        ...

    def wake(self) -> None:
        """Make every blocked :meth:`wait` return now (a worker that stops, a clock moved)."""
        ...

    def close(self) -> None:
        """Release resources; every blocked :meth:`wait` returns, and later calls may raise
        QueueClosed."""
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
