"""``conveyor.context()``: what the queue's ``context`` function returned in this worker."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

_MISSING = object()
_worker_context: ContextVar[Any] = ContextVar("conveyor_worker_context", default=_MISSING)


def context() -> Any:
    """Return the value the queue's ``context`` function returned in this worker.

    Raises:
        LookupError: outside a job, or when the queue has no ``context`` function.
    """
    value = _worker_context.get()
    if value is _MISSING:
        raise LookupError(
            "conveyor.context() is only set inside a job of a queue built with context=..."
        )
    return value


def set_context(value: Any) -> None:
    """Set this worker's context value (workers call this once, before their first job)."""
    _worker_context.set(value)
