"""Dramatiq: ``RedisBroker`` with the ``Results`` middleware (Redis backend), ``dramatiq
dramatiq_app --processes 2`` (8 threads each, the default); ``get_result(block=True)``
blocks on the result key."""

from __future__ import annotations

from typing import Any

import dramatiq
from bench_common import KeyCounter, Peer, python, url
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

broker = RedisBroker(url=url())
backend = RedisBackend(url=url())
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True)
def noop(x: Any) -> Any:
    """The job: return the argument."""
    return x


class Contender(Peer):
    name = "dramatiq"
    package = "dramatiq"
    one_label = "noop.send(i)"
    bulk_label = None  # group(...).run() sends one by one
    worker_label = "dramatiq dramatiq_app --processes 2 --threads 8"
    wait_label = "message.get_result(block=True)"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.counter = KeyCounter(self.redis, [])

    def submit(self, n: int, bulk: bool) -> None:
        messages = [noop.send(i) for i in range(n)]
        self.counter = KeyCounter(self.redis, [backend.build_message_key(m) for m in messages])

    def workers(self) -> list[list[str]]:
        return [python("-m", "dramatiq", "dramatiq_app", "--processes", "2", "--threads", "8")]

    def done(self) -> int:
        return self.counter()

    def round_trip(self, i: int, timeout: float) -> Any:
        return noop.send(i).get_result(block=True, timeout=int(timeout * 1000))

    def close(self) -> None:
        broker.close()
        super().close()
