"""streaq: ``streaq run streaq_app:worker --workers 2`` (concurrency 16, the default);
``Worker.enqueue_many`` (one pipeline) for bulk; ``task.result()`` waits on pub/sub."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from bench_common import AsyncPeer, KeyCounter, python, url
from streaq import Worker

worker = Worker(redis_url=url())
T = TypeVar("T")


@worker.task
async def noop(x: Any) -> Any:
    """The job: return the argument."""
    return x


class Contender(AsyncPeer):
    name = "streaq"
    package = "streaq"
    one_label = "await noop.enqueue(i)"
    bulk_label = "await worker.enqueue_many([noop.enqueue(i) ...])"
    worker_label = "streaq run streaq_app:worker --workers 2"
    wait_label = "await task.result() (pub/sub)"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.counter = KeyCounter(self.redis, [])

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` inside ``async with worker`` (a producer's connection to streaq; the
        context cannot be entered and left in different ``run_until_complete`` calls)."""

        async def inside() -> T:
            async with worker:
                return await coro

        return super().run(inside())

    async def submit_async(self, n: int, bulk: bool) -> None:
        if bulk:
            tasks = [noop.enqueue(i) for i in range(n)]
            await worker.enqueue_many(tasks)
        else:
            tasks = [await noop.enqueue(i) for i in range(n)]
        self.counter = KeyCounter(self.redis, [worker.results_key + t.id for t in tasks])

    def workers(self) -> list[list[str]]:
        return [python("-m", "streaq", "run", "streaq_app:worker", "--workers", "2")]

    def done(self) -> int:
        return self.counter()

    async def round_trip_async(self, i: int, timeout: float) -> Any:
        task = await noop.enqueue(i)
        return (await task.result(timeout=round(timeout))).result
