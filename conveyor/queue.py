"""Queue: the facade users hold. It validates input, builds job specs and calls the backend;
the scheduling rules live in the backend, never here."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from conveyor.backends import from_url
from conveyor.backends.base import Backend
from conveyor.backends.waiting import Waiter
from conveyor.clock import Clock
from conveyor.embedded import EmbeddedWorkers
from conveyor.errors import JobCancelled, JobFailed, QueueClosed, UnknownJob
from conveyor.events import EventBus
from conveyor.handle import Job
from conveyor.job import (
    MODES,
    TERMINAL,
    JobRecord,
    Status,
    age,
    check_name,
    purge_statuses,
)
from conveyor.observe.logfile import JobLog, log_format
from conveyor.observe.progress import QueueBar, progress_bar
from conveyor.payload import Prepared, SpecBuilder, TaskRegistry, batches
from conveyor.records import JobSpec
from conveyor.references import Allowed
from conveyor.settings import load_settings
from conveyor.task import Task
from conveyor.worker.decoding import Codec

if TYPE_CHECKING:
    from conveyor.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


#: why a closed queue refuses a put
_CLOSED = "the queue is closed; it takes no more jobs"


class Queue:
    """A job queue: submit work, watch it, collect results.

    Args:
        url: ``memory://`` keeps jobs in this process; ``sqlite:///jobs.db`` (relative to the
            working directory) or ``sqlite:////abs/path/jobs.db`` in a SQLite file that worker
            processes share; ``redis://host:port/db`` on a Redis server for many hosts.
        name: the queue's name (also the prefix of its own environment variables).
        workers: slots of the queue's own workers (None: CPU count; 0: producer only), each
            started in this process at the first call that needs it: a put, or a wait for
            jobs (:mod:`conveyor.embedded`); building the queue starts none.
        mode: ``"thread"``, ``"process"``, ``"async"`` or ``"inline"``; a task may override it.
        context: run once in each worker (thread, process, event loop) before its first job;
            jobs read what it returned with ``conveyor.context()``.
        clock: the time source for delays, retries and expiry (``conveyor.testing.ManualClock``
            in tests).
        log_file: append a line per job end to this ``.csv`` or ``.jsonl`` file (see
            :meth:`log`).
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
        log_file: str | os.PathLike[str] | None = None,
        **settings: Any,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if workers is not None and (
            isinstance(workers, bool) or not isinstance(workers, int) or workers < 0
        ):
            raise ValueError(f"workers must be an int >= 0 or None, got {workers!r}")
        if log_file is not None:
            log_format(log_file)  # a bad extension is refused before anything is opened
        self.url = url
        self.name = name
        self.mode = mode
        self.settings: Settings = load_settings(name, settings)
        self.clock = clock or Clock()
        self.events = EventBus()
        self._registry = TaskRegistry(Allowed(self.settings.allow_modules))
        self.tasks: dict[str, Task[Any, Any]] = self._registry.by_name  # by @task, by name
        #: modules whose functions this queue's workers run besides its tasks (durable only)
        self.allowed = self._registry.allowed
        self.backend: Backend = from_url(
            url, clock=self.clock, events=self.events, settings=self.settings, name=name
        )
        self.durable = bool(getattr(self.backend, "durable", False))
        #: every wait on the backend (results, idle, ended jobs) and the done callbacks
        self.waiter = Waiter(self.backend, self.events)
        self._ended_at_open = (
            sum(n for status, n in self.backend.counts().items() if status in TERMINAL)
            if self.durable
            else 0
        )
        self.slots = (os.cpu_count() or 1) if workers is None else workers
        self._context = context
        serializer = getattr(self.backend, "serializer", None) if self.durable else None
        self._builder = SpecBuilder(self._registry, self.clock, mode, serializer)
        #: how this queue's workers decode the jobs they claim (its serializer, the functions
        #: it trusts) and encode their results; a Worker built on its backend takes it
        self.codec = Codec(serializer, self._registry.resolve)
        #: the queue's own workers, started when first needed (see :mod:`conveyor.embedded`)
        self.embedded = EmbeddedWorkers(
            self.backend, self.settings, self.clock, self.codec,
            slots=self.slots, mode=mode, context=context, durable=self.durable,
        )  # fmt: skip
        self._closed = False
        self.logs: list[JobLog] = []
        if log_file is not None:
            try:
                self.log(log_file)
            except BaseException:
                self.backend.close()
                raise

    @property
    def runs_workers(self) -> bool:
        """Whether this queue runs its jobs in workers of its own (``slots`` of them), now or
        once a call needs them; False for ``workers=0`` and once they were stopped."""
        return self.embedded.active

    @property
    def context(self) -> Callable[[], Any] | None:
        """The ``context`` function the queue was built with (its workers run it)."""
        return self._context

    @property
    def task_paths(self) -> Mapping[str, Task[Any, Any]]:
        """The registered tasks by import path ``module:qualname`` (read-only); a stored job
        may name a task by it, or by its name (:attr:`tasks`)."""
        return self._registry.by_path

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
        if self._closed:
            raise QueueClosed(_CLOSED)
        builder = self._builder
        prepared = builder.prepare(fn, options)
        spec = builder.spec(prepared, args, kwargs, id)
        job_id = self._submit([spec], prepared.mode, block=block)[0]
        return Job(self, job_id)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Job:
        """Submit ``fn(*args, **kwargs)`` with default options (concurrent.futures style)."""
        return self.put(fn, args, kwargs)

    def put_many(
        self, fn: Callable[..., Any], iterable: Iterable[Any], *, block: bool = True, **options: Any
    ) -> list[Job]:
        """Submit ``fn(item)`` for each item, all with the same options; return their handles,
        in input order. Nothing waits for them (``map`` does).

        Options are those of :meth:`put`, checked once: bad input (an option, an item that
        cannot be stored) raises before anything is stored. The jobs go to the backend in
        batches, each stored all or nothing (one transaction on SQLite): one batch, or batches
        of ``max_size`` jobs when it is set and ``block`` is True (each waits for room). With
        ``block`` False it is one batch, and QueueFull stores none of it. ``id=`` is refused
        (ids are generated); ``unique=True`` applies to each job (key: its function and item),
        so an item whose job is held, in the queue or earlier in the batch, returns the
        holder's handle; a unique key string is refused (it would make every job one).
        """
        ids: list[str] = []
        self._put_batches(fn, iterable, options, ids, block=block)
        return [Job(self, job_id) for job_id in ids]

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

        The jobs are submitted as :meth:`put_many` submits them. The first failure raises its
        JobFailed (the jobs not yet ended are cancelled), unless ``return_exceptions`` puts the
        exceptions in the list instead. The map's jobs are forgotten once it returns, so they
        do not reappear in ``collect()``.
        """
        ids: list[str] = []
        bar = None
        over = False  # every job of the map has ended: nothing left to cancel
        try:
            prepared = self._put_batches(fn, iterable, options, ids)
            if progress:
                bar = progress_bar(len(ids), f"map {prepared.name}")
                for job_id in ids:
                    self.waiter.add_done_callback(job_id, lambda _r: bar.update(1))
            outcomes = self.waiter.wait_results(ids, first_failure=not return_exceptions)
            over = all(status in TERMINAL for status, _result, _error in outcomes)
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
            for job_id in () if over else ids:
                with contextlib.suppress(UnknownJob):  # forgotten by someone else already
                    self._cancel(job_id, "cancelled: an earlier job of its map failed")
            if ids:
                self.backend.forget(ids)
            if bar is not None:
                bar.close()

    def _put_batches(
        self,
        fn: Callable[..., Any],
        iterable: Iterable[Any],
        options: dict[str, Any],
        ids: list[str],
        *,
        block: bool = True,
    ) -> Prepared:
        """One job ``fn(item)`` per item (``put_many`` and ``map``): every spec is built and
        checked first, then they are submitted in batches (see :func:`batches`); each batch's
        ids are appended to ``ids`` as it is stored, so a caller interrupted later knows which
        jobs exist."""
        if self._closed:
            raise QueueClosed(_CLOSED)
        prepared, specs = self._builder.many(fn, iterable, options)
        for batch in batches(specs, self.settings.max_size, block=block):
            ids += self._submit(batch, prepared.mode, block=block)
        return prepared

    def _submit(self, specs: list[JobSpec], mode: str, *, block: bool = True) -> list[str]:
        if not specs:
            return []
        # the worker first: if it cannot start (see EmbeddedWorkers.start), nothing is put
        worker = self.embedded.start(mode)
        ids = self.backend.submit(specs, block=block)
        if worker is not None and mode == "inline":
            self.embedded.drain_inline()
        return ids

    def resolve(self, ref: str) -> Callable[..., Any]:
        """The function a stored job names, if this queue trusts it: a registered task (by name
        or import path), or ``module:qualname`` of a module in ``allow_modules``. Anything else
        raises UntrustedFunction (or LookupError) before any import."""
        return self._registry.resolve(ref)

    def _register(self, task: Task[Any, Any]) -> None:
        """Make ``task`` known by its name and its import path (``Task`` calls it)."""
        self._registry.add(task)

    # --------------------------------------------------------------- waiting
    def wait(self, timeout: float | None = None, *, progress: bool = False) -> int:
        """Block until nothing is waiting, scheduled or running; return how many still are."""
        self.embedded.start()
        watchers: list[Callable[[dict[Status, int]], object]] = []
        inline = self.embedded.inline()
        if inline is not None:  # inline jobs run in the waiting thread, as they become due
            watchers.append(lambda _counts: inline.drain())
        bar = None
        if progress:
            bar = QueueBar(self.backend.counts(), self._ended_at_open, self.name)
            watchers.append(bar.show)

        def on_change(counts: dict[Status, int]) -> None:
            for watcher in watchers:
                watcher(counts)

        try:
            return self.waiter.wait_idle(timeout, on_change=on_change if watchers else None)
        finally:
            if bar is not None:
                bar.close()

    def get(self, *, wait: bool = False, timeout: float | None = None) -> JobRecord | None:
        """Pop one ended job (the earliest to end); None if there is none.

        With ``wait`` (or a ``timeout``) it waits for one to end, up to ``timeout`` seconds.
        """
        if not wait and timeout is None:
            timeout = 0
        else:
            self.embedded.start()
        self.embedded.drain_inline()
        popped = self.waiter.pop(1, timeout)
        return popped[0] if popped else None

    def collect(self) -> list[JobRecord]:
        """Pop every ended job, in the order they ended."""
        self.embedded.drain_inline()
        return self.backend.pop_ended(None)

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
        self.embedded.start()
        self.embedded.drain_inline()
        record = self.waiter.wait_done(job_id, timeout)
        if record.status is Status.FINISHED:
            return record.result
        raise self._error(record)

    def _error(self, record: JobRecord) -> JobFailed | JobCancelled:
        if record.status is Status.CANCELLED:
            return JobCancelled(record.id, record.error)
        error = record.error or "failed"
        failure = JobFailed(record.id, error, error.partition(":")[0], record.traceback)
        if not self.durable:  # what an in-process job raised, kept by the worker that ran it
            failure.__cause__ = self.embedded.exception(record.id)
        return failure

    def job(self, job_id: str) -> JobRecord:
        """Everything known about one job; raises UnknownJob."""
        return self.backend.get(job_id)

    def cancel(self, job_id: str) -> bool:
        """Cancel a job, stopping it if it runs; False if it had already ended."""
        return self._cancel(job_id)

    def _cancel(self, job_id: str, reason: str = "cancelled") -> bool:
        """Cancel a job; if one of this queue's own workers runs it, stop it there (a worker
        elsewhere learns it from its heartbeat)."""
        cancelled = self.backend.cancel(job_id, reason)
        if cancelled.worker is not None:
            self.embedded.stop_job(cancelled.worker, job_id, reason)
        return cancelled.ended

    def forget(self, job_id: str) -> None:
        """Drop an ended job and its result."""
        self.backend.forget([job_id], strict=True)

    def retry(self, job_id: str) -> Job:
        """Put a failed or cancelled job back to waiting, attempts reset; how it ended is kept
        in ``meta["conveyor.history"]``. Its dependencies must have finished (or be waiting or
        running again); dependents cancelled by its end stay cancelled (retry them too).
        Raises UnknownJob, or InvalidJob (and changes nothing) if it cannot be retried."""
        self.backend.retry(job_id)
        self.embedded.drain_inline()
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
        statuses = set(TERMINAL) if status is None else purge_statuses(status)
        if task is not None:
            check_name(task, "task")
        before = None if older_than is None else self.clock.now() - age(older_than)
        return self.backend.purge(statuses, task, before)

    def jobs(self, status: Status | str | None = None) -> list[JobRecord]:
        """Records of every job the queue holds (or of one status), in submission order."""
        return self.backend.query(None if status is None else Status(status))

    def dataframe(self, status: Status | str | None = None) -> Any:
        """:meth:`jobs` as a pandas DataFrame (``pip install 'conveyor[pandas]'``): a column per
        record field, plus ``wait`` (see :mod:`conveyor.observe.table`)."""
        from conveyor.observe.table import dataframe

        return dataframe(self.jobs(status))

    def plot(self, path: str | os.PathLike[str] | None = None, **options: Any) -> Any:
        """A Gantt timeline of :meth:`jobs`: saved as PNG at ``path`` (returned), else a
        matplotlib Figure (``pip install 'conveyor[plot]'``); options of :func:`conveyor.plot`."""
        from conveyor.observe.timeline import plot

        return plot(self.jobs(), path, **options)

    def log(self, path: str | os.PathLike[str]) -> None:
        """Append a line per job end (finished, failed, cancelled) to ``path``: CSV or JSONL by
        its extension (else ValueError), written by the process that ended the job (see
        :mod:`conveyor.observe.logfile`): give every process of the queue the same log."""
        self.logs.append(JobLog(path).listen(self.events))

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
        """Stop the queue's own workers; with ``wait``, after every queued job has ended.

        A queue whose workers never started (a producer-only one, ``workers=0``, or one that
        neither put nor waited) never waits: its jobs are for other workers.
        """
        if self._closed:
            return
        if wait and self.embedded.modes:
            self.wait()
        self._closed = True
        self.embedded.stop(wait)
        self.backend.close()
        for log in self.logs:
            log.close()

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
