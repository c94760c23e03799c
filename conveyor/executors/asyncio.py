"""Run coroutine jobs on one event loop, ``slots`` of them at once.

The loop lives in its own thread. Claims block, so they are made in a helper thread and the
claimed jobs are started as tasks on the loop. A job past its timeout is cancelled
(``asyncio.timeout``); a cancelled job's task is cancelled. A plain function given to an async
queue runs in the loop's default thread pool, so it does not block the other coroutines.

An unexpected error (a claim or a report that raises) does not end the loop: it is logged,
and the claim or report is made again after a growing pause.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conveyor.context import set_context
from conveyor.errors import QueueClosed
from conveyor.executors.base import (
    FAULT_PAUSE,
    JobSource,
    Pause,
    holds,
    join,
    log_timeout,
    report_once,
    timeout_message,
)
from conveyor.job import ErrorInfo
from conveyor.tracking import tracking

if TYPE_CHECKING:
    from conveyor.records import RunnableJob

log = logging.getLogger("conveyor.executors.asyncio")


async def _pause(pause: Pause, cut_short: Callable[[], bool]) -> None:
    """:meth:`Pause.wait` without blocking the loop."""
    deadline = time.monotonic() + pause.take()
    while not cut_short():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        await asyncio.sleep(min(remaining, FAULT_PAUSE))


class AsyncExecutor:
    """One event loop running up to ``slots`` jobs concurrently."""

    mode = "async"

    def __init__(self, slots: int, context: Callable[[], Any] | None = None) -> None:
        self.slots = slots
        self._context = context
        self._worker: JobSource | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopped_jobs: set[str] = set()
        self._thread: threading.Thread | None = None
        self._claimer = concurrent.futures.ThreadPoolExecutor(1, "conveyor-async-claim")

    def start(self, worker: JobSource) -> None:
        self._worker = worker
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._main(),), daemon=True, name="conveyor-async-loop"
        )
        self._thread.start()

    async def _main(self) -> None:
        worker = self._worker
        assert worker is not None
        loop = self._loop = asyncio.get_running_loop()
        free = asyncio.Semaphore(self.slots)
        pause = Pause()
        try:
            await self._set_context(worker, pause)
            while True:
                await free.acquire()
                taken = 1
                while not free.locked():  # claim for every free slot in one round trip
                    await free.acquire()
                    taken += 1
                jobs = await self._claim(worker, taken, pause)
                for _ in range(taken - len(jobs or ())):
                    free.release()
                if jobs is None:
                    continue  # the claim failed: it was logged, and the pause taken
                if not jobs:
                    break
                for job in jobs:
                    self._tasks[job.id] = loop.create_task(self._run(worker, job, free))
            if self._tasks:
                await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        finally:
            self._claimer.shutdown(wait=False)

    async def _set_context(self, worker: JobSource, pause: Pause) -> None:
        """Run the context function once before the first claim (again while it raises)."""
        while self._context is not None and not worker.stopping:
            try:
                value = self._context()
                set_context(await value if inspect.isawaitable(value) else value)
                return
            except Exception:
                log.exception("%s: the context function failed", worker.slot_name())
                await _pause(pause, lambda: worker.stopping)

    async def _claim(self, worker: JobSource, limit: int, pause: Pause) -> list[RunnableJob] | None:
        """Up to ``limit`` jobs (``[]``: nothing more to claim), or None if the claim raised."""
        loop = asyncio.get_running_loop()
        try:
            jobs = await loop.run_in_executor(self._claimer, worker.claim, limit)
        except QueueClosed:
            return []
        except Exception:
            log.exception("%s: claiming failed", worker.slot_name())
            if worker.stopping:
                return []  # no retry of a claim that would not be made
            await _pause(pause, lambda: worker.stopping)
            return None
        pause.reset()
        return jobs

    async def _run(self, worker: JobSource, job: RunnableJob, free: asyncio.Semaphore) -> None:
        try:
            outcome = await self._call(job)
            if outcome is not None:
                await self._report(worker, job, outcome)
        except Exception as exc:
            log.exception("%s: unexpected error running job %s", worker.slot_name(), job.id)
            if holds(worker, job):
                await self._report(worker, job, (False, exc))
        finally:
            self._stopped_jobs.discard(job.id)
            self._tasks.pop(job.id, None)
            free.release()

    async def _call(self, job: RunnableJob) -> tuple[bool, Any] | None:
        """Run ``job``: ``(True, result)``, ``(False, error)``, or None if it was stopped
        (cancelled by :meth:`stop_job`: nothing to report). ``conveyor.progress`` in it
        reports to the worker (the context variable is this task's own)."""
        worker = self._worker
        assert worker is not None
        with tracking(functools.partial(worker.progress, job)):
            return await self._outcome(job)

    async def _outcome(self, job: RunnableJob) -> tuple[bool, Any] | None:
        """What :meth:`_call` returns, the job run under its timeout."""
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
                how = "its coroutine is cancelled"
                if not inspect.iscoroutinefunction(job.fn):
                    how = "it is given up (its thread runs on, its result dropped)"
                worker = self._worker.id if self._worker is not None else "?"
                log_timeout(log, worker, job, how)
                return False, ErrorInfo("TimeoutError", timeout_message(job.timeout))
            return False, exc
        except asyncio.CancelledError:
            if job.id in self._stopped_jobs:
                return None
            return False, ErrorInfo("CancelledError", "the job's task was cancelled")
        except BaseException as exc:
            return False, exc
        return True, result

    async def _report(self, worker: JobSource, job: RunnableJob, outcome: tuple[bool, Any]) -> None:
        """``report`` of the other executors, pausing without blocking the loop."""
        pause = Pause()
        try:
            while report_once(worker, job, outcome) is None:
                await _pause(pause, lambda: not holds(worker, job))
                if not holds(worker, job):
                    return  # put back (the worker stopped), or its report landed meanwhile
        except QueueClosed:
            log.debug("%s: the queue is closed; job %s is not reported", worker.slot_name(), job.id)

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
            join(self._thread, timeout)
