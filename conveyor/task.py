"""Task: what ``@queue.task(...)`` returns — the function plus its default put options."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar

from conveyor.errors import InvalidJob
from conveyor.job import MODES, JobOptions, check_name

if TYPE_CHECKING:
    from conveyor.handle import Job

P = ParamSpec("P")
R = TypeVar("R")


class TaskQueue(Protocol):
    """What a task uses of its queue (:class:`conveyor.Queue`); this module does not import
    :mod:`conveyor.queue` (which imports it)."""

    def put(
        self,
        fn: Callable[..., Any],
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        id: str | None = None,
        block: bool = True,
        **options: Any,
    ) -> Job: ...

    def put_many(
        self, fn: Callable[..., Any], iterable: Iterable[Any], *, block: bool = True, **options: Any
    ) -> list[Job]: ...

    def map(
        self,
        fn: Callable[..., Any],
        iterable: Iterable[Any],
        *,
        progress: bool = False,
        return_exceptions: bool = False,
        **options: Any,
    ) -> list[Any]: ...

    def _register(self, task: Task[Any, Any]) -> None: ...


class Task(Generic[P, R]):
    """A function registered with a queue. Calling it runs it here, now."""

    def __init__(
        self,
        queue: TaskQueue,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        mode: str | None = None,
        max_concurrency: int | None = None,
        **defaults: Any,
    ) -> None:
        if not callable(fn):
            raise InvalidJob(f"@task needs a function, got {fn!r}")
        if mode is not None and mode not in MODES:
            raise InvalidJob(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if max_concurrency is not None and (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or max_concurrency < 1
        ):
            raise InvalidJob(f"max_concurrency must be an int >= 1, got {max_concurrency!r}")
        try:
            JobOptions.build(now=0.0, **defaults)  # refuse a bad default now, not at put
        except TypeError as exc:
            raise InvalidJob(f"unknown task option: {exc}") from None
        self.queue = queue
        self.fn = fn
        self.name = (
            check_name(name, "a task name")
            if name is not None
            else getattr(fn, "__qualname__", None) or repr(fn)
        )
        self.mode = mode
        self.max_concurrency = max_concurrency
        self.defaults = defaults
        functools.update_wrapper(self, fn)
        queue._register(self)  # a worker resolves stored jobs by its name or path

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Put a job calling the task with these arguments and its default options."""
        return self.queue.put(self, args, kwargs)

    def put(
        self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Job:
        """Put a job, with options overriding the task's defaults."""
        return self.queue.put(self, args, kwargs, **options)

    def put_many(self, iterable: Iterable[Any], **options: Any) -> list[Job]:
        """Put one job per item, ``task(item)``, with options overriding the task's defaults;
        their handles in input order (see ``Queue.put_many``)."""
        return self.queue.put_many(self, iterable, **options)

    def map(self, iterable: Iterable[Any], **options: Any) -> list[Any]:
        """Run the task on each item; results in input order (see ``Queue.map``)."""
        return self.queue.map(self, iterable, **options)

    def __repr__(self) -> str:
        return f"<Task {self.name!r}>"
