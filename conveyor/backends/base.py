"""The Backend protocol: the narrow seam between conveyor and where its jobs live.

A backend stores jobs and decides: every scheduling rule (:mod:`conveyor.rules`) is applied inside
it, because only there can it be atomic -- under the memory backend's lock, in one SQLite
transaction, in one Lua script. Everything else is built once on top of these primitives: waiting
for results, for idle, done callbacks and progress (:mod:`conveyor.backends.waiting`), decoding and
running jobs, stopping them (:mod:`conveyor.worker`).

What crosses this seam is data a Lua script could hold: ids, numbers, text, bytes and the records
of :mod:`conveyor.records`. No method takes or returns a callable or a live exception, and a
backend never calls back into the Queue or a Worker. The one exception to "bytes" is the in-process
backend: there a job's payload and result are the Python objects themselves, which it stores and
hands back untouched (it never looks inside them).

Each method is one atomic step unless its docstring says otherwise. Blocking happens in exactly
one place, :meth:`Backend.wait`.

The worker registry is its own small protocol, :class:`WorkerRegistry`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol, runtime_checkable

from conveyor.job import JobRecord, Outcome, Status
from conveyor.records import Cancelled, ClaimedJob, JobSpec, Report, Reported, WorkerInfo

#: the ``mode`` of :meth:`Backend.version` and :meth:`Backend.wait` for what waits on jobs'
#: ends (a result, idle, an ended job to pop, done callbacks): its version must grow with every
#: change that ends a job or changes an ended one, and may leave out the others (a job queued
#: or started, progress), which a backend shared across processes may then not even publish
ENDS = "<ends>"


class WorkerRegistry(Protocol):
    """Which workers serve a queue (``conveyor status``, the dashboard, lease recovery)."""

    def register_worker(self, info: WorkerInfo) -> None:
        """Record a worker that started."""
        ...

    def unregister_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped."""
        ...

    def workers(self, *, include_lost: bool = False) -> list[WorkerInfo]:
        """The workers seen within their own lease; with ``include_lost``, also those silent
        for longer that are not forgotten yet."""
        ...


class Backend(WorkerRegistry, Protocol):
    """Stores jobs and applies the scheduling rules atomically (one engine,
    :mod:`conveyor.rules`); a backend also keeps its queue's :class:`WorkerRegistry`."""

    #: True when other processes change the same jobs (a waiter cannot rely on this process's
    #: events alone to learn that a job ended)
    shared: bool

    # ------------------------------------------------------------------ jobs in
    def submit(
        self, specs: Sequence[JobSpec], *, block: bool = True, timeout: float | None = None
    ) -> list[str]:
        """Store all ``specs`` or none of them; return their ids, in order.

        Atomic: ids are new, dependencies known (or earlier in ``specs``), no cycle. A spec
        whose unique key is held returns the holder's id instead. Waits (up to ``timeout``)
        for room under ``max_size`` unless ``block`` is False (then raises QueueFull).
        """
        ...

    # ---------------------------------------------------------- the worker's side
    def claim(self, worker: str, mode: str, limit: int = 1, *, ahead: int = 0) -> list[ClaimedJob]:
        """Start up to ``limit`` jobs of ``mode`` for ``worker`` (``"<worker id>/<slot>"``);
        return them, best first. Never blocks (:meth:`wait` does).

        Atomic: each job's rules are checked and the keys it holds taken in the same step.
        The last ``ahead`` jobs are claimed ahead of the worker's slots: a durable backend
        counts their attempt only once a report names them ``started``.
        """
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
        slot makes one round trip per job).

        Each report is a :class:`~conveyor.records.Finished` or a
        :class:`~conveyor.records.Failure`; one whose attempt no longer holds its job
        (cancelled, recovered after a lost lease) is dropped. A failure is retried if the job
        has retries left and the failure is not ``final``, else the job fails and cascades.
        ``started`` names ``(job, attempt)`` claimed ahead that a slot has since started.
        The answer says, per report, what became of it, and lists the jobs claimed.
        """
        ...

    def requeue(self, job_id: str, attempt: int) -> bool:
        """Put a running attempt back to waiting without counting it (a worker that stops);
        False if the attempt no longer holds the job."""
        ...

    def heartbeat(self, worker: str, ids: Collection[str]) -> set[str]:
        """Renew the leases of ``ids`` (jobs ``worker`` runs) and the worker's last_seen;
        return the ids it must stop: no longer running under ``worker`` (cancelled, or
        recovered after a lost lease)."""
        ...

    def progress(
        self, job_id: str, attempt: int, fraction: float, message: str | None = None
    ) -> bool:
        """Record how far a running attempt got (``conveyor.progress``): the job's
        ``progress`` and ``progress_message`` become ``fraction`` and ``message``, and the
        ``progress`` event is emitted. False, and nothing changed, if ``attempt`` no longer
        holds the job (cancelled, retried, recovered after a lost lease).

        Atomic: the attempt is checked and the record changed in one step, so a late value
        never lands on another attempt or on an ended job. Raises TypeError or ValueError
        (see :func:`conveyor.tracking.check`) for a value that cannot be recorded. A job's
        progress is cleared when an attempt starts and kept when it ends. No status changes,
        but :meth:`version` grows: whoever watches the records (the HTTP API's event feed)
        is woken by it."""
        ...

    def recover_expired(self, *, by: str | None = None) -> int:
        """Return jobs whose lease ran out (their worker died) to the queue, attempt counted;
        return how many. ``by`` names the worker that asks, for the log."""
        ...

    # ------------------------------------------------------------------ control
    def cancel(self, job_id: str, reason: str = "cancelled") -> Cancelled:
        """End a job that has not ended as cancelled, with the cascade (dependents, lanes).
        The answer says whether it was still active, and which worker slot ran it if it was
        running: that worker learns it from its next report or heartbeat. Raises UnknownJob."""
        ...

    def retry(self, job_id: str) -> None:
        """Put a failed or cancelled job back to waiting (attempts reset, how it ended kept in
        ``meta["conveyor.history"]``). Raises UnknownJob, or InvalidJob (nothing changed) when
        it is not failed or cancelled, a dependency of it did not finish, or another job holds
        its unique key."""
        ...

    def purge(
        self,
        statuses: Collection[Status],
        task: str | None = None,
        before: float | None = None,
    ) -> int:
        """Drop the jobs in ``statuses`` (of ``task``) that ended -- or, not started, were
        submitted -- before ``before`` (queue clock); waiting and scheduled ones are cancelled
        first, with the cascade. Return how many. Raises InvalidJob for ``running``."""
        ...

    # ------------------------------------------------------------------ reading
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

    # ------------------------------------------------------------------ waiting
    def version(self, mode: str | None = None) -> int:
        """A number that grows with every change of the jobs (with ``mode``: with every change
        that may let a job of ``mode`` start; with :data:`ENDS`, with every change that ends a
        job or changes an ended one). Read it before looking at the state, then hand it to
        :meth:`wait`: no change is missed in between."""
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


@runtime_checkable
class WaitsForJobs(Protocol):
    """A backend that waits for one job's end better than by :meth:`Backend.wait` (Redis: the
    step that ends the job leaves a note for the waiting thread, and no message goes to every
    process); ``Job.result()`` and ``Job.wait()`` use it."""

    def wait_job(self, job_id: str, timeout: float | None = None) -> JobRecord:
        """Block until the job has ended; its record, results decoded. Raises TimeoutError,
        UnknownJob, QueueClosed."""
        ...
