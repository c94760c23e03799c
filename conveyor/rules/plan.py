"""A job's options compiled into what the engine needs: the engine's vocabulary.

Every backend implements one small engine (the same names in memory, SQL and Lua) over the
:class:`Plan` a job's options compile to at submit. The engine knows nothing of exclusive groups,
incompatible jobs or concurrency limits: it knows *keys*.

Keys (text, ``kind:name``; the vocabulary is this module's constants):

``group:<g>``
    held by a running job of exclusive group ``g``; a job of that group needs it free (capacity 1).
``task:<t>``
    counts the running jobs of task ``t``. A job naming ``t`` incompatible needs it at 0
    (capacity 1); a job of a task with ``max_concurrency=n`` needs it below ``n``, and when that
    blocks it, it waits on the *park key* ``limit:<t>`` (so a release of ``task:<t>`` wakes both).
``decl:<n>``
    counts the running jobs that name ``n`` (a job id or a task name) incompatible; a job whose id
    or task is ``n`` needs it at 0.
``job:<id>``
    held by job ``id`` while it runs. Never counted: a backend reads it off the job's status.
``limit:<t>``
    a park key only (see ``task:``).

A job *needs* keys free to start (:attr:`Plan.needs`, checked in order: the first that is not
free is the one it waits on), and *holds* keys while it runs (:attr:`Plan.holds`, taken at start,
given back at its end). A job found blocked at claim time is *parked* on the need's park key and
leaves the ready index; when a job ends, each key of its :attr:`Plan.frees` is marked *freed*,
and the next claim looks at the best parked job of each freed key beside the ready index's top.

Dependencies (``after``), lanes and timers are the engine's other three parts; their meaning and
the cascade order are in :mod:`conveyor.rules`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

GROUP = "group"
TASK = "task"
DECL = "decl"
JOB = "job"
LIMIT = "limit"


def key(kind: str, name: str | int) -> str:
    """The key ``kind:name`` (``key(GROUP, "db") == "group:db"``)."""
    return f"{kind}:{name}"


def split(text: str) -> tuple[str, str]:
    """``"group:db"`` -> ``("group", "db")``."""
    kind, _, name = text.partition(":")
    return kind, name


class Need(NamedTuple):
    """One condition for a start: fewer than ``capacity`` running jobs hold ``key``; a job it
    blocks waits parked on ``park``."""

    key: str
    capacity: int
    park: str


class Plan(NamedTuple):
    """What the engine needs of a job, compiled once from its options at submit."""

    #: keys that must be free for it to start, in the order they are checked
    needs: tuple[Need, ...]
    #: counted keys it holds while it runs (``job:<id>`` is implied, never counted)
    holds: tuple[str, ...]
    #: park keys its end may free: the keys a job blocked by it waits on
    frees: tuple[str, ...]


class Shape(NamedTuple):
    """A plan without the two keys naming its job, shared by every job of one kind (task,
    exclusive groups, incompatible names, limit): a backend that keeps plans in memory keeps
    this, not a :class:`Plan` per job, and builds ``decl:<id>`` and ``job:<id>`` when used."""

    #: needs checked before the job's own ``decl:<id>``
    before: tuple[Need, ...]
    #: needs checked after it
    after: tuple[Need, ...]
    #: as :attr:`Plan.holds`
    holds: tuple[str, ...]
    #: :attr:`Plan.frees` after the job's own ``job:<id>``
    frees: tuple[str, ...]


def compile_plan(
    job_id: str,
    task: str,
    *,
    exclusive: tuple[str, ...] = (),
    incompatible: tuple[str, ...] = (),
    max_concurrency: int | None = None,
) -> Plan:
    """The keys a job needs, holds and frees (see the module's vocabulary).

    Check order (the first need not met is the one the job waits on): its exclusive groups;
    for each name it lists incompatible, a running job of that id, then running jobs of that
    task; a running job that lists its id, then its task, incompatible; its task's limit.
    """
    before, after, holds, frees = plan_shape(task, exclusive, incompatible, max_concurrency)
    own = _DECL + job_id
    return Plan((*before, Need(own, 1, own), *after), holds, (_JOB + job_id, *frees))


@functools.lru_cache(maxsize=1024)
def plan_shape(
    task: str, exclusive: tuple[str, ...], incompatible: tuple[str, ...], limit: int | None
) -> Shape:
    """What a plan holds apart from the job's id, once per kind of job (compile_plan runs at
    every submit: only the two keys naming the job are built per job): the needs before and
    after the job's own ``decl:<id>``, its holds, and its frees after ``job:<id>``."""
    before = [Need(key(GROUP, g), 1, key(GROUP, g)) for g in exclusive]
    for name in incompatible:
        before.append(Need(key(JOB, name), 1, key(JOB, name)))
        before.append(Need(key(TASK, name), 1, key(TASK, name)))
    after = [Need(key(DECL, task), 1, key(DECL, task))]
    if limit is not None:
        after.append(Need(key(TASK, task), limit, key(LIMIT, task)))
    groups = tuple(key(GROUP, g) for g in exclusive)
    declared = tuple(key(DECL, n) for n in dict.fromkeys(incompatible))
    holds = (key(TASK, task), *groups, *declared)
    frees = (key(TASK, task), key(LIMIT, task), *groups, *declared)
    return Shape(tuple(before), tuple(after), holds, frees)


_DECL, _JOB = key(DECL, ""), key(JOB, "")
