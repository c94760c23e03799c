"""RQ: ``rq worker-pool -n 2`` with ``SimpleWorker`` (no fork per job, RQ's documented fast
path), ``Queue.enqueue_many`` for bulk; ``job.latest_result(timeout=...)`` blocks on the
result stream (XREAD)."""

from __future__ import annotations

from typing import Any

import rq
from bench_common import Peer, python


def noop(x: Any) -> Any:
    """The job: return the argument."""
    return x


QUEUE = "bench"


class Contender(Peer):
    name = "rq"
    package = "rq"
    one_label = "q.enqueue(noop, i)"
    bulk_label = "q.enqueue_many([Queue.prepare_data(noop, (i,)) ...])"
    worker_label = "rq worker-pool -n 2 -w rq.worker.SimpleWorker"
    wait_label = "job.latest_result(timeout=...) (XREAD BLOCK)"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.q = rq.Queue(QUEUE, connection=self.redis)
        self.finished = self.q.finished_job_registry.key

    def submit(self, n: int, bulk: bool) -> None:
        if bulk:
            self.q.enqueue_many([rq.Queue.prepare_data(noop, (i,)) for i in range(n)])
        else:
            for i in range(n):
                self.q.enqueue(noop, i)

    def workers(self) -> list[list[str]]:
        pool = python("-m", "rq.cli", "worker-pool", "-n", "2", "-w", "rq.worker.SimpleWorker")
        return [[*pool, "-u", self.url, "-q", QUEUE]]

    def done(self) -> int:
        return int(self.redis.zcard(self.finished))

    def round_trip(self, i: int, timeout: float) -> Any:
        job = self.q.enqueue(noop, i)
        result = job.latest_result(timeout=max(1, round(timeout)))
        if result is None:
            raise TimeoutError(f"no result for job {job.id} within {timeout} s")
        return result.return_value
