"""Executors: one strategy per execution model, all behind :class:`Executor`."""

from conveyor.executors.base import Executor

__all__ = ["Executor"]
