"""Shared fixtures: queue factory (closes what it built), a manual clock, Redis servers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

import conveyor
from conveyor.testing import ManualClock
from tests.faults import small_disk

if TYPE_CHECKING:
    from tests.servers import RedisServer

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


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``redis://127.0.0.1:PORT`` (no db) of a server for the whole session: ``REDIS_URL`` if
    set (nothing is started then), else a throwaway server started at first use."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    from tests.servers import start_server  # imports redis only where a test needs a server

    server = start_server()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A server of the test's own, append-only (fsync on every write), so that the test can
    stop, kill and restart it on the same port without losing data."""
    from tests.servers import start_server

    server = start_server(appendonly=True)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """``redis+cluster://127.0.0.1:PORT`` of a Redis Cluster of 3 masters for the whole
    session: ``REDIS_CLUSTER_URL`` if set (nothing is started then), else one started at first
    use."""
    url = os.environ.get("REDIS_CLUSTER_URL")
    if url:
        yield url
        return
    from tests.servers import start_cluster

    cluster = start_cluster(3)
    try:
        yield cluster.url
    finally:
        cluster.close()
