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
import functools
import heapq
import inspect
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conveyor.context import set_context
from conveyor.errors import QueueClosed
from conveyor.executors.base import (
    JobSource,
    Pause,
    bounded,
    holds,
    join,
    log_timeout,
    report,
    report_once,
    timeout_message,
)
from conveyor.job import ErrorInfo
from conveyor.tracking import tracking

if TYPE_CHECKING:
    from conveyor.records import RunnableJob

log = logging.getLogger("conveyor.executors.thread")

#: seconds: a job's timeout beyond this (about 31 years) is watched as this
FAR_AWAY = 1e9


class JobInterrupted(BaseException):
    """Raised inside a job's thread to stop it (timeout or cancel).

    It derives from BaseException so that a job's ``except Exception`` does not swallow it.
    """


def _raise_in_thread(thread_id: int, exc_type: type[BaseException] | None) -> None:
    """Raise ``exc_type`` asynchronously in ``thread_id`` (None clears a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type) if exc_type else None
    )


def run_call(job: RunnableJob, worker: JobSource) -> Any:
    """Call the job's function (``conveyor.progress`` reporting to ``worker``); drive it to
    completion if it returns a coroutine."""
    assert job.fn is not None, "thread and inline jobs carry their callable"
    with tracking(functools.partial(worker.progress, job)):
        result = job.fn(*job.args, **job.kwargs)
        if inspect.iscoroutine(result):
            import asyncio  # only for coroutine functions run in threads

            result = asyncio.run(result)
    return result


class _Slot:
    __slots__ = ("abandoned", "interrupted", "job", "lock", "thread_id")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.job: RunnableJob | None = None
        self.thread_id = 0
        self.abandoned = False
        self.interrupted = False


class ThreadExecutor:
    """``slots`` threads, each claiming and running one job at a time."""

    mode = "thread"

    def __init__(self, slots: int, context: Callable[[], Any] | None = None) -> None:
        self.slots = slots
        self._context = context
        self._worker: JobSource | None = None
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._running: dict[str, _Slot] = {}
        self._watchdog: _Watchdog | None = None
        self._names = itertools.count(1)

    def start(self, worker: JobSource) -> None:
        self._worker = worker
        for _ in range(self.slots):
            self._spawn()

    def _spawn(self, settle: tuple[RunnableJob, ErrorInfo] | None = None) -> None:
        """Start a slot thread; it first reports ``settle`` (a job of the slot it replaces)."""
        slot = _Slot()
        assert self._worker is not None
        thread = threading.Thread(
            target=self._loop,
            args=(slot, settle),
            daemon=True,
            name=f"conveyor-thread-{next(self._names)}",
        )
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _loop(self, slot: _Slot, settle: tuple[RunnableJob, ErrorInfo] | None) -> None:
        """Claim, run, report, until the worker has nothing more to claim. An unexpected error
        is logged, fails the job the slot held, and the slot goes on after a pause."""
        worker = self._worker
        assert worker is not None
        slot.thread_id = threading.get_ident()
        pause = Pause()
        try:
            if settle is not None:
                report(worker, settle[0], (False, settle[1]), pause)
            self._serve(worker, slot, pause)
        except JobInterrupted:
            if not slot.abandoned:
                raise
        except QueueClosed:
            log.debug("%s: the queue is closed; the slot ends", worker.slot_name())

    def _serve(self, worker: JobSource, slot: _Slot, pause: Pause) -> None:
        context = self._context  # run once, before the first claim (again if it raised)
        jobs: list[RunnableJob] = []
        while True:
            held: RunnableJob | None = None
            try:
                if context is not None:
                    set_context(context())
                    context = None
                if not jobs:
                    jobs = worker.claim(1)
                    if not jobs:
                        return
                job = held = jobs.pop()
                outcome = self._run(slot, job)
                if outcome is None:
                    return  # abandoned: the watchdog or a cancel settled the job
                held = None  # from here on the report owns the job
                jobs = report(worker, job, outcome, pause, claim_next=1 if outcome[0] else 0)
                pause.reset()
            except (JobInterrupted, QueueClosed):
                raise
            except Exception as exc:
                log.exception("%s: unexpected error in the slot's loop", worker.slot_name())
                if held is not None and holds(worker, held):
                    report(worker, held, (False, exc), pause)
                if worker.stopping:
                    return  # no retry of a claim that would not be made
                pause.wait(lambda: worker.stopping)

    def _run(self, slot: _Slot, job: RunnableJob) -> tuple[bool, Any] | None:
        """Run one job: ``(True, result)``, ``(False, exception)``, or None if abandoned."""
        worker = self._worker
        assert worker is not None
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
                outcome = (True, run_call(job, worker))
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

    def interrupt(self, slot: _Slot, job: RunnableJob, settle: ErrorInfo | None = None) -> bool:
        """Abandon ``slot`` if it still runs ``job``: raise inside it and start a new slot,
        which first reports ``settle`` as the job's failure (if given)."""
        if slot.thread_id == threading.get_ident():
            return False  # a job cancelling itself: its report is dropped, the slot goes on
        with slot.lock:
            if slot.job is not job or slot.abandoned:
                return False
            slot.abandoned = slot.interrupted = True
            _raise_in_thread(slot.thread_id, JobInterrupted)
        worker = self._worker
        if worker is not None and (settle is not None or not worker.stopping):
            try:
                self._spawn(None if settle is None else (job, settle))
            except Exception:  # no thread to be had: report here, once
                log.exception("%s: no thread could replace a stopped job's slot", worker.id)
                if settle is not None:
                    report_once(worker, job, (False, settle))
        return True

    def timed_out(self, slot: _Slot, job: RunnableJob) -> None:
        """Called by the watchdog when ``job`` passed its timeout: the slot that replaces the
        job's slot reports it failed (no backend call on the watchdog's thread)."""
        assert job.timeout is not None
        with slot.lock:
            running = slot.job is job and not slot.abandoned
        if running:  # said before the new slot reports the failure (and the worker may stop)
            worker = self._worker
            log_timeout(
                log,
                worker.id if worker is not None else "?",
                job,
                "an exception is raised in its thread (which runs on until it next runs Python"
                " code, its result dropped) and a new thread takes its slot",
            )
        self.interrupt(slot, job, ErrorInfo("TimeoutError", timeout_message(job.timeout)))

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
            join(thread, None if deadline is None else max(0.0, deadline - time.monotonic()))


class _Deadline:
    """One watched job; ``job`` is cleared when it ends so nothing outlives the job."""

    __slots__ = ("at", "job", "seq", "slot")

    def __init__(self, at: float, seq: int, slot: _Slot, job: RunnableJob) -> None:
        self.at, self.seq, self.slot = at, seq, slot
        self.job: RunnableJob | None = job

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

    def watch(self, seconds: float, slot: _Slot, job: RunnableJob) -> _Deadline:
        """Start watching ``job``; pass the result to :meth:`unwatch` when it ends."""
        now = time.monotonic()
        # a timeout beyond FAR_AWAY (or not a number) is never reached: keep the heap ordered
        at = now + seconds if seconds < FAR_AWAY else now + FAR_AWAY
        deadline = _Deadline(at, next(self._seq), slot, job)
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
        """Stop each job at its deadline until stopped; an error is logged, never fatal."""
        pause = Pause()
        while True:
            try:
                due = self._next_due()
                if due is None:
                    return
                slot, job = due
                if slot.job is job:
                    self._executor.timed_out(slot, job)
                pause.reset()
            except Exception:
                log.exception("the timeout watchdog hit an unexpected error; it goes on")
                pause.wait(lambda: self._stopped)

    def _next_due(self) -> tuple[_Slot, RunnableJob] | None:
        """Block until a watched job passes its deadline; None once stopped."""
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                if self._heap and self._heap[0].at <= now:
                    due = heapq.heappop(self._heap)
                    if due.job is None:
                        self._ended -= 1
                        continue
                    return due.slot, due.job
                self._cond.wait(bounded(self._heap[0].at - now) if self._heap else None)
            return None
