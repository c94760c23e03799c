"""SAQ: ``saq saq_app.settings --workers 2`` (concurrency 10, the default); ``queue.apply``
waits for the job through SAQ's pub/sub notification."""

from __future__ import annotations

import asyncio
from typing import Any

from bench_common import AsyncPeer, python, url
from saq import Queue

queue = Queue.from_url(url())


async def noop(ctx: dict[str, Any], *, x: Any) -> Any:
    """The job: return the argument."""
    return x


settings = {"queue": queue, "functions": [noop]}


class Contender(AsyncPeer):
    name = "saq"
    package = "saq"
    one_label = "await queue.enqueue('noop', x=i)"
    bulk_label = "asyncio.gather(queue.enqueue ...) (no bulk API)"
    worker_label = "saq saq_app.settings --workers 2"
    wait_label = "await queue.apply('noop', x=i) (pub/sub)"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.queue = Queue.from_url(url)
        self.run(self.queue.connect())
        self.incomplete = self.queue.namespace("incomplete")
        self.expected = 0

    async def enqueue_async(self, n: int, bulk: bool) -> None:
        if bulk:
            await asyncio.gather(*(self.queue.enqueue("noop", x=i) for i in range(n)))
        else:
            for i in range(n):
                await self.queue.enqueue("noop", x=i)
        self.expected = n

    def workers(self) -> list[list[str]]:
        return [python("-m", "saq", "saq_app.settings", "--workers", "2")]

    def done(self) -> int:
        return self.expected - int(self.redis.zcard(self.incomplete))

    async def round_trip_async(self, i: int, timeout: float) -> Any:
        return await self.queue.apply("noop", timeout=timeout, x=i)

    async def aclose(self) -> None:
        await self.queue.disconnect()
