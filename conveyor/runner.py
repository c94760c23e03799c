"""Run a long-lived worker for a queue until it is told to stop: ``conveyor worker`` in code.

::

    main thread                      worker threads
    ───────────                      ──────────────
    start the worker (heartbeat) ──> slots claim, run, report
    log a banner (queue, mode, slots, tasks)
    block on a wake-up socket   <─── "done" (max_jobs claimed, burst drained), "idle"
         ^  signal handler writes one byte: SIGTERM/SIGINT (graceful), SIGINT again (now)
    stop claiming, wait for the running jobs (up to graceful_timeout after a signal),
    put back the jobs still running, stop the executor, log how its jobs ended, return
    how many jobs ran

A worker runs its jobs with the executor of its mode, and claims the jobs put in that mode
(each job keeps the mode it was put with: its task's, else its queue's). When no job of the
app is put in the mode asked for (neither the queue's mode nor any registered task's), the
worker claims the jobs of the queue's mode instead and runs them in that executor:
``conveyor worker app:q --mode process`` runs a thread app's jobs in processes, as a user
reaching for a process pool expects, rather than claim nothing and exit.

A worker whose backend calls (claims, reports, heartbeats) keep failing for a lease gives up:
it stops claiming and heartbeating, puts back what it can, and ``run_worker`` raises
:class:`WorkerBroken` (``conveyor worker`` exits with status 1), so that ``conveyor status``
no longer lists it and a supervisor restarts it; its jobs go back to the queue when their
leases run out.

The main thread blocks on a socket rather than an Event because a signal handler runs on the
main thread between two bytecodes, possibly while that thread holds the Event's lock; writing
to a socket takes no lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from conveyor import executors
from conveyor.errors import ConveyorError
from conveyor.executors.base import Executor
from conveyor.worker import OUTCOMES, Worker

if TYPE_CHECKING:
    from conveyor.queue import Queue

log = logging.getLogger("conveyor.runner")

#: the modes a standalone worker can run (inline jobs run in the caller's thread)
WORKER_MODES = ("thread", "process", "async")


class WorkerBroken(ConveyorError):
    """The worker gave up: its backend calls kept failing for a lease (a full disk, a
    database it cannot write). Restart it once the storage works again."""


class Ran(int):
    """How many jobs a worker ran (an ``int``), and in :attr:`outcomes` how the attempts it
    ended ended: finished, failed, retried, cancelled, put back (``Worker.counts``)."""

    outcomes: dict[str, int]

    def __new__(cls, ran: int, outcomes: dict[str, int]) -> Ran:
        made = super().__new__(cls, ran)
        made.outcomes = outcomes
        return made

    def summary(self) -> str:
        """``3 finished, 1 failed, 0 retried, 0 cancelled, 1 put back``."""
        return ", ".join(f"{self.outcomes.get(name, 0)} {name}" for name in OUTCOMES)


def run_worker(
    queue: Queue,
    *,
    workers: int | None = None,
    mode: str | None = None,
    max_jobs: int | None = None,
    burst: bool = False,
    handle_signals: bool = True,
) -> Ran:
    """Run jobs of ``queue`` in this process until told to stop; return how many ran (with
    how they ended, :class:`Ran`).

    Args:
        queue: the queue whose jobs to run (usually a producer-only ``Queue(url, workers=0)``).
        workers: slots (threads, processes, or concurrent coroutines); default: the queue's
            ``workers`` if it has any, else the CPU count.
        mode: ``"thread"``, ``"process"`` or ``"async"``; default: the queue's mode. The
            worker claims the jobs put in this mode; if the app puts none in it (neither
            the queue's mode nor a registered task's), it claims the jobs of the queue's mode
            and runs them in this one (see the module's docstring).
        max_jobs: stop (gracefully) once this many jobs have been claimed and have ended.
        burst: stop once nothing may start for this worker and no job runs anywhere in the
            queue (one that runs may fail and be retried, or come back when its worker is
            lost), after recovering the expired leases; jobs scheduled for later are left
            for another worker.
        handle_signals: stop on SIGTERM or SIGINT: the first stops claiming and gives the
            running jobs ``queue.settings.graceful_timeout`` seconds to end, then puts back
            those still running; a second SIGINT puts them back at once (killing worker
            processes). Only in the main thread; elsewhere, or when False, signals are left
            alone.

    Jobs put back wait again with their attempt not counted, so none is lost. A thread cannot
    be killed: a job put back while running in a thread runs on, its result dropped, until
    this process exits.

    Raises:
        WorkerBroken: the worker's claims, reports or heartbeats kept failing for the queue's
            lease; it stopped (see the module's docstring).
        ValueError: a bad argument, or jobs of the queue's mode that ``mode`` cannot run
            (coroutines in worker processes).
    """
    mode = mode or queue.mode
    if mode not in WORKER_MODES:
        raise ValueError(f"a worker runs jobs of mode {', '.join(WORKER_MODES)}; got {mode!r}")
    for name, value in (("workers", workers), ("max_jobs", max_jobs)):
        if value is not None and (isinstance(value, bool) or value < 1):
            raise ValueError(f"{name} must be an int >= 1 or None, got {value!r}")
    slots = workers or queue.slots or os.cpu_count() or 1
    runner = _Runner(queue, mode, slots, max_jobs, burst, claims=claims_mode(queue, mode))
    return runner.run(handle_signals)


def claims_mode(queue: Queue, mode: str) -> str:
    """The mode of the jobs a worker of ``queue`` running ``mode`` claims: ``mode`` if the
    app puts jobs in it (its queue's mode, or a registered task's), else the queue's mode.

    Raises:
        ValueError: the queue's jobs are coroutines (async) and ``mode`` is process.
    """
    declared = {queue.mode, *(task.mode for task in queue.tasks.values() if task.mode)}
    if mode in declared:
        return mode
    if queue.mode == "async" and mode == "process":
        raise ValueError(
            "the queue's jobs are put in async mode (coroutines), which worker processes"
            " cannot run; use --mode async (or thread)"
        )
    return queue.mode


def redact(url: str) -> str:
    """``url`` with the password of its user part, if any, hidden (for logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def build_executor(queue: Queue, mode: str, slots: int) -> Executor:
    """The executor a worker of ``queue`` uses for ``mode`` with ``slots`` slots."""
    if mode not in WORKER_MODES:
        raise ValueError(f"no standalone executor for mode {mode!r}")
    return executors.build(
        mode,
        slots,
        context=queue.context,
        max_jobs_per_process=queue.settings.max_jobs_per_process,
    )


class _Runner:
    """The state of one :func:`run_worker` call; the main thread drives it."""

    def __init__(
        self,
        queue: Queue,
        mode: str,
        slots: int,
        max_jobs: int | None,
        burst: bool,
        *,
        claims: str | None = None,
    ) -> None:
        self.queue = queue
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.worker = Worker(
            queue.backend,
            build_executor(queue, mode, slots),
            claims=claims,
            lease=queue.settings.lease,
            clock=queue.clock,
            max_jobs=max_jobs,
            burst=burst,
            on_change=self._wake,
            prefetch=queue.settings.prefetch if queue.durable else 0,
            give_up=queue.settings.lease,
            codec=queue.codec,
        )
        self._signals = 0  # how many stop signals arrived
        self._signal = signal.SIGTERM  # the first one
        self._immediate = False

    def _wake(self) -> None:
        """Wake the main thread; safe from any thread and from a signal handler."""
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            self._wake_w.send(b"\0")

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1:
            self._signal = signal.Signals(signum)
        elif signum == signal.SIGINT:
            self._immediate = True
        self._wake()

    def run(self, handle_signals: bool) -> Ran:
        worker = self.worker
        try:
            with self._signal_handlers(handle_signals):
                self._banner()  # before the slots start: their first log lines come after it
                worker.start(heartbeat=True)
                self._serve()
                worker.stop(0)  # puts back what still runs (none, unless time ran out)
        finally:
            if not worker.stopping:  # an error above: never leave jobs claimed
                worker.stop(0)
            self._wake_r.close()
            self._wake_w.close()
        ran = Ran(worker.ran, worker.counts())
        if worker.broken is not None:
            raise WorkerBroken(f"worker {worker.id} gave up ({ran.summary()}): {worker.broken}")
        log.info(
            "worker %s stopped: %s", worker.id, ran.summary(), extra={"outcomes": ran.outcomes}
        )
        return ran

    def _banner(self) -> None:
        """Say what this worker is: its queue (no secret in the URL), mode, slots, and the
        code it runs (registered tasks, allowed modules)."""
        worker, queue = self.worker, self.queue
        executor_mode = worker.executor.mode
        note = "" if worker.mode == executor_mode else (
            f" for the queue's {worker.mode}-mode jobs (the app puts none in {executor_mode}"
            " mode)"
        )  # fmt: skip
        tasks = sorted(queue.tasks)
        shown = [
            name if mode == worker.mode else f"{name} ({mode} mode: not run here)"
            for name in tasks
            for mode in [queue.tasks[name].mode or queue.mode]
        ]
        allowed = list(queue.allowed.patterns)
        url = redact(queue.url)
        log.info(
            "worker %s started: %d %s slot(s)%s on %s (queue %r, lease %g s); tasks: %s;"
            " allowed modules: %s",
            worker.id,
            worker.executor.slots,
            executor_mode,
            note,
            url,
            queue.name,
            queue.settings.lease,
            ", ".join(shown) or "none",
            ", ".join(allowed) or "none",
            extra={
                "worker": worker.id,
                "url": url,
                "queue": queue.name,
                "mode": executor_mode,
                "claims": worker.mode,
                "slots": worker.executor.slots,
                "tasks": tasks,
                "allowed_modules": allowed,
            },
        )

    def _serve(self) -> None:
        """Block until the work is done or a signal says stop, then until the running jobs
        end (or the graceful deadline passes, or a second SIGINT)."""
        worker = self.worker
        deadline: float | None = None
        while True:
            if worker.broken is not None:
                return
            if self._immediate:
                log.warning("worker %s: stopping now", worker.id)
                return
            if self._signals and deadline is None:
                grace = self.queue.settings.graceful_timeout
                deadline = time.monotonic() + grace
                log.warning(
                    "worker %s: %s: stopping; %d running job(s) get %g s to end, then go back"
                    " to the queue%s",
                    worker.id,
                    self._signal.name,
                    len(worker.running),
                    grace,
                    " (Ctrl-C again: now)" if self._signal == signal.SIGINT else "",
                )
                worker.stop_claiming()
            if worker.done.is_set() and not worker.stopping:
                worker.stop_claiming()
            if worker.stopping and not worker.running:
                return
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            self._sleep(remaining)

    def _sleep(self, timeout: float | None) -> None:
        readable, _, _ = select.select([self._wake_r], [], [], timeout)
        if readable:
            with contextlib.suppress(BlockingIOError):
                while self._wake_r.recv(4096):
                    pass

    @contextlib.contextmanager
    def _signal_handlers(self, wanted: bool) -> Iterator[None]:
        if not wanted or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        # a signal that lands on another thread leaves the main thread's select asleep: the
        # wake-up fd gets a byte from whichever thread takes it, and wakes it
        wakeup = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        try:
            yield
        finally:
            signal.set_wakeup_fd(wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
