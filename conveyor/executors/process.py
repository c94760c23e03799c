"""Run jobs in persistent worker processes (never a process per job).

Each slot is a thread of this process paired with one child process and a pipe. The slot
claims a job, sends its encoded payload (function by reference, or by value with cloudpickle
for lambdas and closures; arguments pickled once at put), and waits for the answer. A job past
its timeout is stopped for real: the child is killed and replaced. A child is also replaced
after ``max_jobs_per_process`` jobs, and when it dies (the job is failed, saying so).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import pickle
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

import cloudpickle

from conveyor.context import set_context
from conveyor.executors.base import timeout_message
from conveyor.job import ErrorInfo

if TYPE_CHECKING:
    from conveyor.backends.base import ClaimedJob
    from conveyor.worker import Worker

log = logging.getLogger("conveyor.executors.process")

#: forkserver forks children from a clean single-threaded server process; fork from a
#: process with running threads could copy a held lock. Other platforms spawn.
DEFAULT_START_METHOD = "forkserver" if sys.platform.startswith("linux") else "spawn"


def encode_function(fn: Callable[..., Any]) -> bytes:
    """Pickle ``fn`` by reference if it is importable, else by value (lambdas, closures)."""
    data: bytes = cloudpickle.dumps(fn)
    return data


def encode_payload(fn_bytes: bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """One message for the child: the encoded function and the pickled arguments."""
    return pickle.dumps((fn_bytes, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)


def _describe(exc: BaseException) -> ErrorInfo:
    return ErrorInfo(type(exc).__qualname__, str(exc), "".join(traceback.format_exception(exc)))


def child_main(conn: Connection, context: bytes | None, max_jobs: int | None) -> None:
    """The loop of a worker process: receive a payload, run it, send back the outcome."""
    functions: dict[bytes, Callable[..., Any]] = {}
    if context is not None:
        set_context(cloudpickle.loads(context)())
    done = 0
    while max_jobs is None or done < max_jobs:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            fn_bytes, args, kwargs = pickle.loads(payload)
            fn = functions.get(fn_bytes)
            if fn is None:
                fn = functions[fn_bytes] = cloudpickle.loads(fn_bytes)
            answer = (True, fn(*args, **kwargs))
        except BaseException as exc:
            answer = (False, _describe(exc))
        try:
            message = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            message = pickle.dumps(
                (
                    False,
                    ErrorInfo(
                        "NotSerializable", f"the job's result cannot be pickled: {exc}", None
                    ),
                )
            )
        conn.send_bytes(message)
        done += 1


class _Child:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, ctx: Any, context: bytes | None, max_jobs: int | None, name: str) -> None:
        self.conn, child_conn = ctx.Pipe()
        self.process: BaseProcess = ctx.Process(
            target=child_main, args=(child_conn, context, max_jobs), daemon=True, name=name
        )
        self.process.start()
        child_conn.close()
        self.jobs = 0

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
        self._worker: Worker | None = None
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._running: dict[str, _Child] = {}
        self._stopped_jobs: set[str] = set()
        self._children: set[_Child] = set()
        self._names = itertools.count(1)

    def start(self, worker: Worker) -> None:
        self._worker = worker
        for n in range(self.slots):
            thread = threading.Thread(
                target=self._loop, daemon=True, name=f"conveyor-process-slot-{n + 1}"
            )
            self._threads.append(thread)
            thread.start()

    def _spawn(self) -> _Child:
        child = _Child(
            self._ctx, self._context, self._max_jobs, f"conveyor-worker-{next(self._names)}"
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
        worker = self._worker
        assert worker is not None
        child: _Child | None = None
        jobs: list[ClaimedJob] = []
        try:
            while True:
                if child is None:
                    child = self._spawn()  # before claiming, so a job never waits for a fork
                if not jobs:
                    jobs = worker.claim(1)
                if not jobs:
                    return
                child, jobs = self._run(worker, child, jobs[0])
        except Exception:
            log.exception("process slot crashed")
        finally:
            if child is not None:
                self._drop(child, kill=True)

    def _run(
        self, worker: Worker, child: _Child, job: ClaimedJob
    ) -> tuple[_Child | None, list[ClaimedJob]]:
        """Run one job in ``child``; return the child to use next (None: spawn one) and the
        next job if its report claimed one."""
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
            return None, []
        if answer is None:
            code = child.process.exitcode
            self._drop(child, kill=True)
            worker.failed(
                job,
                ErrorInfo(
                    "WorkerDied",
                    f"the worker process died while running the job (exit code {code})",
                ),
            )
            return None, []
        if answer == "timeout":
            self._drop(child, kill=True)
            assert job.timeout is not None
            worker.failed(job, ErrorInfo("TimeoutError", timeout_message(job.timeout)))
            return None, []
        ok, value = answer
        child.jobs += 1
        following: list[ClaimedJob] = []
        if ok:
            following = worker.finished(job, value, claim_next=1)
        else:
            worker.failed(job, value)
        if self._max_jobs is not None and child.jobs >= self._max_jobs:
            self._drop(child, kill=False)
            return None, following
        return child, following

    def _send(self, child: _Child, payload: bytes) -> _Child:
        """Send ``payload`` to ``child``, or to a fresh child if this one died while idle."""
        if child.process.is_alive():
            try:
                child.conn.send_bytes(payload)
                return child
            except OSError:
                pass  # it died between the check and the send: the job never reached it
        self._drop(child, kill=True)
        child = self._spawn()
        child.conn.send_bytes(payload)
        return child

    @staticmethod
    def _receive(child: _Child, job: ClaimedJob) -> Any:
        if job.timeout is not None:
            deadline = time.monotonic() + job.timeout
            while not child.conn.poll(max(0.0, deadline - time.monotonic())):
                if time.monotonic() >= deadline:
                    return "timeout"
        return pickle.loads(child.conn.recv_bytes())

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
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                thread.join(remaining)
        with self._lock:
            children = list(self._children)
        for child in children:
            self._drop(child, kill=True)
