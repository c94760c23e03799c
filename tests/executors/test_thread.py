"""mode="thread": jobs run in worker threads; timeouts and cancels stop them and keep capacity."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from collections.abc import Callable, Iterator

import pytest

import conveyor
from conveyor import JobCancelled, JobFailed, Status
from tests import jobs

WAIT = 5  # seconds a test waits for something that should happen at once


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    """Set at teardown: loops that ``while not stop.is_set()`` end even if conveyor misses them."""
    event = threading.Event()
    yield event
    event.set()


def busy_loop(
    stop: threading.Event, started: threading.Event, exited: threading.Event, counter: list[int]
) -> Callable[[], None]:
    """A job that spins in pure Python (no sleeping, no I/O) until something stops it."""

    def spin() -> None:
        started.set()
        try:
            while not stop.is_set():
                counter[0] += 1
        finally:
            exited.set()

    return spin


def test_jobs_run_in_conveyor_worker_threads(make_queue):
    # given a thread queue
    q = make_queue(workers=2)
    # when jobs report the thread they run in
    handles = [q.submit(lambda: threading.current_thread()) for _ in range(4)]
    threads = [h.result(timeout=WAIT) for h in handles]
    # then they ran in conveyor's worker threads, never in the caller's
    assert all(t.name.startswith("conveyor-") for t in threads)
    assert threading.current_thread() not in threads


def test_a_job_past_its_timeout_fails_and_its_slot_is_replaced(make_queue, stop):
    # given one worker thread and a job that loops forever in pure Python
    q = make_queue(workers=1)
    started, exited, counter = threading.Event(), threading.Event(), [0]
    runaway = q.put(busy_loop(stop, started, exited, counter), timeout=0.2)
    # when the timeout passes
    with pytest.raises(JobFailed) as failure:
        runaway.result(timeout=WAIT)
    # then the job failed with a TimeoutError
    assert failure.value.error_type == "TimeoutError"
    assert runaway.status is Status.FAILED
    assert "timeout" in (runaway.record().error or "")
    # and the one slot still runs a normal job (capacity did not shrink)
    assert q.put(jobs.double, args=(21,)).result(timeout=WAIT) == 42


def test_a_timed_out_busy_loop_is_really_stopped(make_queue, stop):
    # given a pure-Python busy loop with a timeout
    q = make_queue(workers=1)
    started, exited, counter = threading.Event(), threading.Event(), [0]
    runaway = q.put(busy_loop(stop, started, exited, counter), timeout=0.2)
    assert started.wait(WAIT)
    # when its timeout passes
    with pytest.raises(JobFailed):
        runaway.result(timeout=WAIT)
    # then its loop was interrupted (not merely abandoned): it left its loop ...
    assert exited.wait(WAIT), "the busy loop kept running after its timeout"
    assert not stop.is_set()
    seen = counter[0]
    assert seen > 0
    # ... and stops counting while other jobs run
    assert q.map(jobs.double, range(10)) == [x * 2 for x in range(10)]
    assert counter[0] == seen


def test_capacity_survives_several_timeouts(make_queue, stop):
    # given two worker threads
    q = make_queue(workers=2)
    loops = []
    for _ in range(3):
        started, exited = threading.Event(), threading.Event()
        loops.append((q.put(busy_loop(stop, started, exited, [0]), timeout=0.2), exited))
    # when three runaway jobs time out one after another
    for handle, exited in loops:
        with pytest.raises(JobFailed) as failure:
            handle.result(timeout=WAIT)
        assert failure.value.error_type == "TimeoutError"
        assert exited.wait(WAIT)
    # then two jobs can still run at the same time
    barrier = threading.Barrier(2, timeout=WAIT)
    pair = [q.submit(barrier.wait) for _ in range(2)]
    assert sorted(h.result(timeout=WAIT) for h in pair) == [0, 1]


def test_a_timed_out_job_blocked_in_c_code_loses_its_slot_to_a_fresh_thread(make_queue):
    # given one worker thread and a job blocked in a C call that no exception can interrupt
    q = make_queue(workers=1)
    gate = threading.Event()
    stuck_threads: list[threading.Thread] = []

    def wait_at_gate() -> str:
        stuck_threads.append(threading.current_thread())
        gate.wait(WAIT)
        return "late"

    try:
        stuck = q.put(wait_at_gate, timeout=0.1)
        # when its timeout passes
        with pytest.raises(JobFailed) as failure:
            stuck.result(timeout=WAIT)
        assert failure.value.error_type == "TimeoutError"
        # then the next job runs in another thread while the stuck one still waits
        assert q.put(threading.current_thread).result(timeout=WAIT) is not stuck_threads[0]
        assert not gate.is_set()
    finally:
        gate.set()
    # and once the stuck job returns, its late result does not overwrite its failure
    stuck_threads[0].join(WAIT)
    assert not stuck_threads[0].is_alive()
    assert stuck.status is Status.FAILED
    assert stuck.record().result is None
    assert q.put(jobs.double, args=(1,)).result(timeout=WAIT) == 2


def test_context_runs_once_per_worker_thread(make_queue):
    # given a context function that counts its calls
    calls: list[str] = []
    lock = threading.Lock()

    def context() -> str:
        with lock:
            calls.append(threading.current_thread().name)
        return "ctx:" + threading.current_thread().name

    q = make_queue(workers=3, context=context)

    def report() -> tuple[str, object]:
        return threading.current_thread().name, conveyor.context()

    # when every worker thread has run a job (a barrier makes all three take one) and then more
    barrier = threading.Barrier(3, timeout=WAIT)
    first = [q.submit(lambda: (barrier.wait(), report())[1]) for _ in range(3)]
    reports = [h.result(timeout=WAIT) for h in first]
    reports += q.map(lambda _x: report(), range(30))
    # then the context function ran exactly once in each worker thread
    assert len(calls) == 3
    assert len(set(calls)) == 3
    # and each job saw the value its own thread's context returned
    for thread_name, value in reports:
        assert value == "ctx:" + thread_name
    assert {name for name, _ in reports} == set(calls)


def test_context_outside_a_job_raises_lookup_error():
    # given no job running in this thread / when asking for the context / then LookupError
    with pytest.raises(LookupError):
        conveyor.context()


def test_cancelling_a_running_thread_job_stops_it(make_queue, stop):
    # given a running pure-Python loop
    q = make_queue(workers=1)
    started, exited, counter = threading.Event(), threading.Event(), [0]
    job = q.put(busy_loop(stop, started, exited, counter))
    assert started.wait(WAIT)
    assert job.status is Status.RUNNING
    # when it is cancelled
    assert job.cancel() is True
    # then result() raises JobCancelled and the loop really stopped
    with pytest.raises(JobCancelled):
        job.result(timeout=WAIT)
    assert job.status is Status.CANCELLED
    assert exited.wait(WAIT), "the cancelled job kept running"
    assert not stop.is_set()
    # and the slot was replaced: the next job runs
    assert q.submit(jobs.add, 1, 2).result(timeout=WAIT) == 3


def test_a_coroutine_function_on_a_thread_queue_runs_to_completion(make_queue):
    # given a thread queue and coroutine functions
    q = make_queue(workers=2)

    async def several_steps(x: int) -> list[int]:
        seen = []
        for i in range(3):
            await asyncio.sleep(0)
            seen.append(x + i)
        return seen

    # when they are submitted
    a = q.put(jobs.async_double, args=(21,))
    b = q.put(several_steps, args=(10,))
    # then their results are the coroutines' return values, not coroutine objects
    assert a.result(timeout=WAIT) == 42
    assert b.result(timeout=WAIT) == [10, 11, 12]


def test_an_exception_in_a_thread_job_fails_it_with_its_type(make_queue):
    # given a job that raises
    q = make_queue(workers=1)
    job = q.put(jobs.boom, args=("nope",))
    # when its result is asked / then JobFailed names the error type and message
    with pytest.raises(JobFailed) as failure:
        job.result(timeout=WAIT)
    assert failure.value.error_type == "ValueError"
    assert failure.value.error == "ValueError: nope"
    assert "boom" in (failure.value.traceback or "")
    # and the worker thread survives
    assert q.submit(jobs.double, 4).result(timeout=WAIT) == 8


def test_a_thread_job_that_cancels_itself_ends_cancelled_and_keeps_capacity(make_queue):
    # given one worker thread, a job that will cancel itself, and someone waiting on it
    q = make_queue(workers=1)
    go = threading.Event()
    me: list[conveyor.Job] = []

    def cancel_myself() -> str:
        go.wait(WAIT)
        me[0].cancel()
        return "still here"

    me.append(q.put(cancel_myself))
    ended = threading.Event()
    me[0].add_done_callback(lambda _job: ended.set())
    # when the job cancels itself
    go.set()
    # then its waiters hear that it ended, cancelled
    assert ended.wait(1), "the done callback never ran"
    with pytest.raises(JobCancelled):
        me[0].result(timeout=1)
    # and the worker slot was replaced: the next job runs
    assert q.put(jobs.double, args=(2,)).result(timeout=1) == 4


class Payload:
    """An argument whose lifetime a test can watch with a weak reference."""


def test_a_collected_job_with_a_long_timeout_does_not_keep_its_arguments_alive(make_queue):
    # given a job with a long timeout, run, collected and forgotten by the caller
    q = make_queue(workers=1)
    payload = Payload()
    alive = weakref.ref(payload)
    job = q.put(jobs.echo, args=(payload,), timeout=3600)
    assert job.result(timeout=WAIT) == ((payload,), {})
    del job, payload
    assert len(q.collect()) == 1
    # and the worker has moved on to another job
    assert q.put(jobs.double, args=(1,)).result(timeout=WAIT) == 2
    q.collect()
    # when garbage is collected
    gc.collect()
    # then nothing in conveyor holds on to the finished job's argument
    assert alive() is None
