"""What a put becomes before it reaches the backend: a :class:`~conveyor.records.JobSpec`
holding the job's id, its function's reference (checked against what the queue's workers
trust), its encoded arguments and its options.

Two parts, both owned by a :class:`~conveyor.queue.Queue`:

- :class:`TaskRegistry`: the queue's tasks by name and import path, and the modules it
  allows; a worker resolves a stored reference against it (:meth:`TaskRegistry.resolve`);
- :class:`SpecBuilder`: checks a put's function and options once (:meth:`~SpecBuilder.prepare`),
  then builds one spec per job (:meth:`~SpecBuilder.spec`), encoding what must cross a process
  (the arguments of a durable job, the function and arguments of an in-memory process job;
  any other in-memory job's payload is its :class:`~conveyor.records.Call`).
"""

from __future__ import annotations

import contextlib
import itertools
import pickle
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from conveyor import rules
from conveyor.errors import InvalidJob, NotSerializable, UntrustedFunction
from conveyor.job import JobOptions, check_name
from conveyor.records import Call, JobSpec
from conveyor.references import Allowed, how_to_trust, path_of, reference, resolve
from conveyor.task import Task

if TYPE_CHECKING:
    from conveyor.clock import Clock
    from conveyor.serializer import Serializer

#: the options of a job put without any
_DEFAULT_OPTIONS = JobOptions.build(now=0.0)


class TaskRegistry:
    """The tasks registered with one queue (``@q.task``), found by name or by import path,
    and the modules whose functions its workers run besides them (``allow_modules``)."""

    def __init__(self, allowed: Allowed) -> None:
        #: the registered tasks by name (``Queue.tasks`` is this dict)
        self.by_name: dict[str, Task[Any, Any]] = {}
        self._by_path: dict[str, Task[Any, Any]] = {}
        #: the registered tasks by import path ``module:qualname`` (read-only)
        self.by_path: Mapping[str, Task[Any, Any]] = MappingProxyType(self._by_path)
        #: modules whose functions the queue's workers run besides its tasks (durable only)
        self.allowed = allowed
        #: references resolved in allowed modules: ref -> (the Allowed that let it, function)
        self._resolved: dict[str, tuple[Allowed, Callable[..., Any]]] = {}

    def add(self, task: Task[Any, Any]) -> None:
        """Make ``task`` known by its name and its import path."""
        self.by_name[task.name] = task
        path = path_of(task.fn)
        if path is not None:
            self._by_path[path] = task

    def owns(self, task: Task[Any, Any]) -> bool:
        """Whether ``task`` is the one registered here under its name."""
        return self.by_name.get(task.name) is task

    def check_trusted(self, ref: str, name: str, task: Task[Any, Any] | None) -> None:
        """Refuse at put what the queue's workers would refuse to run (UntrustedFunction)."""
        if task is not None and self.owns(task):
            return
        if ref in self._by_path or ref in self.by_name:
            return
        module = ref.partition(":")[0]
        if module in self.allowed:
            return
        raise UntrustedFunction(
            f"{name!r} ({ref}) is neither a task registered with this queue nor from a module "
            f"it allows, so its workers would refuse to run it; {how_to_trust(module)}"
        )

    def resolve(self, ref: str) -> Callable[..., Any]:
        """The function a stored job names, if the queue trusts it: a registered task (by name
        or import path), or ``module:qualname`` of an allowed module. Anything else raises
        UntrustedFunction (or LookupError) before any import."""
        task = self.by_name.get(ref) or self._by_path.get(ref)
        if task is not None:
            return task.fn
        if ":" not in ref:
            raise LookupError(
                f"no task named {ref!r} is registered with this queue; import the module that "
                "defines it in the worker's app"
            )
        resolved = self._resolved.get(ref)
        if resolved is not None and resolved[0] is self.allowed:
            return resolved[1]  # checked and imported once: every job of it runs the same
        fn = resolve(ref, self.allowed)
        self._resolved[ref] = (self.allowed, fn)
        return fn


class Prepared:
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


def batches(specs: list[JobSpec], max_size: int | None, *, block: bool) -> list[list[JobSpec]]:
    """How a bulk submit (``put_many``, ``map``) cuts its jobs into backend batches, each
    stored all or nothing: with ``max_size`` set and ``block`` True, batches of ``max_size``
    (each fits an emptied queue, so waiting for room ends); else one batch of everything."""
    size = max_size if max_size and block else len(specs)
    return [specs[start : start + size] for start in range(0, len(specs), size or 1)]


class SpecBuilder:
    """Turns a put's function, arguments and options into JobSpecs for one queue.

    Args:
        registry: the queue's tasks and allowed modules.
        clock: the queue's clock (options relative to now: ``delay``, ``expires``).
        mode: the queue's mode, a job's mode unless its task has one.
        serializer: the durable backend's serializer (the arguments are stored encoded and
            the function by reference); None for an in-memory backend.
    """

    def __init__(
        self, registry: TaskRegistry, clock: Clock, mode: str, serializer: Serializer | None
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.mode = mode
        self.serializer = serializer
        self._durable = serializer is not None
        #: the encoded functions of in-memory process jobs
        self._encoded: weakref.WeakKeyDictionary[Callable[..., Any], bytes] = (
            weakref.WeakKeyDictionary()
        )
        #: import paths of the functions put so far (durable backends)
        self._references: weakref.WeakKeyDictionary[Callable[..., Any], str] = (
            weakref.WeakKeyDictionary()
        )
        self._id_prefix = uuid.uuid4().hex[:12] + "-"
        self._id_numbers = itertools.count(1)

    def prepare(self, fn: Callable[..., Any], options: dict[str, Any]) -> Prepared:
        """Check a put's function and options once for all its jobs (InvalidJob,
        NotSerializable, UntrustedFunction)."""
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
        if self._durable:
            ref = self._reference(fn, name, task)
            self.registry.check_trusted(ref, name, task)
        return Prepared(fn, name, mode, job_options, limit, ref)

    def many(
        self, fn: Callable[..., Any], iterable: Iterable[Any], options: dict[str, Any]
    ) -> tuple[Prepared, list[JobSpec]]:
        """A bulk put (``put_many``, ``map``): one job ``fn(item)`` per item, all with the same
        options, every spec built and checked before any is submitted. ``id=`` is refused (the
        ids are generated), and so is a unique key string (it would make every job one job;
        ``unique=True`` gives each job its own key)."""
        if "id" in options:
            raise InvalidJob("id= names one job; put_many and map generate their jobs' ids")
        if isinstance(options.get("unique"), str):
            raise InvalidJob(
                "a unique key string would make every job of the batch the same job; "
                "unique=True gives each job its own key (its function and item)"
            )
        try:
            items = iter(iterable)
        except TypeError:
            raise InvalidJob(
                f"expected an iterable of items, got {type(iterable).__name__}"
            ) from None
        prepared = self.prepare(fn, options)
        spec = self.spec
        return prepared, [spec(prepared, (item,), None, None) for item in items]

    def spec(
        self,
        prepared: Prepared,
        args: Iterable[Any],
        kwargs: dict[str, Any] | None,
        job_id: str | None,
    ) -> JobSpec:
        """One job of a prepared put: its id (given, or generated) and its arguments, checked
        and, where they must cross a process, encoded."""
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
        payload: object
        ref = None
        if self._durable:
            ref, payload = prepared.ref, self._encode_durable(args, kwargs, job_id)
        elif prepared.mode == "process":
            payload = self._encode(prepared, args, kwargs, job_id)
        else:
            payload = Call(prepared.fn, args, kwargs)
        return JobSpec(
            job_id, prepared.name, prepared.mode, options, args, kwargs, payload, prepared.limit,
            ref,
        )  # fmt: skip

    def _reference(self, fn: Callable[..., Any], name: str, task: Task[Any, Any] | None) -> str:
        """How a worker process will find ``fn``: its import path, else its task name."""
        with contextlib.suppress(KeyError, TypeError):
            return self._references[fn]
        try:
            ref = reference(fn, name)
        except NotSerializable:
            if task is not None and self.registry.owns(task):
                return task.name
            raise
        with contextlib.suppress(TypeError):  # not weak-referenceable: looked up each time
            self._references[fn] = ref
        return ref

    def _encode_durable(self, args: tuple[Any, ...], kwargs: dict[str, Any], job_id: str) -> bytes:
        assert self.serializer is not None
        try:
            return self.serializer.dumps([list(args), kwargs])
        except NotSerializable as exc:
            raise NotSerializable(
                f"the arguments of job {job_id!r} cannot be stored: {exc}"
            ) from None

    def _encode(
        self, prepared: Prepared, args: tuple[Any, ...], kwargs: dict[str, Any], job_id: str
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
