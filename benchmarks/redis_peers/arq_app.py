"""arq: 2 ``arq arq_app.WorkerSettings`` processes (max_jobs 10, the default).

arq has no blocking dequeue: its workers poll the queue every ``poll_delay`` (0.5 s by
default) and ``Job.result`` polls too. Both are tuned here for latency (documented settings):
``poll_delay=0.005`` on the workers, ``poll_delay=0.001`` when waiting for a result.

arq is 0.25 here: arq >= 0.26 requires redis-py < 6, which BullMQ (>= 6.2), Celery's kombu
(>= 6.4) and taskiq-redis (>= 8) exclude. 0.25's ``Job.result`` reads the result, then the
queue, outside a transaction: a job ending between the two raises ``ResultNotFound``; the round
trip then reads the stored result once more.
"""

from __future__ import annotations

from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.constants import result_key_prefix
from arq.jobs import ResultNotFound
from bench_common import AsyncPeer, KeyCounter, python, url

WORKER_POLL_DELAY = 0.005
RESULT_POLL_DELAY = 0.001


async def noop(ctx: dict[str, Any], x: Any) -> Any:
    """The job: return the argument."""
    return x


class WorkerSettings:
    functions = [noop]
    redis_settings = RedisSettings.from_dsn(url())
    poll_delay = WORKER_POLL_DELAY


class Contender(AsyncPeer):
    name = "arq"
    package = "arq"
    one_label = "await pool.enqueue_job('noop', i)"
    bulk_label = None
    worker_label = f"2 x arq arq_app.WorkerSettings (poll_delay={WORKER_POLL_DELAY})"
    wait_label = f"await job.result(poll_delay={RESULT_POLL_DELAY})"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.pool: ArqRedis = self.run(create_pool(RedisSettings.from_dsn(url)))
        self.counter = KeyCounter(self.redis, [])

    async def submit_async(self, n: int, bulk: bool) -> None:
        jobs = [await self.pool.enqueue_job("noop", i) for i in range(n)]
        ids = [job.job_id for job in jobs if job is not None]
        self.counter = KeyCounter(self.redis, [result_key_prefix + i for i in ids])

    def workers(self) -> list[list[str]]:
        return [python("-m", "arq", "arq_app.WorkerSettings")] * 2

    def done(self) -> int:
        return self.counter()

    async def round_trip_async(self, i: int, timeout: float) -> Any:
        job = await self.pool.enqueue_job("noop", i)
        assert job is not None
        try:
            return await job.result(timeout=timeout, poll_delay=RESULT_POLL_DELAY)
        except ResultNotFound:
            # arq 0.25's race: the job ended between its GET of the result and its ZSCORE
            info = await job.result_info()
            if info is None:
                raise
            return info.result

    async def aclose(self) -> None:
        await self.pool.aclose()
