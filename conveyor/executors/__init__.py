"""Executors: one strategy per execution model, all behind :class:`Executor`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conveyor.executors.base import Executor

__all__ = ["Executor", "build"]


def build(
    mode: str,
    slots: int,
    *,
    context: Callable[[], Any] | None = None,
    max_jobs_per_process: int | None = None,
) -> Executor:
    """The executor for ``mode`` with ``slots`` slots (inline runs in the caller: no slots).

    Each executor's module is imported when first asked for: a thread worker does not pay for
    importing multiprocessing or asyncio."""
    if mode == "thread":
        from conveyor.executors.thread import ThreadExecutor

        return ThreadExecutor(slots, context)
    if mode == "process":
        from conveyor.executors.process import ProcessExecutor

        return ProcessExecutor(slots, context, max_jobs_per_process=max_jobs_per_process)
    if mode == "async":
        from conveyor.executors.asyncio import AsyncExecutor

        return AsyncExecutor(slots, context)
    if mode == "inline":
        from conveyor.executors.inline import InlineExecutor

        return InlineExecutor()
    raise ValueError(f"unknown mode {mode!r}; one of thread, process, async, inline")
