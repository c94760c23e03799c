"""What every contender of benchmarks/redis.py shares: the Peer interface and small helpers.

This folder is the import path of the benchmark and of every worker process it starts (never
``benchmarks/`` itself: there, ``import redis`` would find ``benchmarks/redis.py``). Each
``<library>_app.py`` module is both the library's app (what its workers import) and a
:class:`Peer` subclass named ``Contender`` that drives it from the benchmark.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import redis

HERE = Path(__file__).resolve().parent
#: the Redis URL (with its db) of the run, for the apps imported by worker processes
URL_VAR = "BENCH_REDIS_URL"
#: "latency" or "throughput": the section the workers serve (an app may tune itself to it)
SECTION_VAR = "BENCH_SECTION"
#: seconds a single round trip or wait may take before the run counts as failed
TIMEOUT = 60.0

T = TypeVar("T")


def url() -> str:
    """The run's Redis URL, as the benchmark passed it to this process."""
    return os.environ.get(URL_VAR, "redis://127.0.0.1:6379/15")


def section() -> str:
    """The section the worker processes serve: ``throughput`` or ``latency``."""
    return os.environ.get(SECTION_VAR, "throughput")


def script(name: str) -> list[str]:
    """The command of a console script installed next to this interpreter."""
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        raise FileNotFoundError(f"{name} is not installed next to {sys.executable}")
    return [str(path)]


def python(*args: str) -> list[str]:
    """A command running this interpreter."""
    return [sys.executable, *args]


class Peer:
    """One library driven by the benchmark: enqueue, worker commands, count, round trips.

    Subclasses set the labels and implement the methods; ``bulk_label`` None means the
    library has no bulk enqueue (its row says so and the drain uses one-by-one jobs).
    """

    name = ""
    package = ""  # the distribution whose version is printed
    one_label = ""  # how one job is enqueued
    bulk_label: str | None = None  # how many jobs are enqueued at once
    worker_label = ""  # the worker processes
    wait_label = ""  # how a result is awaited
    sections: tuple[str, ...] = ("throughput", "latency")  # the sections it runs
    reference = False  # a reference line (the floor), not a peer: left out of the ratios

    def __init__(self, url: str) -> None:
        self.url = url
        self.redis = redis.Redis.from_url(url)

    def enqueue(self, n: int, bulk: bool) -> float:
        """Enqueue ``n`` no-op jobs (``submit``); the seconds it took."""
        start = time.perf_counter()
        self.submit(n, bulk)
        return time.perf_counter() - start

    def submit(self, n: int, bulk: bool) -> None:
        """Enqueue ``n`` no-op jobs (args 0..n-1), one by one or with the bulk API."""
        raise NotImplementedError

    def workers(self) -> list[list[str]]:
        """The commands that together make 2 worker processes (cwd: this folder)."""
        raise NotImplementedError

    def done(self) -> int:
        """How many of the jobs enqueued last have ended with a stored result."""
        raise NotImplementedError

    def round_trip(self, i: int, timeout: float) -> Any:
        """Enqueue ``noop(i)`` and return its result once a worker has run it."""
        raise NotImplementedError

    def round_trips(self, n: int, timeout: float = TIMEOUT) -> list[float]:
        """Seconds of ``n`` sequential round trips, each checked."""
        times = []
        for i in range(n):
            start = time.perf_counter()
            result = self.round_trip(i, timeout)
            times.append(time.perf_counter() - start)
            check(result, i)
        return times

    def close(self) -> None:
        """Release the connections."""
        self.redis.close()


class AsyncPeer(Peer):
    """A Peer whose client is asyncio: one event loop, kept for the Peer's life."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def enqueue(self, n: int, bulk: bool) -> float:
        async def timed() -> float:
            start = time.perf_counter()
            await self.submit_async(n, bulk)
            return time.perf_counter() - start

        return self.run(timed())

    async def submit_async(self, n: int, bulk: bool) -> None:
        """Enqueue ``n`` no-op jobs (args 0..n-1), one by one or with the bulk API."""
        raise NotImplementedError

    async def round_trip_async(self, i: int, timeout: float) -> Any:
        raise NotImplementedError

    def round_trips(self, n: int, timeout: float = TIMEOUT) -> list[float]:
        async def go() -> list[float]:
            times = []
            for i in range(n):
                start = time.perf_counter()
                result = await self.round_trip_async(i, timeout)
                times.append(time.perf_counter() - start)
                check(result, i)
            return times

        return self.run(go())

    async def aclose(self) -> None:
        """Close the library's async clients (in the loop)."""

    def close(self) -> None:
        try:
            self.run(self.aclose())
        finally:
            self.loop.close()
            super().close()


def check(result: Any, i: int) -> None:
    if result != i:
        raise RuntimeError(f"round trip {i} returned {result!r}")


class KeyCounter:
    """Counts which of many keys exist (one per job, in enqueue order), cheaply when polled:
    a leading run of keys seen to exist is not asked about again."""

    def __init__(self, client: redis.Redis, keys: Sequence[str], chunk: int = 500) -> None:
        self.client = client
        self.keys = list(keys)
        self.chunk = chunk
        self.settled = 0  # keys[:settled] all exist

    def __call__(self) -> int:
        while self.settled < len(self.keys):
            batch = self.keys[self.settled : self.settled + self.chunk]
            present = int(self.client.exists(*batch))
            if present < len(batch):
                return self.settled + present
            self.settled += len(batch)
        return self.settled
