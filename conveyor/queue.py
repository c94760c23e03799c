"""Queue: the facade users hold. It validates input, builds job specs and calls the backend;
the scheduling rules live in the backend, never here."""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import os
import pickle
import sys
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from conveyor import rules
from conveyor.backends import from_url
from conveyor.backends.base import Backend
from conveyor.clock import Clock
from conveyor.errors import (
    ConveyorError,
    InvalidJob,
    JobCancelled,
    JobFailed,
    NotSerializable,
    QueueClosed,
    UnknownJob,
    UntrustedFunction,
)
from conveyor.events import EventBus
from conveyor.executors import build as build_executor
from conveyor.executors.base import Executor
from conveyor.executors.inline import InlineExecutor
from conveyor.handle import Job
from conveyor.job import ACTIVE, MODES, TERMINAL, JobOptions, JobRecord, Status, check_name
from conveyor.observe.progress import progress_bar
from conveyor.records import JobSpec
from conveyor.references import Allowed, how_to_trust, path_of, reference, resolve
from conveyor.task import Task
from conveyor.worker import Worker

if TYPE_CHECKING:
    from conveyor.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


#: True while the command line imports an app: queues built then start no workers of their own
_workers_held: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "conveyor_workers_held", default=False
)


@contextlib.contextmanager
def workers_held() -> Iterator[None]:
    """Queues built inside this block start no embedded workers; they keep their ``slots``
    (``conveyor worker`` takes them as its default). The command line imports apps in it."""
    token = _workers_held.set(True)
    try:
        yield
    finally:
        _workers_held.reset(token)


def _check_not_reimported() -> None:
    """Refuse a queue with workers built by the top level of a script that a new process
    imports again (as ``__mp_main__``: the forkserver, or a spawned worker process): the script
    lacks the ``if __name__ == "__main__":`` guard, and its jobs would run again there."""
    process = sys.modules.get("multiprocessing.process")
    if process is None or not getattr(process.current_process(), "_inheriting", False):
        return
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_name != "<module>":
        frame = frame.f_back  # the module whose top level builds this queue
    if frame is not None and frame.f_globals.get("__name__") == "__mp_main__":
        raise ConveyorError(
            f"the script {frame.f_globals.get('__file__', '')} is being imported again by a"
            " new process (that is how worker processes start) and builds a queue with workers"
            ' at its top level: put that code under `if __name__ == "__main__":`'
        )


def _load_settings(name: str, given: dict[str, Any]) -> Settings:
    """The queue's settings; pydantic-settings is imported here, not by ``import conveyor``."""
    from conveyor.settings_model import Settings

    return Settings.load(name, **given)


#: the options of a job put without any
_DEFAULT_OPTIONS = JobOptions.build(now=0.0)


class _Prepared:
    """What every job of one put or map shares: function, task name, mode, options."""

    __slots__ = ("fn", "limit", "mode", "name", "options", "ref")

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        mode: str,
        options: JobOptions,
        limit: int | None,
        ref: str | None = None,
    ) -> None:
        self.fn, self.name, self.mode, self.options, self.limit = fn, name, mode, options, limit
        self.ref = ref


def _status(value: Status | str) -> Status:
    try:
        return Status(value)
    except ValueError:
        known = ", ".join(s.value for s in Status)
        raise InvalidJob(f"unknown status {value!r} (one of {known})") from None


class Queue:
    """A job queue: submit work, watch it, collect results.

    Args:
        url: ``memory://`` keeps jobs in this process; ``sqlite:///jobs.db`` (relative to the
            working directory) or ``sqlite:////abs/path/jobs.db`` keeps them in a SQLite file
            that worker processes share (``sqlite:jobs.db`` is refused).
        name: the queue's name (also the prefix of its own environment variables).
        workers: worker slots started with the queue (None: CPU count; 0: producer only).
        mode: ``"thread"``, ``"process"``, ``"async"`` or ``"inline"``; a task may override it.
        context: run once in each worker (thread, process, event loop) before its first job;
            jobs read what it returned with ``conveyor.context()``.
        clock: the time source for delays, retries and expiry (``conveyor.testing.ManualClock``
            in tests).
        **settings: see :class:`conveyor.settings.Settings` (``max_size``,
            ``max_jobs_per_process``, ``graceful_timeout`` ...).
    """

    def __init__(
        self,
        url: str = "memory://",
        *,
        name: str = "default",
        workers: int | None = None,
        mode: str = "thread",
        context: Callable[[], Any] | None = None,
        clock: Clock | None = None,
        **settings: Any,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if workers is not None and (
            isinstance(workers, bool) or not isinstance(workers, int) or workers < 0
        ):
            raise ValueError(f"workers must be an int >= 0 or None, got {workers!r}")
        if (workers is None or workers > 0) and not _workers_held.get():
            _check_not_reimported()
        self.url = url
        self.name = name
        self.mode = mode
        self.settings: Settings = _load_settings(name, settings)
        self.clock = clock or Clock()
        self.events = EventBus()
        self.tasks: dict[str, Task[Any, Any]] = {}  # registered by @task, found by name
        #: the registered tasks by import path: a stored job may name one either way
        self._task_paths: dict[str, Task[Any, Any]] = {}
        #: modules whose functions this queue's workers run besides its tasks (durable only)
        self.allowed = Allowed(self.settings.allow_modules)
        self.backend: Backend = from_url(
            url, clock=self.clock, events=self.events, settings=self.settings,
            resolver=self.resolve,
        )  # fmt: skip
        self.durable = bool(getattr(self.backend, "durable", False))
        self._ended_at_open = (
            sum(n for status, n in self.backend.counts().items() if status in TERMINAL)
            if self.durable
            else 0
        )
        self.slots = (os.cpu_count() or 1) if workers is None else workers
        self._context = context
        self._workers: dict[str, Worker] = {}
        self._lock = threading.Lock()
        self._encoded: weakref.WeakKeyDictionary[Callable[..., Any], bytes] = (
            weakref.WeakKeyDictionary()
        )
        #: import paths of the functions put so far (durable backends)
        self._references: weakref.WeakKeyDictionary[Callable[..., Any], str] = (
            weakref.WeakKeyDictionary()
        )
        self._id_prefix = uuid.uuid4().hex[:12] + "-"
        self._id_numbers = itertools.count(1)
        self._closed = False
        self.backend.set_stop_hook(self._stop_job)
        #: whether this queue runs its jobs in workers of its own (``slots`` of them)
        self.runs_workers = bool(self.slots) and not _workers_held.get()
        if self.runs_workers:
            try:
                self._worker_for(mode)
            except BaseException:
                self.backend.close()
                raise

    # ------------------------------------------------------------ submitting
    def put(
        self,
        fn: Callable[..., Any],
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        id: str | None = None,
        block: bool = True,
        **options: Any,
    ) -> Job:
        """Submit one job; return its handle.

        Options (all checked here; bad input raises InvalidJob and changes nothing):
        ``after``, ``exclusive``, ``incompatible``, ``lane``, ``stop_on_lane_error``,
        ``priority`` (lower first), ``timeout``, ``expires``, ``retries``, ``retry_delay``,
        ``backoff``, ``delay``, ``at``, ``unique``, ``unique_for``, ``meta``. With ``max_size``
        set, a full queue makes put wait, or raise QueueFull when ``block`` is False.
        """
        prepared = self._prepare(fn, options)
        spec = self._spec(prepared, args, kwargs, id)
        job_id = self._submit([spec], prepared.mode, block=block)[0]
        return Job(self, job_id)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Job:
        """Submit ``fn(*args, **kwargs)`` with default options (concurrent.futures style)."""
        return self.put(fn, args, kwargs)

    def map(
        self,
        fn: Callable[..., Any],
        iterable: Iterable[Any],
        *,
        progress: bool = False,
        return_exceptions: bool = False,
        **options: Any,
    ) -> list[Any]:
        """Run ``fn(item)`` for each item; return the results in input order.

        The first failure raises its JobFailed (the jobs not yet ended are cancelled), unless
        ``return_exceptions`` puts the exceptions in the list instead. The map's jobs are
        forgotten once it returns, so they do not reappear in ``collect()``.
        """
        prepared = self._prepare(fn, options)
        specs = [self._spec(prepared, (item,), None, None) for item in iterable]
        bar = progress_bar(len(specs), f"map {prepared.name}") if progress else None
        ids: list[str] = []
        try:
            chunk = self.settings.max_size or len(specs) or 1
            for start in range(0, len(specs), chunk):
                ids += self._submit(specs[start : start + chunk], prepared.mode)
            if bar is not None:
                for job_id in ids:
                    self.backend.add_done_callback(job_id, lambda _r: bar.update(1))
            outcomes = self.backend.wait_results(ids, first_failure=not return_exceptions)
            results = []
            for job_id, (status, result, _error) in zip(ids, outcomes, strict=True):
                if status is Status.FINISHED:
                    results.append(result)
                elif status not in TERMINAL:
                    continue  # still running: a later job failed and ended the wait early
                elif return_exceptions:
                    results.append(self._error(self.backend.get(job_id)))
                else:
                    raise self._error(self.backend.get(job_id))
            return results
        finally:
            for job_id in ids:
                with contextlib.suppress(UnknownJob):  # forgotten by someone else already
                    self.backend.cancel(job_id, "cancelled: an earlier job of its map failed")
            self.backend.forget_many(ids)
            if bar is not None:
                bar.close()

    def _prepare(self, fn: Callable[..., Any], options: dict[str, Any]) -> _Prepared:
        if self._closed:
            raise QueueClosed("the queue is closed; it takes no more jobs")
        limit = None
        task = fn if isinstance(fn, Task) else None
        if task is not None:
            options = {**task.defaults, **options}
            name, mode, limit, fn = task.name, task.mode or self.mode, task.max_concurrency, task.fn
        elif callable(fn):
            name, mode = getattr(fn, "__qualname__", None) or repr(fn), self.mode
        else:
            raise InvalidJob(f"put needs a callable, got {fn!r}")
        if not options:
            job_options = _DEFAULT_OPTIONS  # nothing in them depends on the time
        else:
            try:
                job_options = JobOptions.build(now=self.clock.now(), **options)
            except TypeError as exc:
                raise InvalidJob(f"unknown put option: {exc}") from None
        ref = None
        if self.durable:
            ref = self._reference(fn, name, task)
            self._check_trusted(ref, name, task)
        return _Prepared(fn, name, mode, job_options, limit, ref)

    def _check_trusted(self, ref: str, name: str, task: Task[Any, Any] | None) -> None:
        """Refuse at put what this queue's workers would refuse to run."""
        if task is not None and self.tasks.get(task.name) is task:
            return
        if ref in self._task_paths or ref in self.tasks:
            return
        module = ref.partition(":")[0]
        if module in self.allowed:
            return
        raise UntrustedFunction(
            f"{name!r} ({ref}) is neither a task registered with this queue nor from a module "
            f"it allows, so its workers would refuse to run it; {how_to_trust(module)}"
        )

    def _reference(self, fn: Callable[..., Any], name: str, task: Task[Any, Any] | None) -> str:
        """How a worker process will find ``fn``: its import path, else its task name."""
        with contextlib.suppress(KeyError, TypeError):
            return self._references[fn]
        try:
            ref = reference(fn, name)
        except NotSerializable:
            if task is not None and self.tasks.get(task.name) is task:
                return task.name
            raise
        with contextlib.suppress(TypeError):  # not weak-referenceable: looked up each time
            self._references[fn] = ref
        return ref

    def _spec(
        self,
        prepared: _Prepared,
        args: Iterable[Any],
        kwargs: dict[str, Any] | None,
        job_id: str | None,
    ) -> JobSpec:
        if not isinstance(args, tuple):
            if not isinstance(args, list):
                raise InvalidJob(f"args must be a tuple or list, got {type(args).__name__}")
            args = tuple(args)
        if kwargs is None:
            kwargs = {}
        elif not isinstance(kwargs, dict):
            raise InvalidJob(f"kwargs must be a dict, got {type(kwargs).__name__}")
        if job_id is None:
            job_id = self._id_prefix + str(next(self._id_numbers))
        else:
            check_name(job_id, "a job id")
        options = prepared.options
        if options.unique == "":
            options = options.replace(unique=rules.unique_key(prepared.name, args, kwargs))
        payload = ref = None
        if self.durable:
            ref, payload = prepared.ref, self._encode_durable(args, kwargs, job_id)
        elif prepared.mode == "process":
            payload = self._encode(prepared, args, kwargs, job_id)
        return JobSpec(
            job_id, prepared.name, prepared.mode, options, prepared.fn, args, kwargs, payload,
            prepared.limit, ref,
        )  # fmt: skip

    def _encode_durable(self, args: tuple[Any, ...], kwargs: dict[str, Any], job_id: str) -> bytes:
        serializer = self.backend.serializer  # type: ignore[attr-defined]
        try:
            encoded: bytes = serializer.dumps([list(args), kwargs])
        except NotSerializable as exc:
            raise NotSerializable(
                f"the arguments of job {job_id!r} cannot be stored: {exc}"
            ) from None
        return encoded

    def resolve(self, ref: str) -> Callable[..., Any]:
        """The function a stored job names, if this queue trusts it: a registered task (by name
        or import path), or ``module:qualname`` of a module in ``allow_modules``. Anything else
        raises UntrustedFunction (or LookupError) before any import."""
        task = self.tasks.get(ref) or self._task_paths.get(ref)
        if task is not None:
            return task.fn
        if ":" not in ref:
            raise LookupError(
                f"no task named {ref!r} is registered with this queue; import the module that "
                "defines it in the worker's app"
            )
        return resolve(ref, self.allowed)

    def _register(self, task: Task[Any, Any]) -> None:
        """Make ``task`` known by its name and its import path (``@q.task`` calls it)."""
        self.tasks[task.name] = task
        path = path_of(task.fn)
        if path is not None:
            self._task_paths[path] = task

    def _encode(
        self, prepared: _Prepared, args: tuple[Any, ...], kwargs: dict[str, Any], job_id: str
    ) -> bytes:
        from conveyor.executors.process import encode_function, encode_payload

        fn = prepared.fn
        try:
            fn_bytes = self._encoded[fn]
        except (KeyError, TypeError):
            try:
                fn_bytes = encode_function(fn)
            except Exception as exc:
                raise NotSerializable(
                    f"{prepared.name} cannot be sent to a worker process ({exc}); define it at "
                    "module level or use mode='thread'"
                ) from None
            with contextlib.suppress(TypeError):  # not weak-referenceable: encode each time
                self._encoded[fn] = fn_bytes
        try:
            return encode_payload(fn_bytes, args, kwargs)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise NotSerializable(
                f"the arguments of job {job_id!r} cannot be pickled for a worker process "
                f"({exc}); pass plain data, or use mode='thread'"
            ) from None

    def _submit(self, specs: list[JobSpec], mode: str, *, block: bool = True) -> list[str]:
        if not specs:
            return []
        # the worker first: if it cannot start (see _worker_for), nothing is submitted
        worker = self._worker_for(mode) if self.runs_workers else None
        ids = self.backend.submit(specs, block=block)
        if worker is not None and isinstance(worker.executor, InlineExecutor):
            worker.executor.drain()
        return ids

    # --------------------------------------------------------------- workers
    def _worker_for(self, mode: str) -> Worker:
        worker = self._workers.get(mode)
        if worker is not None:
            return worker
        with self._lock:
            worker = self._workers.get(mode)
            if worker is None:
                if mode == "process":
                    from conveyor.executors.process import check_can_start

                    check_can_start()  # fails fast where processes would never start
                worker = Worker(
                    self.backend,
                    self._executor(mode),
                    lease=self.settings.lease,
                    clock=self.clock,
                    prefetch=self.settings.prefetch if self.durable else 0,
                )
                # on a durable backend other processes recover expired leases: keep ours fresh
                worker.start(heartbeat=self.durable)
                self._workers[mode] = worker
            return worker

    def _executor(self, mode: str) -> Executor:
        return build_executor(
            mode,
            self.slots,
            context=self._context,
            max_jobs_per_process=self.settings.max_jobs_per_process,
        )

    def _drain_inline(self) -> None:
        worker = self._workers.get("inline")
        if worker is not None and isinstance(worker.executor, InlineExecutor):
            worker.executor.drain()

    def _stop_job(self, job_id: str, reason: str) -> None:
        for worker in list(self._workers.values()):
            worker.stop_job(job_id, reason)

    # --------------------------------------------------------------- waiting
    def wait(self, timeout: float | None = None, *, progress: bool = False) -> int:
        """Block until nothing is waiting, scheduled or running; return how many still are."""
        watchers: list[Callable[[dict[Status, int]], object]] = []
        inline = self._workers.get("inline")
        if inline is not None and isinstance(inline.executor, InlineExecutor):
            # inline jobs run in the waiting thread, as they become due
            executor = inline.executor
            watchers.append(lambda _counts: executor.drain())
        bar = None
        if progress:
            # jobs that had ended before this queue object was built (earlier runs on a
            # durable file) are not this run's progress
            start = self.backend.counts()
            ended_before = min(self._ended_at_open, sum(start[status] for status in TERMINAL))
            bar = progress_bar(sum(start.values()) - ended_before, f"queue {self.name}")

            def show(counts: dict[Status, int]) -> None:
                ended = max(0, sum(counts[status] for status in TERMINAL) - ended_before)
                bar.total = ended + sum(counts[status] for status in ACTIVE)
                bar.n = ended
                bar.refresh()

            watchers.append(show)

        def on_change(counts: dict[Status, int]) -> None:
            for watcher in watchers:
                watcher(counts)

        try:
            return self.backend.wait_idle(timeout, on_change=on_change if watchers else None)
        finally:
            if bar is not None:
                bar.close()

    def get(self, *, wait: bool = False, timeout: float | None = None) -> JobRecord | None:
        """Pop one ended job (the earliest to end); None if there is none.

        With ``wait`` (or a ``timeout``) it waits for one to end, up to ``timeout`` seconds.
        """
        self._drain_inline()
        if not wait and timeout is None:
            timeout = 0
        popped = self.backend.pop_finished(1, timeout=timeout)
        return popped[0] if popped else None

    def collect(self) -> list[JobRecord]:
        """Pop every ended job, in the order they ended."""
        self._drain_inline()
        return self.backend.pop_finished(None, timeout=0)

    def size(self, *statuses: Status | str) -> int:
        """How many jobs the queue holds, in all statuses or in those given."""
        counts = self.backend.counts()
        if not statuses:
            return sum(counts.values())
        return sum(counts[Status(status)] for status in statuses)

    # ----------------------------------------------------------------- by id
    def status(self, job_id: str) -> Status:
        """The job's status; raises UnknownJob."""
        return self.backend.get(job_id).status

    def result(self, job_id: str, timeout: float | None = None) -> Any:
        """Wait for the job and return its result, without popping it.

        Raises JobFailed, JobCancelled, TimeoutError, or UnknownJob.
        """
        self._drain_inline()
        record = self.backend.wait_done(job_id, timeout)
        if record.status is Status.FINISHED:
            return record.result
        raise self._error(record)

    def _error(self, record: JobRecord) -> JobFailed | JobCancelled:
        if record.status is Status.CANCELLED:
            return JobCancelled(record.id, record.error)
        error = record.error or "failed"
        failure = JobFailed(record.id, error, error.partition(":")[0], record.traceback)
        original = getattr(self.backend, "exception", None)
        if original is not None:
            with contextlib.suppress(UnknownJob):  # forgotten meanwhile: nothing to chain
                failure.__cause__ = original(record.id)
        return failure

    def job(self, job_id: str) -> JobRecord:
        """Everything known about one job; raises UnknownJob."""
        return self.backend.get(job_id)

    def cancel(self, job_id: str) -> bool:
        """Cancel a job, stopping it if it runs; False if it had already ended."""
        return self.backend.cancel(job_id)

    def forget(self, job_id: str) -> None:
        """Drop an ended job and its result."""
        self.backend.forget(job_id)

    def retry(self, job_id: str) -> Job:
        """Put a failed or cancelled job back to waiting, attempts reset; how it ended is kept
        in ``meta["conveyor.history"]``. Its dependencies must have finished (or be waiting or
        running again); dependents cancelled by its end stay cancelled (retry them too).
        Raises UnknownJob, or InvalidJob (and changes nothing) if it cannot be retried."""
        self.backend.retry(job_id)
        if self.runs_workers:
            self._drain_inline()
        return Job(self, job_id)

    def purge(
        self,
        status: Status | str | Iterable[Status | str] | None = None,
        *,
        task: str | None = None,
        older_than: float | None = None,
    ) -> int:
        """Drop jobs and their results; return how many.

        ``status``: one or several (default: the ended ones, finished, failed and cancelled);
        waiting and scheduled jobs named here are cancelled first, with the usual cascade to
        their dependents; running jobs are never purged (InvalidJob). ``task``: only jobs of
        this task. ``older_than``: only jobs that ended (or, not started, were submitted) more
        than this many seconds ago.
        """
        if status is None:
            statuses = set(TERMINAL)
        elif isinstance(status, str):
            statuses = {_status(status)}
        else:
            statuses = {_status(s) for s in status}
        if task is not None:
            check_name(task, "task")
        before = None
        if older_than is not None:
            if isinstance(older_than, bool) or not isinstance(older_than, int | float):
                raise InvalidJob(f"older_than must be a number of seconds, got {older_than!r}")
            if not older_than >= 0:
                raise InvalidJob(f"older_than must be >= 0 seconds, got {older_than!r}")
            before = self.clock.now() - older_than
        return self.backend.purge(statuses, task, before)

    def jobs(self, status: Status | str | None = None) -> list[JobRecord]:
        """Records of every job the queue holds (or of one status), in submission order."""
        return self.backend.query(None if status is None else Status(status))

    # ------------------------------------------------------------ decorators
    @overload
    def task(self, fn: F, /) -> Task[Any, Any]: ...
    @overload
    def task(self, fn: None = None, /, **options: Any) -> Callable[[F], Task[Any, Any]]: ...

    def task(
        self, fn: Callable[..., Any] | None = None, /, **options: Any
    ) -> Task[Any, Any] | Callable[[F], Task[Any, Any]]:
        """Register a function as a task: ``@q.task`` or ``@q.task(retries=3, ...)``.

        Options: ``name``, ``mode``, ``max_concurrency`` and any put option as a default.
        """
        if fn is not None:
            return Task(self, fn)
        return lambda f: Task(self, f, **options)

    def on(self, event: str, callback: Callable[[JobRecord], object]) -> None:
        """Call ``callback(record)`` on each ``event``: queued, started, finished, failed,
        retrying, cancelled. Callbacks run in the thread that caused the event."""
        self.events.on(event, callback)

    # ---------------------------------------------------------------- closing
    def close(self, wait: bool = True) -> None:
        """Stop the embedded workers; with ``wait``, after every queued job has ended.

        A producer-only queue (``workers=0``) never waits: its jobs are for other workers.
        """
        if self._closed:
            return
        if wait and self.runs_workers:
            self.wait()
        self._closed = True
        for worker in list(self._workers.values()):
            if wait:
                worker.stop(None)
            elif self.durable:
                worker.stop(0)  # put running jobs back now rather than after their lease
            else:
                worker.stop(wait=False)
        self.backend.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(wait=exc_type is None)

    async def __aenter__(self) -> Queue:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        import asyncio  # here, not at the top: it costs a worker's start-up 30 ms

        await asyncio.to_thread(self.close, exc_type is None)

    def __repr__(self) -> str:
        return f"<Queue {self.name!r} {self.url} workers={self.slots} mode={self.mode}>"
