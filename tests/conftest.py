"""Shared fixtures: queue factory (closes what it built) and a manual clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import conveyor
from conveyor.testing import ManualClock
from tests.faults import small_disk

__all__ = ["small_disk"]  # a fixture for every test: a real disk that fills up


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_queue() -> Iterator[Callable[..., conveyor.Queue]]:
    """Build queues with test settings; close each (without waiting) after the test."""
    built: list[conveyor.Queue] = []

    def make(url: str = "memory://", **kwargs: Any) -> conveyor.Queue:
        kwargs.setdefault("workers", 2)
        queue = conveyor.Queue(url, **kwargs)
        built.append(queue)
        return queue

    yield make
    for queue in built:
        queue.close(wait=False)
