"""taskiq: ``ListQueueBroker`` (taskiq-redis' fastest broker: BRPOP, no acknowledgement) with
``RedisAsyncResultBackend``; ``taskiq worker taskiq_app:broker --workers 2``.

``wait_result`` polls the result backend: tuned to ``check_interval=0.001`` (default 0.2 s).
"""

from __future__ import annotations

from typing import Any

from bench_common import AsyncPeer, KeyCounter, python, url
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

CHECK_INTERVAL = 0.001

result_backend: RedisAsyncResultBackend[Any] = RedisAsyncResultBackend(url())
broker = ListQueueBroker(url()).with_result_backend(result_backend)


@broker.task(task_name="taskiq_app.noop")
async def noop(x: Any) -> Any:
    """The job: return the argument."""
    return x


class Contender(AsyncPeer):
    name = "taskiq"
    package = "taskiq"
    one_label = "await noop.kiq(i)"
    bulk_label = None
    worker_label = "taskiq worker taskiq_app:broker --workers 2"
    wait_label = f"await task.wait_result(check_interval={CHECK_INTERVAL})"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.run(broker.startup())
        self.counter = KeyCounter(self.redis, [])

    async def submit_async(self, n: int, bulk: bool) -> None:
        tasks = [await noop.kiq(i) for i in range(n)]
        self.counter = KeyCounter(self.redis, [result_backend._task_name(t.task_id) for t in tasks])

    def workers(self) -> list[list[str]]:
        return [python("-m", "taskiq", "worker", "taskiq_app:broker", "--workers", "2")]

    def done(self) -> int:
        return self.counter()

    async def round_trip_async(self, i: int, timeout: float) -> Any:
        task = await noop.kiq(i)
        result = await task.wait_result(check_interval=CHECK_INTERVAL, timeout=timeout)
        return result.return_value

    async def aclose(self) -> None:
        await broker.shutdown()
