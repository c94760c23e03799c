"""mode="async": coroutines on one event loop, up to ``workers`` at once."""

from __future__ import annotations

import asyncio
import threading

import pytest

import conveyor
from conveyor import JobCancelled, JobFailed, QueueClosed, Status
from tests import jobs

WAIT = 5


class Gauge:
    """Counts coroutines inside a section; remembers the most at once and the loops used."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self.loops: set[int] = set()
        self.threads: set[int] = set()

    def enter(self) -> None:
        self.inside += 1
        self.most = max(self.most, self.inside)
        self.loops.add(id(asyncio.get_running_loop()))
        self.threads.add(threading.get_ident())

    def leave(self) -> None:
        self.inside -= 1


def test_coroutines_run_concurrently_on_one_loop(make_queue):
    # given an async queue with 3 workers, and 3 coroutines that each wait for all 3 to be in
    q = make_queue(workers=3, mode="async")
    gauge = Gauge()
    all_in = asyncio.Event()

    async def meet(i: int) -> int:
        gauge.enter()
        if gauge.inside == 3:
            all_in.set()
        await all_in.wait()  # deadlocks unless all three run at the same time
        gauge.leave()
        return i

    # when they are put
    handles = [q.put(meet, args=(i,)) for i in range(3)]
    # then all three were in at once, on a single event loop in a single thread
    assert [h.result(timeout=WAIT) for h in handles] == [0, 1, 2]
    assert gauge.most == 3
    assert len(gauge.loops) == 1
    assert len(gauge.threads) == 1
    assert threading.get_ident() not in gauge.threads


def test_no_more_than_workers_coroutines_run_at_once(make_queue):
    # given an async queue with 3 workers and 9 coroutines that hold on until 3 are in
    q = make_queue(workers=3, mode="async")
    gauge = Gauge()
    three_in = asyncio.Event()

    async def crowd(i: int) -> int:
        gauge.enter()
        if gauge.inside >= 3:
            three_in.set()
        await three_in.wait()
        for _ in range(5):  # give any extra coroutine the chance to come in
            await asyncio.sleep(0)
        gauge.leave()
        return i

    # when all are put at once
    results = q.map(crowd, range(9))
    # then they all ran, never more than 3 at a time
    assert results == list(range(9))
    assert gauge.most == 3


def test_a_coroutine_past_its_timeout_is_cancelled(make_queue):
    # given a coroutine that would wait an hour
    q = make_queue(workers=2, mode="async")
    cancelled = threading.Event()

    async def wait_an_hour() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    # when it runs with a timeout
    job = q.put(wait_an_hour, timeout=0.2)
    # then it fails with TimeoutError, and the coroutine saw a cancellation
    with pytest.raises(JobFailed) as failure:
        job.result(timeout=WAIT)
    assert failure.value.error_type == "TimeoutError"
    assert job.status is Status.FAILED
    assert cancelled.is_set()
    # and the loop keeps running jobs
    assert q.put(jobs.async_double, args=(4,)).result(timeout=WAIT) == 8


def test_a_timeout_leaves_other_coroutines_alone(make_queue):
    # given a slow coroutine with a timeout next to one that needs no timeout
    q = make_queue(workers=2, mode="async")
    release = asyncio.Event()

    async def slow() -> None:
        await asyncio.sleep(3600)

    async def patient() -> str:
        await release.wait()
        return "done"

    other = q.put(patient)
    doomed = q.put(slow, timeout=0.1)
    # when the slow one times out
    with pytest.raises(JobFailed):
        doomed.result(timeout=WAIT)
    # then the other is still running and finishes once released
    assert other.status is Status.RUNNING
    q.put(_set_event, args=(release,))  # set from a coroutine: on the loop, in the freed slot
    assert other.result(timeout=WAIT) == "done"


async def _set_event(event: asyncio.Event) -> None:
    event.set()


def test_cancelling_a_running_coroutine_cancels_its_task(make_queue):
    # given a running coroutine
    q = make_queue(workers=1, mode="async")
    started, cancelled = threading.Event(), threading.Event()

    async def wait_an_hour() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job = q.put(wait_an_hour)
    assert started.wait(WAIT)
    # when the job is cancelled
    assert job.cancel() is True
    # then result() raises JobCancelled and the coroutine saw CancelledError
    with pytest.raises(JobCancelled):
        job.result(timeout=WAIT)
    assert cancelled.wait(WAIT)
    # and its slot is free again
    assert q.put(jobs.async_double, args=(5,)).result(timeout=WAIT) == 10


def test_context_runs_once_for_the_event_loop(make_queue):
    # given an async queue with a context function that counts its calls
    calls: list[int] = []

    def context() -> str:
        calls.append(1)
        return "pool"

    q = make_queue(workers=3, mode="async", context=context)

    async def read(_item: int) -> object:
        await asyncio.sleep(0)
        return conveyor.context()

    # when several coroutines read the context / then they see its value, computed once
    assert q.map(read, range(6)) == ["pool"] * 6
    assert calls == [1]


def test_a_job_can_be_awaited_inside_asyncio_run(make_queue):
    # given an async queue
    q = make_queue(workers=2, mode="async")

    async def main() -> tuple[int, list[int]]:
        # when jobs are awaited from another event loop
        single = await q.put(jobs.async_double, args=(21,))
        many = await asyncio.gather(*(q.put(jobs.async_double, args=(i,)) for i in range(5)))
        return single, many

    # then the awaits return the results
    assert asyncio.run(main()) == (42, [0, 2, 4, 6, 8])


def test_awaiting_a_failed_job_raises_job_failed(make_queue):
    # given an async queue and a coroutine that raises
    q = make_queue(workers=1, mode="async")

    async def explode() -> None:
        raise KeyError("nope")

    async def main() -> None:
        await q.put(explode)

    # when it is awaited / then JobFailed carries the error type
    with pytest.raises(JobFailed) as failure:
        asyncio.run(main())
    assert failure.value.error_type == "KeyError"


def test_async_with_queue():
    # given an async queue used as an async context manager
    async def main() -> tuple[conveyor.Queue, list[int]]:
        async with conveyor.Queue(mode="async", workers=2) as q:
            results = [await q.put(jobs.async_double, args=(i,)) for i in range(3)]
            pending = q.put(jobs.async_double, args=(50,))
        # when the block ends, the queue has waited for its jobs and closed
        assert pending.status is Status.FINISHED
        return q, results

    q, results = asyncio.run(main())
    # then the results came back and the queue takes no more jobs
    assert results == [0, 2, 4]
    with pytest.raises(QueueClosed):
        q.put(jobs.async_double, args=(1,))


def test_a_plain_function_on_an_async_queue_does_not_block_the_loop(make_queue):
    # given an async queue running a plain blocking function and a coroutine
    q = make_queue(workers=2, mode="async")
    gate = threading.Event()
    try:
        blocked = q.put(gate.wait, args=(WAIT,))
        # when a coroutine is put while the plain function blocks
        # then the coroutine still runs (the plain function is off the loop)
        assert q.put(jobs.async_double, args=(3,)).result(timeout=WAIT) == 6
        assert blocked.status is Status.RUNNING
    finally:
        gate.set()
    assert blocked.result(timeout=WAIT) is True
