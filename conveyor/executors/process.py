"""Run jobs in persistent worker processes (never a process per job).

Each slot is a thread of this process paired with one child process and a pipe. The slot
claims a job, sends its encoded payload (function by reference, or by value with cloudpickle
for lambdas and closures; arguments pickled once at put), and waits for the answer. A job past
its timeout is stopped for real: the child is killed and replaced. A child is also replaced
after ``max_jobs_per_process`` jobs, and when it dies (the job is failed, saying so).

A child sees the environment and working directory of this process as of when the executor
started (not the forkserver's), and dies with this process: a worker killed with SIGKILL
leaves no child running its job (see :func:`die_with`).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import pickle
import select
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

import cloudpickle

from conveyor.errors import ConveyorError, QueueClosed
from conveyor.executors.base import (
    JobSource,
    Pause,
    bounded,
    holds,
    join,
    log_timeout,
    report,
    timeout_message,
)
from conveyor.executors.child import (  # the child's side, by the names callers know
    EXIT_ORPHANED,
    PARENT_CHECK,
    child_main,
    die_with,
    encode_function,
    encode_payload,
)
from conveyor.job import ErrorInfo
from conveyor.tracking import Note

if TYPE_CHECKING:
    from conveyor.records import RunnableJob

log = logging.getLogger("conveyor.executors.process")

#: forkserver forks children from a clean single-threaded server process; fork from a
#: process with running threads could copy a held lock. Other platforms spawn.
DEFAULT_START_METHOD = "forkserver" if sys.platform.startswith("linux") else "spawn"

#: what a slot's wait for its child's answer returns once the job's timeout passed
_TIMED_OUT = object()

#: seconds a worker process may have been idle before a send also asks whether it exited
IDLE_CHECK = 0.001

__all__ = [
    "EXIT_ORPHANED",
    "PARENT_CHECK",
    "ProcessExecutor",
    "check_can_start",
    "child_main",
    "die_with",
    "encode_function",
    "encode_payload",
]


def _readable_check(conn: Connection) -> Callable[[], bool]:
    """A cheap ``conn.poll(0)``: whether the pipe has data or its other end closed."""
    if not hasattr(select, "poll"):
        return lambda: conn.poll(0)
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return lambda: bool(poller.poll(0))


class _Child:
    """One worker process and the parent's end of its pipe."""

    def __init__(
        self,
        ctx: Any,
        context: bytes | None,
        max_jobs: int | None,
        name: str,
        environ: dict[str, str] | None,
        cwd: str | None,
    ) -> None:
        self.conn, child_conn = ctx.Pipe()
        self.process: BaseProcess = ctx.Process(
            target=child_main,
            args=(child_conn, context, max_jobs, os.getpid(), environ, cwd),
            daemon=True,
            name=name,
        )
        self.process.start()
        child_conn.close()
        self.jobs = 0
        #: when (monotonic) it last answered
        self.answered = time.monotonic()
        self._closed_end = _readable_check(self.conn)

    def gone(self) -> bool:
        """True once the process has ended, as far as can be told without waiting: its pipe
        closed (an idle child writes nothing, so a readable pipe is its end closing), or, once
        it has been idle a while, its exit reported (asking costs a round trip to the
        forkserver, too dear for every job of a busy child)."""
        if self._closed_end():
            return True
        if time.monotonic() - self.answered < IDLE_CHECK:
            return False
        return not self.process.is_alive()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()

    def retire(self) -> None:
        """Let the child exit on its own (it reached max_jobs) and reap it."""
        self.conn.close()
        self.process.join(5)
        if self.process.is_alive():
            self.kill()


class ProcessExecutor:
    """``slots`` worker processes, each driven by one slot thread of this process."""

    mode = "process"

    def __init__(
        self,
        slots: int,
        context: Callable[[], Any] | None = None,
        *,
        max_jobs_per_process: int | None = None,
        start_method: str = DEFAULT_START_METHOD,
    ) -> None:
        self.slots = slots
        self._ctx = multiprocessing.get_context(start_method)
        self._context = None if context is None else cloudpickle.dumps(context)
        self._max_jobs = max_jobs_per_process
        self._worker: JobSource | None = None
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._running: dict[str, _Child] = {}
        self._stopped_jobs: set[str] = set()
        self._children: set[_Child] = set()
        self._names = itertools.count(1)
        self._environ: dict[str, str] | None = None  # taken at start
        self._cwd: str | None = None

    def start(self, worker: JobSource) -> None:
        self._worker = worker
        self._environ = dict(os.environ)  # what the worker processes see, from now on
        try:
            self._cwd = os.getcwd()
        except OSError:  # the directory was removed: the processes stay where they start
            self._cwd = None
        for n in range(self.slots):
            thread = threading.Thread(
                target=self._loop, daemon=True, name=f"conveyor-process-slot-{n + 1}"
            )
            self._threads.append(thread)
            thread.start()

    def _spawn(self) -> _Child:
        child = _Child(
            self._ctx,
            self._context,
            self._max_jobs,
            f"conveyor-worker-{next(self._names)}",
            self._environ,
            self._cwd,
        )
        with self._lock:
            self._children.add(child)
        return child

    def _drop(self, child: _Child, *, kill: bool) -> None:
        with self._lock:  # the slot and stop() may both drop a child: only the first does
            if child not in self._children:
                return
            self._children.discard(child)
        if kill:
            child.kill()
        else:
            child.retire()

    def _loop(self) -> None:
        """One slot: claim, run in its child, report, until the worker has nothing more to
        claim. An unexpected error is logged, replaces the child, fails the job the slot held,
        and the slot goes on after a pause."""
        worker = self._worker
        assert worker is not None
        pause = Pause()
        child: _Child | None = None
        jobs: list[RunnableJob] = []
        try:
            while True:
                held: RunnableJob | None = None
                try:
                    if child is None:
                        child = self._spawn()  # before claiming, so a job never waits for a fork
                    if not jobs:
                        jobs = worker.claim(1)
                        if not jobs:
                            return
                    job = held = jobs.pop()
                    child, outcome = self._run(child, job)
                    held = None  # from here on the report owns the job
                    if outcome is not None:
                        claim_next = 1 if outcome[0] else 0
                        jobs = report(worker, job, outcome, pause, claim_next)
                    child = self._recycle(child)
                    pause.reset()
                except QueueClosed:
                    return
                except Exception as exc:
                    log.exception("%s: unexpected error in the slot's loop", worker.slot_name())
                    if child is not None:
                        self._drop(child, kill=True)  # in an unknown state: start afresh
                        child = None
                    if held is not None and holds(worker, held):
                        report(worker, held, (False, exc), pause)
                    if worker.stopping:
                        return  # no retry of a claim that would not be made
                    pause.wait(lambda: worker.stopping)
        except QueueClosed:
            log.debug("%s: the queue is closed; the slot ends", worker.slot_name())
        finally:
            if child is not None:
                self._drop(child, kill=True)

    def _run(
        self, child: _Child, job: RunnableJob
    ) -> tuple[_Child | None, tuple[bool, Any] | None]:
        """Run one job in ``child``: the child to use next (None: spawn one), and how the job
        ended, ``(ok, result or error)`` (None: it was cancelled, nothing to report)."""
        payload = job.payload
        if payload is None:  # claimed from a durable backend: encode for the child here
            assert job.fn is not None
            payload = encode_payload(encode_function(job.fn), job.args, job.kwargs)
        try:
            try:
                child = self._send(child, payload)
                with self._lock:
                    self._running[job.id] = child
                answer = self._receive(child, job)
            except (OSError, EOFError):
                answer = None
        finally:
            with self._lock:
                self._running.pop(job.id, None)
                stopped = job.id in self._stopped_jobs
                self._stopped_jobs.discard(job.id)
        if stopped:  # cancelled: the child was killed on purpose, nothing to report
            self._drop(child, kill=True)
            return None, None
        worker = self._worker.id if self._worker is not None else "?"
        if answer is None:
            code = child.process.exitcode
            self._drop(child, kill=True)
            message = f"the worker process died while running the job (exit code {code})"
            log.warning(
                "%s: worker process %s died (exit code %s) running job %s (task %s, attempt"
                " %d); a new one takes its place",
                worker,
                child.process.pid,
                code,
                job.id,
                job.task,
                job.attempt,
                extra={"job_id": job.id, "task": job.task, "attempt": job.attempt},
            )
            return None, (False, ErrorInfo("WorkerDied", message))
        if answer is _TIMED_OUT:
            self._drop(child, kill=True)
            assert job.timeout is not None
            log_timeout(
                log, worker, job, f"its worker process {child.process.pid} is killed and replaced"
            )
            return None, (False, ErrorInfo("TimeoutError", timeout_message(job.timeout)))
        child.jobs += 1
        child.answered = time.monotonic()
        ok, value = answer
        return child, (ok, value)

    def _recycle(self, child: _Child | None) -> _Child | None:
        """Retire ``child`` once it ran ``max_jobs_per_process`` jobs (None: spawn one)."""
        if child is not None and self._max_jobs is not None and child.jobs >= self._max_jobs:
            self._drop(child, kill=False)
            return None
        return child

    def _send(self, child: _Child, payload: bytes) -> _Child:
        """Send ``payload`` to ``child``, or to a fresh child if this one died while idle.

        A child killed in the instant before the send (its threads still ending, so its pipe
        still open) takes the payload and fails the job as WorkerDied: only an
        acknowledgement per job could tell the two apart."""
        if not child.gone():
            try:
                child.conn.send_bytes(payload)
                return child
            except OSError:
                pass  # it died between the check and the send: the job never reached it
        self._drop(child, kill=True)
        child = self._spawn()
        try:
            child.conn.send_bytes(payload)
        except BaseException:
            self._drop(child, kill=True)  # the caller still holds the old child
            raise
        return child

    def _receive(self, child: _Child, job: RunnableJob) -> Any:
        """The child's answer, or _TIMED_OUT once the job's timeout passed (waited in pieces
        that ``poll`` accepts, however long the timeout); the progress values the child sends
        before it go to the worker."""
        deadline = None if job.timeout is None else time.monotonic() + job.timeout
        while True:
            if deadline is not None:
                while not child.conn.poll(bounded(deadline - time.monotonic())):
                    if time.monotonic() >= deadline:
                        return _TIMED_OUT
            answer = pickle.loads(child.conn.recv_bytes())
            if not isinstance(answer, Note):
                return answer
            if self._worker is not None:
                self._worker.progress(job, answer.fraction, answer.message)

    def stop_job(self, job_id: str, reason: str) -> None:
        with self._lock:
            child = self._running.get(job_id)
            if child is None:
                return
            self._stopped_jobs.add(job_id)
        if child.process.is_alive():
            child.process.kill()

    def stop(self, *, wait: bool = True, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        if wait:
            for thread in self._threads:
                join(thread, None if deadline is None else max(0.0, deadline - time.monotonic()))
        with self._lock:
            children = list(self._children)
        for child in children:
            self._drop(child, kill=True)


# ----------------------------------------------------- can worker processes start here
#: the idiom that keeps a script's top level from running again in each worker process
GUARD = 'if __name__ == "__main__":'

#: (start method, main script) pairs whose worker processes were seen to start, this process
_started_fine: set[tuple[str, str | None]] = set()


def bootstrapping() -> bool:
    """True while this process is a new worker process (or the forkserver) importing the main
    script again, as ``multiprocessing`` does before it runs anything: it may start no
    process then."""
    process = sys.modules.get("multiprocessing.process")
    return process is not None and bool(getattr(process.current_process(), "_inheriting", False))


def check_can_start(start_method: str = DEFAULT_START_METHOD) -> None:
    """Fail fast, in the process that asks for worker processes, when they cannot start.

    Each worker process (or the forkserver they fork from) first imports the main script
    again. A script without the ``if __name__ == "__main__":`` guard then runs its top level
    there, builds its queue again and hangs or dies; the processes never start and the jobs
    would wait forever. So the first time (per start method and main script) a trivial
    process is started and waited for: if it cannot start, ConveyorError names the guard.
    Inside such an import (:func:`bootstrapping`) it raises at once."""
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if bootstrapping():
        raise ConveyorError(
            f"the script {script or '__main__'} is being imported again by a new process"
            " (that is how multiprocessing starts worker processes) and asks for worker"
            f" processes at import: put its top-level code under `{GUARD}`"
        )
    key = (start_method, script)
    if key in _started_fine:
        return
    ctx: Any = multiprocessing.get_context(start_method)
    probe = ctx.Process(target=_nothing, daemon=True, name="conveyor-start-check")
    try:
        probe.start()  # forkserver: returns once the server has imported the main script
    except (EOFError, OSError):
        probe = None  # the forkserver died importing the main script
    if probe is not None:
        probe.join()
    if probe is None or probe.exitcode != 0:
        raise ConveyorError(
            "worker processes cannot start: each new process first imports the main script"
            f" {script or '__main__'} again, and that import failed (its error is printed"
            " above). A script that runs jobs in processes must keep its top-level code under"
            f" `{GUARD}`, so that importing it starts nothing"
        )
    _started_fine.add(key)


def _nothing() -> None:
    """What the start check's process runs."""
