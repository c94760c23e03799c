"""SAQ: ``saq saq_app.settings --workers 2`` (concurrency 10, the default).

A result is awaited by polling the job every millisecond: SAQ's own wait, ``queue.apply``
(pub/sub), took about 1 s per round trip here (SAQ 0.26.4 with redis-py 8), whatever the job.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench_common import AsyncPeer, python, url
from saq import Queue
from saq.job import Status

POLL = 0.001

queue = Queue.from_url(url())


async def noop(ctx: dict[str, Any], *, x: Any) -> Any:
    """The job: return the argument."""
    return x


settings = {"queue": queue, "functions": [noop]}


class Contender(AsyncPeer):
    name = "saq"
    package = "saq"
    one_label = "await queue.enqueue('noop', x=i)"
    bulk_label = None
    worker_label = "saq saq_app.settings --workers 2"
    wait_label = f"await job.refresh() every {POLL} s (queue.apply: ~1 s here)"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.queue = Queue.from_url(url)
        self.run(self.queue.connect())
        self.incomplete = self.queue.namespace("incomplete")
        self.expected = 0

    async def submit_async(self, n: int, bulk: bool) -> None:
        for i in range(n):
            await self.queue.enqueue("noop", x=i)
        self.expected = n

    def workers(self) -> list[list[str]]:
        return [python("-m", "saq", "saq_app.settings", "--workers", "2")]

    def done(self) -> int:
        return self.expected - int(self.redis.zcard(self.incomplete))

    async def round_trip_async(self, i: int, timeout: float) -> Any:
        job = await self.queue.enqueue("noop", x=i)
        assert job is not None
        deadline = time.monotonic() + timeout
        while True:
            await job.refresh()
            if job.status == Status.COMPLETE:
                return job.result
            if job.status in (Status.FAILED, Status.ABORTED) or time.monotonic() > deadline:
                raise RuntimeError(f"SAQ job {job.key} is {job.status}")
            await asyncio.sleep(POLL)

    async def aclose(self) -> None:
        await self.queue.disconnect()
