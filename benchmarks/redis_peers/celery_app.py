"""Celery: Redis broker and Redis result backend, a prefork worker with 2 processes.

``-O fair``-free defaults otherwise; mingle, gossip and heartbeat off (Celery's documented
advice for Redis-only setups that do not need them). ``AsyncResult.get()`` on the Redis backend
waits on pub/sub (the result-notification mode).
"""

from __future__ import annotations

from typing import Any

from bench_common import KeyCounter, Peer, python, url
from celery import Celery, group  # type: ignore[import-untyped]

app = Celery("celery_app", broker=url(), backend=url())
app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)


@app.task(name="celery_app.noop")
def noop(x: Any) -> Any:
    """The job: return the argument."""
    return x


class Contender(Peer):
    name = "celery"
    package = "celery"
    one_label = "noop.delay(i)"
    bulk_label = "group(noop.s(i) ...).apply_async()"
    worker_label = "celery worker -P prefork -c 2 --without-mingle/gossip/heartbeat"
    wait_label = "AsyncResult.get() (pub/sub)"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.app = Celery("bench_producer", broker=url, backend=url)
        self.app.conf.update(broker_connection_retry_on_startup=True)
        self.noop = self.app.task(name="celery_app.noop")(noop.run)
        self.counter = KeyCounter(self.redis, [])

    def submit(self, n: int, bulk: bool) -> None:
        if bulk:
            results = group(self.noop.s(i) for i in range(n)).apply_async().results
        else:
            results = [self.noop.delay(i) for i in range(n)]
        prefix = self.app.backend.task_keyprefix.decode()
        self.counter = KeyCounter(self.redis, [prefix + r.id for r in results])

    def workers(self) -> list[list[str]]:
        worker = python("-m", "celery", "-A", "celery_app", "worker", "-P", "prefork", "-c", "2")
        return [
            [
                *worker,
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
                "-l",
                "warning",
            ]
        ]

    def done(self) -> int:
        return self.counter()

    def round_trip(self, i: int, timeout: float) -> Any:
        return self.noop.delay(i).get(timeout=timeout)

    def close(self) -> None:
        self.app.close()
        super().close()
