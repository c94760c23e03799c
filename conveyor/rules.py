"""Pure scheduling vocabulary shared by the backends.

The memory backend calls these directly; the SQL and Lua backends mirror them. Nothing here
holds state or a lock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any


def order_key(priority: int, seq: int) -> tuple[int, int]:
    """Among jobs that may start: lower priority first, then first submitted."""
    return (priority, seq)


def retry_delay(retry_delay: float, backoff: float, failures: int) -> float:
    """Seconds to wait before the next attempt after ``failures`` failed attempts (>= 1)."""
    return retry_delay * backoff ** max(0, failures - 1)


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
