"""The worker: claims jobs of one mode for an executor's slots and reports how they ended.

::

    backend.claim ──> Worker.claim ──> executor slot runs the job ──> Worker.finished / failed
          ^                                                                   │
          └─────────────────────── backend.finish / fail <─────────────────────┘

Each executor slot pulls its own work through :meth:`Worker.claim` (one lock round trip, no
dispatcher thread in between), so an idle slot wakes the moment a job becomes startable.
Recovering jobs of dead workers is the backend's job, not the worker's.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import traceback
from typing import TYPE_CHECKING, Any

from conveyor.job import ErrorInfo

if TYPE_CHECKING:
    from conveyor.backends.base import Backend, ClaimedJob
    from conveyor.executors.base import Executor

log = logging.getLogger("conveyor.worker")
_numbers = itertools.count(1)


def error_info(exc: BaseException) -> ErrorInfo:
    """Describe an exception so it can cross processes: type, message, traceback text."""
    text = "".join(traceback.format_exception(exc))
    return ErrorInfo(type(exc).__qualname__, str(exc), text)


class Worker:
    """Connects one executor's slots to a backend for jobs of one mode."""

    def __init__(self, backend: Backend, executor: Executor, *, name: str | None = None) -> None:
        self.backend = backend
        self.executor = executor
        self.mode = executor.mode
        self.id = name or f"{socket.gethostname()}:{os.getpid()}:{self.mode}-{next(_numbers)}"
        self._stopping = threading.Event()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called: slots finish their job and claim no more."""
        return self._stopping.is_set()

    def start(self) -> None:
        """Start the executor's slots."""
        self.executor.start(self)

    def claim(self, limit: int = 1, timeout: float | None = None) -> list[ClaimedJob]:
        """Block until up to ``limit`` jobs may start; ``[]`` when the worker is stopping."""
        return self.backend.claim(
            self.slot_name(), self.mode, limit, timeout=timeout, stop=self._stopping.is_set
        )

    def slot_name(self) -> str:
        """Who runs the job, as recorded on it: the worker id and the calling slot thread."""
        return f"{self.id}/{threading.current_thread().name}"

    def finished(self, job: ClaimedJob, result: Any, *, claim_next: int = 0) -> list[ClaimedJob]:
        """Report that ``job`` returned ``result``; with ``claim_next``, claim that many more
        in the same backend call (blocking like :meth:`claim`)."""
        if not claim_next:
            self.backend.finish(job.id, job.attempt, result)
            return []
        return self.backend.finish_and_claim(
            job.id,
            job.attempt,
            result,
            self.slot_name(),
            self.mode,
            claim_next,
            stop=self._stopping.is_set,
        )

    def failed(self, job: ClaimedJob, error: BaseException | ErrorInfo) -> None:
        """Report that ``job`` failed (it raised, timed out, or its process died)."""
        if isinstance(error, BaseException):
            self.backend.fail(job.id, job.attempt, error_info(error), error)
        else:
            self.backend.fail(job.id, job.attempt, error)

    def stop_job(self, job_id: str, reason: str) -> None:
        """Stop ``job_id`` where it runs (it was cancelled); its report will be dropped."""
        self.executor.stop_job(job_id, reason)

    def stop(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Stop claiming; with ``wait``, let running jobs finish (up to ``timeout`` seconds)."""
        self._stopping.set()
        self.backend.wake()
        self.executor.stop(wait=wait, timeout=timeout)
