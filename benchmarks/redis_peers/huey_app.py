"""Huey: ``RedisHuey`` (blocking BRPOP) and ``huey_consumer -w 2 -k process``.

Throughput runs keep Huey's defaults; latency runs turn on ``notify_result`` (the worker pushes
to a per-result key and ``result.get(blocking=True)`` BLPOPs on it, instead of polling).
"""

from __future__ import annotations

from typing import Any

from bench_common import Peer, python, section, url
from huey import RedisHuey  # type: ignore[import-untyped]

huey = RedisHuey("bench", url=url(), notify_result=section() == "latency")


@huey.task()
def noop(x: Any) -> Any:
    """The job: return the argument."""
    return x


class Contender(Peer):
    name = "huey"
    package = "huey"
    one_label = "noop(i)"
    bulk_label = None  # Task.map enqueues one by one
    worker_label = "huey_consumer huey_app.huey -w 2 -k process"
    wait_label = "get(blocking=True), notify_result=True"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.huey = RedisHuey("bench", url=url, notify_result=True)
        self.task = self.huey.task(name=noop.name)(noop.func)

    def submit(self, n: int, bulk: bool) -> None:
        for i in range(n):
            self.task(i)

    def workers(self) -> list[list[str]]:
        consumer = python("-m", "huey.bin.huey_consumer", "huey_app.huey")
        return [[*consumer, "-w", "2", "-k", "process", "-q"]]

    def done(self) -> int:
        return int(self.redis.hlen(self.huey.storage.result_key))

    def round_trip(self, i: int, timeout: float) -> Any:
        return self.task(i).get(blocking=True, timeout=timeout)

    def close(self) -> None:
        self.huey.storage.pool.disconnect()
        super().close()
