"""Run jobs in the caller's thread as soon as they may start (for tests and debugging).

``drain`` claims without blocking and runs each job right there, so a put returns after its
job (and whatever it unblocked) has run. A timeout cannot be enforced on the caller's own
thread: inline jobs run to completion.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from conveyor.executors.thread import run_call

if TYPE_CHECKING:
    from conveyor.executors.base import JobSource


class InlineExecutor:
    """No threads: the queue calls :meth:`drain` after each put and wait."""

    mode = "inline"
    slots = 1

    def __init__(self) -> None:
        self._worker: JobSource | None = None
        self._local = threading.local()

    def start(self, worker: JobSource) -> None:
        self._worker = worker

    def drain(self) -> int:
        """Run every job that may start now; return how many ran."""
        worker = self._worker
        if worker is None or getattr(self._local, "draining", False):
            return 0  # a job that puts another job: the outer drain picks it up
        self._local.draining = True
        ran = 0
        try:
            while jobs := worker.claim(1, timeout=0):
                job = jobs[0]
                try:
                    result = run_call(job, worker)
                except BaseException as exc:
                    worker.failed(job, exc)
                else:
                    worker.finished(job, result)
                ran += 1
        finally:
            self._local.draining = False
        return ran

    def stop_job(self, job_id: str, reason: str) -> None:
        """An inline job runs in the caller's thread; there is nothing to stop from outside."""

    def stop(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Nothing runs in the background."""
