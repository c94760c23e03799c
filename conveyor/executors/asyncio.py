"""Run coroutine jobs on one event loop, ``slots`` of them at once.

The loop lives in its own thread. Claims block, so they are made in a helper thread and the
claimed jobs are started as tasks on the loop. A job past its timeout is cancelled
(``asyncio.timeout``); a cancelled job's task is cancelled. A plain function given to an async
queue runs in the loop's default thread pool, so it does not block the other coroutines.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conveyor.context import set_context
from conveyor.executors.base import timeout_message
from conveyor.job import ErrorInfo

if TYPE_CHECKING:
    from conveyor.backends.base import ClaimedJob
    from conveyor.worker import Worker

log = logging.getLogger("conveyor.executors.asyncio")


class AsyncExecutor:
    """One event loop running up to ``slots`` jobs concurrently."""

    mode = "async"

    def __init__(self, slots: int, context: Callable[[], Any] | None = None) -> None:
        self.slots = slots
        self._context = context
        self._worker: Worker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopped_jobs: set[str] = set()
        self._thread: threading.Thread | None = None
        self._claimer = concurrent.futures.ThreadPoolExecutor(1, "conveyor-async-claim")

    def start(self, worker: Worker) -> None:
        self._worker = worker
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._main(),), daemon=True, name="conveyor-async-loop"
        )
        self._thread.start()

    async def _main(self) -> None:
        worker = self._worker
        assert worker is not None
        loop = self._loop = asyncio.get_running_loop()
        if self._context is not None:
            value = self._context()
            set_context(await value if inspect.isawaitable(value) else value)
        free = asyncio.Semaphore(self.slots)
        try:
            while True:
                await free.acquire()
                taken = 1
                while not free.locked():  # claim for every free slot in one round trip
                    await free.acquire()
                    taken += 1
                jobs = await loop.run_in_executor(self._claimer, worker.claim, taken)
                for _ in range(taken - len(jobs)):
                    free.release()
                if not jobs:
                    break
                for job in jobs:
                    self._tasks[job.id] = loop.create_task(self._run(worker, job, free))
            if self._tasks:
                await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        finally:
            self._claimer.shutdown(wait=False)

    async def _run(self, worker: Worker, job: ClaimedJob, free: asyncio.Semaphore) -> None:
        assert job.fn is not None, "async jobs carry their callable"
        try:
            async with asyncio.timeout(job.timeout) as scope:
                if inspect.iscoroutinefunction(job.fn):
                    result = await job.fn(*job.args, **job.kwargs)
                else:
                    result = await asyncio.to_thread(job.fn, *job.args, **job.kwargs)
                    if inspect.isawaitable(result):
                        result = await result
        except TimeoutError as exc:
            if scope.expired():
                assert job.timeout is not None
                worker.failed(job, ErrorInfo("TimeoutError", timeout_message(job.timeout)))
            else:
                worker.failed(job, exc)
        except asyncio.CancelledError:
            if job.id not in self._stopped_jobs:
                worker.failed(job, ErrorInfo("CancelledError", "the job's task was cancelled"))
        except BaseException as exc:
            worker.failed(job, exc)
        else:
            worker.finished(job, result)
        finally:
            self._stopped_jobs.discard(job.id)
            self._tasks.pop(job.id, None)
            free.release()

    def stop_job(self, job_id: str, reason: str) -> None:
        loop = self._loop
        if loop is None:
            return

        def cancel() -> None:
            task = self._tasks.get(job_id)
            if task is not None:
                self._stopped_jobs.add(job_id)
                task.cancel()

        loop.call_soon_threadsafe(cancel)

    def stop(self, *, wait: bool = True, timeout: float | None = None) -> None:
        if wait and self._thread is not None:
            deadline = None if timeout is None else time.monotonic() + timeout
            self._thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
