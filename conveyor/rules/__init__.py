"""What the scheduling rules mean, written once; every backend's engine follows it.

A job's options compile at submit into a :class:`~conveyor.rules.plan.Plan` (the keys it needs
free and holds while it runs: :mod:`conveyor.rules.plan` holds that vocabulary); dependencies,
lanes and timers are the engine's other parts, described here. The memory backend calls these
functions directly; the SQL and Lua engines mirror them, under the same names. Nothing here holds
state or a lock.

Cascade order (when a job ends: ``end``, then ``cascade`` over a work list, so a chain of
thousands of dependents cannot overflow the stack; each engine's ``after_end`` does, in order):

1. its unique key is kept for ``unique_for`` seconds, or let go;
2. each dependent: if the job finished, one dependency fewer, and at none left ``deps_done``
   (it joins its lane, or becomes a candidate for the ready index); if it did not finish, the
   dependent is cancelled (:func:`cascade_reason`) and its own end cascades in turn;
3. its lane: if the job held it, the lane records it as the previous job (failed or not) and is
   free; a free lane advances (``advance_lane``): its front is cancelled if
   ``stop_on_lane_error`` and the previous job did not finish (:func:`lane_reason`, cascading),
   else it becomes a candidate for the ready index.

Keys a running job held are given back by ``release`` before its end (the park keys of
``Plan.frees`` are marked freed). Timers (``tick``): a due time passing makes a scheduled job
waiting (a candidate); an expiry passing before the job started cancels it ("expired").

Lane order (the same on every backend; the backends name the steps ``deps_done``,
``join_lane``, ``advance_lane``):

- A job put with ``lane=`` joins its lane's order once every job in its ``after`` has
  finished (at put when it has none left). A job cancelled before that (a failed dependency,
  expiry, ``cancel``) never joins its lane.
- The lane's order is priority, then submission, among the jobs that joined and have not
  started. Its first job starts once the lane is free: the job that last started in the lane
  has ended (a job holds its lane through its retries, the waits between them included).
- A scheduled job (``delay``, ``at``) keeps its place: the lane waits for its timer, which
  always fires (or its ``expires``, which cancels it).
- ``stop_on_lane_error``: a job reaching the front of the order is cancelled if the job before
  it in that order - the last one to hold the lane, or a joined job cancelled before its turn -
  failed or was cancelled.

So the front of a lane never waits on a dependency: it waits only for a timer, for the lane's
running (or retrying) job, or for resources that running jobs hold. Dependencies form no cycle
(``put`` refuses one), and a lane makes its members wait only for a job that has all its
dependencies: no chain of waits can close into a loop, and every accepted job ends
(tests/conformance/test_no_deadlock.py, tests/conformance/test_property.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from conveyor.errors import DependencyCycle, DuplicateJob, InvalidJob, UnknownDependency
from conveyor.job import MAX_SECONDS, Status


class _OptionsLike(Protocol):
    @property
    def after(self) -> tuple[str, ...]: ...


class JobSpecLike(Protocol):
    """What the batch check reads of a job spec."""

    @property
    def id(self) -> str: ...

    @property
    def options(self) -> _OptionsLike: ...


#: the engine's steps: every backend's engine implements each under this name (memory, SQL,
#: and later Lua read side by side); tests/unit/test_engine_names.py holds them to it
ENGINE_STEPS = (
    "insert",
    "deps_done",
    "join_lane",
    "advance_lane",
    "lane_allows",
    "consider",
    "next_startable",
    "conflict",
    "is_free",
    "held",
    "park",
    "start",
    "hold",
    "release",
    "holding",
    "schedule_retry",
    "end",
    "cascade",
    "after_end",
    "settle_dependents",
    "tick",
)


def order_key(priority: int, seq: int) -> tuple[int, int]:
    """Among jobs that may start: lower priority first, then first submitted."""
    return (priority, seq)


def dependencies(after: Iterable[str], aliases: Mapping[str, str]) -> list[str]:
    """The jobs a job waits for: ``after`` with the ids unique sent to another job replaced
    by it, each once (a dependency counted twice would never be settled)."""
    return list(dict.fromkeys(aliases.get(dep, dep) for dep in after))


def retry_delay(retry_delay: float, backoff: float, failures: int) -> float:
    """Seconds to wait before the next attempt after ``failures`` failed attempts (>= 1):
    ``retry_delay * backoff ** (failures - 1)``, at most MAX_SECONDS (100 years)."""
    if retry_delay <= 0:
        return 0.0
    try:
        delay = retry_delay * backoff ** max(0, failures - 1)
    except OverflowError:
        return MAX_SECONDS
    return min(delay, MAX_SECONDS)


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """Return one dependency cycle (``[a, b, a]``) among ``edges`` (job -> its dependencies).

    Only the jobs present as keys are walked; ids outside them end a path.
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(edges, white)
    for root in edges:
        if colour[root] != white:
            continue
        stack: list[tuple[str, Any]] = [(root, iter(edges[root]))]
        path = [root]
        colour[root] = grey
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                colour[node] = black
                continue
            state = colour.get(child)
            if state == grey:
                return [*path[path.index(child) :], child]
            if state == white:
                colour[child] = grey
                path.append(child)
                stack.append((child, iter(edges[child])))
    return None


def unique_key(task: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    """The key ``unique=True`` uses: the task name and a digest of its arguments."""
    text = repr((args, sorted(kwargs.items())))
    return task + ":" + hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def cascade_reason(dependency: str, status: str) -> str:
    """Why a job was cancelled when one of its dependencies did not finish."""
    return f"dependency {dependency!r} {status}"


def lane_reason(previous: str, lane: str | int, status: str) -> str:
    """Why a stop_on_lane_error job was cancelled."""
    return f"previous job {previous!r} in lane {lane!r} {status}"


def unique_still_held(active: bool, until: float | None, now: float) -> bool:
    """A unique key stays held while its job is active, or ended less than unique_for ago."""
    return active or (until is not None and until > now)


def resolve_unique(
    jobs: Sequence[tuple[str, str | None]], holder_of: Callable[[str], str | None]
) -> list[str | None]:
    """For each ``(job id, unique key)`` of a batch: the id of the job already holding the key
    (``holder_of`` asks the backend; an earlier job of the batch holds it too), or None."""
    resolved: list[str | None] = []
    batch: dict[str, str] = {}
    for job_id, key in jobs:
        holder = None
        if key:
            holder = batch.get(key) or holder_of(key)
            if holder is None:
                batch[key] = job_id
        resolved.append(holder)
    return resolved


def check_batch(
    fresh: Sequence[JobSpecLike], batch_ids: set[str], exists: Callable[[str], bool]
) -> None:
    """Refuse a batch with a taken id, an unknown or self dependency, or a cycle.

    Raises DuplicateJob, UnknownDependency or DependencyCycle; ``exists`` asks the backend.
    """
    seen: set[str] = set()
    for spec in fresh:
        if spec.id in seen or exists(spec.id):
            raise DuplicateJob(f"job id {spec.id!r} is already in the queue; pick another id")
        seen.add(spec.id)
    for spec in fresh:
        for dep in spec.options.after:
            if dep == spec.id:
                raise DependencyCycle(f"job {spec.id!r} cannot depend on itself")
            if dep not in batch_ids and not exists(dep):
                raise UnknownDependency(
                    f"unknown dependency {dep!r} of job {spec.id!r}; put it first or drop it"
                )
    if len(fresh) > 1:
        cycle = find_cycle({spec.id: spec.options.after for spec in fresh})
        if cycle:
            raise DependencyCycle("dependency cycle: " + " -> ".join(cycle))


def check_purge(statuses: Iterable[Status]) -> None:
    """Refuse a purge that names running jobs: they are cancelled first, never dropped."""
    if Status.RUNNING in statuses:
        raise InvalidJob("running jobs are never purged; cancel them first")
