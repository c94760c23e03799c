"""The Job handle: a job id and a way back to its queue.

The handle knows its queue only through :class:`JobQueue`, what it uses of it: this module
does not import :mod:`conveyor.queue` (which imports it).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Protocol

from conveyor.job import TERMINAL, JobRecord, Status

if TYPE_CHECKING:
    from conveyor.backends.waiting import Waiter


class Workers(Protocol):
    """The queue's own workers, as a handle sees them."""

    def start(self, mode: str | None = None) -> object:
        """Start them if they run and have not started yet."""
        ...


class JobQueue(Protocol):
    """What a handle uses of its queue (:class:`conveyor.Queue`)."""

    @property
    def embedded(self) -> Workers: ...
    @property
    def waiter(self) -> Waiter: ...
    def status(self, job_id: str) -> Status: ...
    def result(self, job_id: str, timeout: float | None = None) -> Any: ...
    def cancel(self, job_id: str) -> bool: ...
    def retry(self, job_id: str) -> Job: ...
    def job(self, job_id: str) -> JobRecord: ...


class Job:
    """A handle on one submitted job. Cheap to create; holds no state of its own."""

    __slots__ = ("id", "queue")

    def __init__(self, queue: JobQueue, job_id: str) -> None:
        self.queue = queue
        self.id = job_id

    @property
    def status(self) -> Status:
        """The job's status now."""
        return self.queue.status(self.id)

    def done(self) -> bool:
        """True once the job finished, failed or was cancelled."""
        return self.status in TERMINAL

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job and return its result.

        Raises:
            JobFailed: the job failed (the remote error and traceback are on it).
            JobCancelled: the job was cancelled (``reason`` says why).
            TimeoutError: ``timeout`` seconds passed first.
            UnknownJob: the job was popped or forgotten.
        """
        return self.queue.result(self.id, timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job has ended; False if ``timeout`` passed first."""
        self.queue.embedded.start()  # the queue's own workers, if it runs any
        try:
            self.queue.waiter.wait_done(self.id, timeout)
        except TimeoutError:
            return False
        return True

    def cancel(self) -> bool:
        """Cancel the job (stopping it if it runs); False if it had already ended."""
        return self.queue.cancel(self.id)

    def retry(self) -> Job:
        """Put the job back if it failed or was cancelled (see :meth:`Queue.retry`)."""
        return self.queue.retry(self.id)

    def record(self) -> JobRecord:
        """A snapshot of everything known about the job."""
        return self.queue.job(self.id)

    def add_done_callback(self, callback: Callable[[Job], object]) -> None:
        """Call ``callback(job)`` once the job has ended (at once if it has)."""
        self.queue.embedded.start()
        self.queue.waiter.add_done_callback(self.id, lambda _record: callback(self))

    def __await__(self) -> Generator[Any, None, Any]:
        import asyncio  # here, not at the top: most programs never await a job

        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not ended.done():
                ended.set_result(None)

        def wake(_record: JobRecord) -> None:
            loop.call_soon_threadsafe(settle)

        self.queue.embedded.start()
        self.queue.waiter.add_done_callback(self.id, wake)
        yield from ended.__await__()
        return self.queue.result(self.id, 0)

    def __repr__(self) -> str:
        return f"<Job {self.id!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id and other.queue is self.queue

    def __hash__(self) -> int:
        return hash(self.id)
