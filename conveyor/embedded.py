"""The workers a Queue runs in its own process (``Queue(workers=N)``), one per mode.

Each starts at the first call that needs it, not when the queue is built: a put of a job of
its mode starts that mode's worker; a call that waits for jobs (``wait``, ``result``,
``get(wait=True)``, a job handle's ``result``, ``wait`` or ``await``) starts the queue
mode's. So importing an app that builds ``Queue(url, workers=4)`` starts nothing, and the
command line can use the app's queue object as it is. Once :meth:`EmbeddedWorkers.stop`
has run (``Queue.close``, or the command line taking the queue over), none starts again:
the queue is a producer from then on.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from conveyor.executors import build as build_executor
from conveyor.executors.inline import InlineExecutor
from conveyor.worker import Worker

if TYPE_CHECKING:
    from conveyor.backends.base import Backend
    from conveyor.clock import Clock
    from conveyor.settings import Settings
    from conveyor.worker.decoding import Codec


def check_not_reimported() -> None:
    """Refuse to start workers from the top level of a script that a new process imports
    again (as ``__mp_main__``: the forkserver, or a spawned worker process): the script lacks
    the ``if __name__ == "__main__":`` guard, and its jobs would run again there.

    It raises SystemExit naming the guard, not an Exception that the script could catch and
    carry on from: the import fails, the new process ends, and the process that started it
    refuses to run jobs in processes, naming the guard too
    (:func:`conveyor.executors.process.check_can_start`)."""
    process = sys.modules.get("multiprocessing.process")
    if process is None or not getattr(process.current_process(), "_inheriting", False):
        return
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_name != "<module>":
        frame = frame.f_back  # the module whose top level uses the queue
    if frame is not None and frame.f_globals.get("__name__") == "__mp_main__":
        raise SystemExit(
            f"conveyor: the script {frame.f_globals.get('__file__', '')} is being imported"
            " again by a new process (that is how worker processes start) and puts or waits"
            " for jobs of a queue with workers at its top level: put that code under"
            ' `if __name__ == "__main__":`'
        )


class EmbeddedWorkers:
    """A queue's own workers: ``slots`` slots per mode, started when first needed.

    Args:
        backend: the queue's backend.
        codec: how the workers decode what they claim (the queue's, ``Queue.codec``).
        settings: the queue's settings (``lease``, ``prefetch``, ``max_jobs_per_process``).
        clock: the queue's clock.
        slots: slots per worker; 0 starts none (a producer-only queue).
        mode: the queue's mode, whose worker a wait for jobs starts.
        context: run once in each slot before its first job (``Queue(context=...)``).
        durable: whether the backend is shared with other processes: the workers then
            heartbeat (others recover expired leases), batch their backend calls, and put
            their running jobs back at once when stopped without waiting.
    """

    def __init__(
        self,
        backend: Backend,
        settings: Settings,
        clock: Clock,
        codec: Codec,
        *,
        slots: int,
        mode: str,
        context: Callable[[], Any] | None,
        durable: bool,
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.clock = clock
        self.codec = codec
        self.slots = slots
        self.mode = mode
        self.context = context
        self.durable = durable
        self._workers: dict[str, Worker] = {}
        self._lock = threading.Lock()
        self._stopped = not slots

    @property
    def active(self) -> bool:
        """Whether the queue runs its jobs in workers of its own (now, or once needed)."""
        return not self._stopped

    @property
    def modes(self) -> tuple[str, ...]:
        """The modes whose workers run now."""
        return tuple(self._workers)

    def start(self, mode: str | None = None) -> Worker | None:
        """The worker of ``mode`` (default: the queue's), started now if it is not running
        yet; None if the queue runs no workers of its own.

        Raises:
            ConveyorError: worker processes cannot start here (``mode="process"`` in a
                script without the ``__main__`` guard).
            SystemExit: this is such a script's top level, imported again by a new process
                (:func:`check_not_reimported`).
        """
        worker = self._workers.get(mode or self.mode)
        if worker is not None or self._stopped:
            return worker
        with self._lock:
            mode = mode or self.mode
            worker = self._workers.get(mode)
            if worker is None and not self._stopped:
                worker = self._started(mode)
                self._workers[mode] = worker
            return worker

    def _started(self, mode: str) -> Worker:
        check_not_reimported()
        if mode == "process":
            from conveyor.executors.process import check_can_start

            check_can_start()  # fails fast where processes would never start
        executor = build_executor(
            mode,
            self.slots,
            context=self.context,
            max_jobs_per_process=self.settings.max_jobs_per_process,
        )
        worker = Worker(
            self.backend,
            executor,
            lease=self.settings.lease,
            clock=self.clock,
            prefetch=self.settings.prefetch if self.durable else 0,
            codec=self.codec,
        )
        # on a durable backend other processes recover expired leases: keep ours fresh
        worker.start(heartbeat=self.durable)
        return worker

    def inline(self) -> InlineExecutor | None:
        """The executor of the inline worker, if it runs: its jobs run in the caller's
        thread, when it drains them."""
        worker = self._workers.get("inline")
        if worker is not None and isinstance(worker.executor, InlineExecutor):
            return worker.executor
        return None

    def drain_inline(self) -> None:
        """Run the inline jobs that may start now, in this thread (nothing if none runs)."""
        executor = self.inline()
        if executor is not None:
            executor.drain()

    def stop_job(self, slot: str, job_id: str, reason: str) -> None:
        """Stop ``job_id`` if one of these workers runs it (it was cancelled): the one
        ``slot`` (``"<worker id>/<slot>"``, as the job records who runs it) names."""
        worker_id = slot.rpartition("/")[0]
        for worker in list(self._workers.values()):
            if worker.id == worker_id:
                worker.stop_job(job_id, reason)

    def exception(self, job_id: str) -> BaseException | None:
        """What job ``job_id`` raised, if one of these workers failed it for good (and still
        keeps it)."""
        for worker in list(self._workers.values()):
            exception = worker.exception(job_id)
            if exception is not None:
                return exception
        return None

    def stop(self, wait: bool = True) -> None:
        """Stop the workers; none starts again. With ``wait``, their running jobs end first;
        without, a durable backend's running jobs go back to the queue now (rather than after
        their lease) and in-process ones are left to end on their own."""
        with self._lock:
            self._stopped = True
            workers = list(self._workers.values())
        for worker in workers:  # still listed while they stop: a cancel reaches them
            if wait:
                worker.stop(None)
            elif self.durable:
                worker.stop(0)
            else:
                worker.stop(wait=False)
        with self._lock:
            self._workers.clear()
