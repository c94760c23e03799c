"""Executors: one strategy per execution model, all behind :class:`Executor`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conveyor.executors.asyncio import AsyncExecutor
from conveyor.executors.base import Executor
from conveyor.executors.inline import InlineExecutor
from conveyor.executors.process import ProcessExecutor
from conveyor.executors.thread import ThreadExecutor

__all__ = ["Executor", "build"]


def build(
    mode: str,
    slots: int,
    *,
    context: Callable[[], Any] | None = None,
    max_jobs_per_process: int | None = None,
) -> Executor:
    """The executor for ``mode`` with ``slots`` slots (inline runs in the caller: no slots)."""
    if mode == "thread":
        return ThreadExecutor(slots, context)
    if mode == "process":
        return ProcessExecutor(slots, context, max_jobs_per_process=max_jobs_per_process)
    if mode == "async":
        return AsyncExecutor(slots, context)
    if mode == "inline":
        return InlineExecutor()
    raise ValueError(f"unknown mode {mode!r}; one of thread, process, async, inline")
