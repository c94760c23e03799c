"""Run jobs in threads of this process.

Timeouts: a thread cannot be killed. A job past its timeout is reported failed at once, an
exception (:class:`JobInterrupted`) is raised inside its thread, and the slot is handed to a
fresh thread, so capacity never shrinks. The exception lands the next time the job's thread
runs Python bytecode: a job blocked inside a system call (``time.sleep``, a socket read) keeps
its thread until that call returns, but its result is dropped. Use process mode for code that
must be stopped for real.
"""

from __future__ import annotations

import ctypes
import heapq
import inspect
import itertools
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

log = logging.getLogger("conveyor.executors.thread")


class JobInterrupted(BaseException):
    """Raised inside a job's thread to stop it (timeout or cancel).

    It derives from BaseException so that a job's ``except Exception`` does not swallow it.
    """


def _raise_in_thread(thread_id: int, exc_type: type[BaseException] | None) -> None:
    """Raise ``exc_type`` asynchronously in ``thread_id`` (None clears a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type) if exc_type else None
    )


def run_call(job: ClaimedJob) -> Any:
    """Call the job's function; drive it to completion if it returns a coroutine."""
    assert job.fn is not None, "thread and inline jobs carry their callable"
    result = job.fn(*job.args, **job.kwargs)
    if inspect.iscoroutine(result):
        import asyncio  # only for coroutine functions run in threads

        result = asyncio.run(result)
    return result


class _Slot:
    __slots__ = ("abandoned", "interrupted", "job", "lock", "thread_id")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.job: ClaimedJob | None = None
        self.thread_id = 0
        self.abandoned = False
        self.interrupted = False


class ThreadExecutor:
    """``slots`` threads, each claiming and running one job at a time."""

    mode = "thread"

    def __init__(self, slots: int, context: Callable[[], Any] | None = None) -> None:
        self.slots = slots
        self._context = context
        self._worker: Worker | None = None
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._running: dict[str, _Slot] = {}
        self._watchdog: _Watchdog | None = None
        self._names = itertools.count(1)

    def start(self, worker: Worker) -> None:
        self._worker = worker
        for _ in range(self.slots):
            self._spawn()

    def _spawn(self) -> None:
        slot = _Slot()
        assert self._worker is not None
        thread = threading.Thread(
            target=self._loop,
            args=(slot,),
            daemon=True,
            name=f"conveyor-thread-{next(self._names)}",
        )
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _loop(self, slot: _Slot) -> None:
        worker = self._worker
        assert worker is not None
        slot.thread_id = threading.get_ident()
        try:
            if self._context is not None:
                set_context(self._context())
            jobs = worker.claim(1)
            while jobs:
                job = jobs[0]
                outcome = self._run(slot, job)
                if outcome is None:
                    return  # abandoned: the watchdog or a cancel settled the job
                ok, value = outcome
                if ok:
                    jobs = worker.finished(job, value, claim_next=1)
                else:
                    worker.failed(job, value)
                    jobs = worker.claim(1)
        except JobInterrupted:
            if not slot.abandoned:
                raise
        except Exception:
            log.exception("worker thread %s crashed", threading.current_thread().name)

    def _run(self, slot: _Slot, job: ClaimedJob) -> tuple[bool, Any] | None:
        """Run one job: ``(True, result)``, ``(False, exception)``, or None if abandoned."""
        watched = None
        if job.timeout is not None:
            watchdog = self._ensure_watchdog()
            watched = watchdog.watch(job.timeout, slot, job)
        running = self._running  # dict operations are atomic: no shared lock on the hot path
        running[job.id] = slot
        slot.job = job
        outcome: tuple[bool, Any] = (False, None)
        try:
            try:
                outcome = (True, run_call(job))
            except BaseException as exc:
                outcome = (False, exc)
            finally:
                with slot.lock:
                    slot.job = None
                    if slot.interrupted:
                        _raise_in_thread(slot.thread_id, None)  # drop a late interrupt
        except JobInterrupted:
            pass
        running.pop(job.id, None)
        if watched is not None:
            watchdog.unwatch(watched)
        return None if slot.abandoned else outcome

    def interrupt(self, slot: _Slot, job: ClaimedJob) -> bool:
        """Abandon ``slot`` if it still runs ``job``: raise inside it and start a new slot."""
        if slot.thread_id == threading.get_ident():
            return False  # a job cancelling itself: its report is dropped, the slot goes on
        with slot.lock:
            if slot.job is not job or slot.abandoned:
                return False
            slot.abandoned = slot.interrupted = True
            _raise_in_thread(slot.thread_id, JobInterrupted)
        worker = self._worker
        if worker is not None and not worker.stopping:
            self._spawn()
        return True

    def timed_out(self, slot: _Slot, job: ClaimedJob) -> None:
        """Called by the watchdog when ``job`` passed its timeout."""
        if self.interrupt(slot, job) and self._worker is not None:
            assert job.timeout is not None
            self._worker.failed(job, ErrorInfo("TimeoutError", timeout_message(job.timeout)))

    def stop_job(self, job_id: str, reason: str) -> None:
        slot = self._running.get(job_id)
        job = slot.job if slot is not None else None
        if slot is not None and job is not None and job.id == job_id:
            self.interrupt(slot, job)

    def _ensure_watchdog(self) -> _Watchdog:
        with self._lock:
            if self._watchdog is None:
                self._watchdog = _Watchdog(self)
            return self._watchdog

    def stop(self, *, wait: bool = True, timeout: float | None = None) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
        if not wait:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is threading.current_thread():
                continue
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)


class _Deadline:
    """One watched job; ``job`` is cleared when it ends so nothing outlives the job."""

    __slots__ = ("at", "job", "seq", "slot")

    def __init__(self, at: float, seq: int, slot: _Slot, job: ClaimedJob) -> None:
        self.at, self.seq, self.slot = at, seq, slot
        self.job: ClaimedJob | None = job

    def __lt__(self, other: _Deadline) -> bool:
        return (self.at, self.seq) < (other.at, other.seq)


class _Watchdog:
    """One thread that fails and interrupts jobs past their timeout (monotonic time)."""

    def __init__(self, executor: ThreadExecutor) -> None:
        self._executor = executor
        self._cond = threading.Condition()
        self._heap: list[_Deadline] = []
        self._ended = 0  # entries in the heap whose job already ended
        self._seq = itertools.count()
        self._stopped = False
        threading.Thread(target=self._loop, daemon=True, name="conveyor-watchdog").start()

    def watch(self, seconds: float, slot: _Slot, job: ClaimedJob) -> _Deadline:
        """Start watching ``job``; pass the result to :meth:`unwatch` when it ends."""
        deadline = _Deadline(time.monotonic() + seconds, next(self._seq), slot, job)
        with self._cond:
            heapq.heappush(self._heap, deadline)
            self._cond.notify()
        return deadline

    def unwatch(self, deadline: _Deadline) -> None:
        """The job ended in time: drop it, and compact the heap once half of it is dead."""
        with self._cond:
            deadline.job = None
            self._ended += 1
            if self._ended * 2 > len(self._heap):
                self._heap = [d for d in self._heap if d.job is not None]
                heapq.heapify(self._heap)
                self._ended = 0

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._heap and self._heap[0].at <= time.monotonic():
                        due = heapq.heappop(self._heap)
                        job, slot = due.job, due.slot
                        if job is None:
                            self._ended -= 1
                            continue
                        break
                    wait = self._heap[0].at - time.monotonic() if self._heap else None
                    self._cond.wait(wait)
                else:
                    return
            if slot.job is job:
                self._executor.timed_out(slot, job)
