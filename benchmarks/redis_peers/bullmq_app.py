"""BullMQ (Python package): ``python bullmq_app.py`` twice, each a ``Worker`` with concurrency
8; ``Queue.addBulk`` for bulk; a result is awaited through ``QueueEvents`` (the events stream,
BullMQ's ``waitUntilFinished`` way)."""

from __future__ import annotations

import asyncio
import signal
import uuid
from typing import Any

from bench_common import AsyncPeer, python, url
from bullmq import Job, Queue, QueueEvents, Worker

QUEUE = "bench"
CONCURRENCY = 8


async def process(job: Job, token: str) -> Any:
    """The job: return the argument."""
    return job.data["x"]


async def serve() -> None:
    """Run one worker until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    worker = Worker(QUEUE, process, {"connection": url(), "concurrency": CONCURRENCY})
    await stop.wait()
    await worker.close()


class Contender(AsyncPeer):
    name = "bullmq"
    package = "bullmq"
    one_label = "await queue.add('noop', {'x': i})"
    bulk_label = "await queue.addBulk([...])"
    worker_label = f"2 x Worker(concurrency={CONCURRENCY})"
    wait_label = "QueueEvents 'completed:<id>'"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.queue = Queue(QUEUE, {"connection": url})
        self.events: QueueEvents | None = None
        self.completed = self.queue.toKey("completed")

    async def submit_async(self, n: int, bulk: bool) -> None:
        if bulk:
            await self.queue.addBulk([{"name": "noop", "data": {"x": i}} for i in range(n)])
        else:
            for i in range(n):
                await self.queue.add("noop", {"x": i})

    def workers(self) -> list[list[str]]:
        return [python("bullmq_app.py")] * 2

    def done(self) -> int:
        return int(self.redis.zcard(self.completed))

    async def round_trip_async(self, i: int, timeout: float) -> Any:
        if self.events is None:
            self.events = QueueEvents(QUEUE, {"connection": self.url})
            await asyncio.sleep(0.1)  # let it start reading the stream before the first job
        job_id = uuid.uuid4().hex
        finished: asyncio.Future[Any] = self.loop.create_future()

        def completed(args: dict[str, Any], *_: Any) -> None:
            if not finished.done():
                finished.set_result(args.get("returnvalue"))

        self.events.on(f"completed:{job_id}", completed)
        try:
            await self.queue.add("noop", {"x": i}, {"jobId": job_id})
            return await asyncio.wait_for(finished, timeout)
        finally:
            self.events.off(f"completed:{job_id}", completed)

    async def aclose(self) -> None:
        if self.events is not None:
            await self.events.close()
        await self.queue.close()


if __name__ == "__main__":
    asyncio.run(serve())
