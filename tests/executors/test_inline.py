"""mode="inline": a job runs during put, in the calling thread (for tests and debugging)."""

from __future__ import annotations

import threading

import pytest

from conveyor import JobCancelled, JobFailed, Status
from tests import jobs


def test_a_job_runs_during_put_in_the_calling_thread(make_queue):
    # given an inline queue
    q = make_queue(mode="inline")
    caller = threading.get_ident()
    # when a job is put
    job = q.put(threading.get_ident)
    # then it has already finished when put returns, and it ran in this thread
    assert job.status is Status.FINISHED
    assert job.done()
    assert job.record().result == caller
    assert job.result(timeout=0) == caller


def test_inline_results_failures_and_map(make_queue):
    # given an inline queue
    q = make_queue(mode="inline")
    # when jobs succeed and fail
    ok = q.put(jobs.add, args=(2, 3))
    bad = q.put(jobs.boom, args=("inline",))
    # then both ended during their put
    assert ok.status is Status.FINISHED and ok.result() == 5
    assert bad.status is Status.FAILED
    with pytest.raises(JobFailed) as failure:
        bad.result()
    assert failure.value.error_type == "ValueError"
    assert q.map(jobs.double, [1, 2, 3]) == [2, 4, 6]
    # and collect pops them in the order they ended
    assert [r.id for r in q.collect()] == [ok.id, bad.id]


def test_a_dependent_runs_after_its_dependency_during_the_same_put(make_queue):
    # given an inline queue and a log of what ran
    q = make_queue(mode="inline")
    ran: list[str] = []
    # when a is put, then b after a
    a = q.put(ran.append, args=("a",), id="a")
    b = q.put(ran.append, args=("b",), id="b", after=["a"])
    # then each ran during its own put, in dependency order
    assert ran == ["a", "b"]
    assert a.status is b.status is Status.FINISHED


def test_a_job_put_while_its_dependency_runs_runs_once_the_dependency_ends(make_queue):
    # given an inline job that puts a second job depending on itself
    q = make_queue(mode="inline")
    ran: list[str] = []
    inner: list[str] = []

    def outer() -> str:
        ran.append("outer started")
        child = q.put(ran.append, args=("inner",), after=["outer"])
        inner.append(child.id)
        # the dependency (this job) has not ended: the inner job must not have run yet
        ran.append(f"inner {child.status}")
        ran.append("outer ended")
        return "outer"

    # when the outer job is put
    job = q.put(outer, id="outer")
    # then the inner job ran after the outer one ended, before put returned
    assert ran == ["outer started", "inner waiting", "outer ended", "inner"]
    assert job.result() == "outer"
    assert q.status(inner[0]) is Status.FINISHED


def test_a_dependent_of_a_delayed_job_runs_once_its_dependency_ran(make_queue, clock):
    # given an inline queue on a manual clock, a delayed job a and a job b after a
    q = make_queue(mode="inline", clock=clock)
    ran: list[str] = []
    a = q.put(ran.append, args=("a",), id="a", delay=60)
    b = q.put(ran.append, args=("b",), id="b", after=[a])
    # then neither ran yet
    assert ran == []
    assert a.status is Status.SCHEDULED
    assert b.status is Status.WAITING
    # when the delay passes and the queue is waited on
    clock.advance(60)
    assert q.wait(timeout=5) == 0
    # then a ran, and b after it
    assert ran == ["a", "b"]
    assert b.status is Status.FINISHED


def test_a_failed_dependency_cancels_the_dependent_inline(make_queue):
    # given an inline queue where a fails
    q = make_queue(mode="inline")
    a = q.put(jobs.boom, id="a")
    assert a.status is Status.FAILED
    # when b is put after a
    b = q.put(jobs.double, args=(1,), after=["a"])
    # then b is cancelled, saying which dependency failed
    assert b.status is Status.CANCELLED
    with pytest.raises(JobCancelled) as cancelled:
        b.result()
    assert "a" in (cancelled.value.reason or "")


def test_wait_runs_an_inline_retry_that_becomes_due_while_waiting(make_queue):
    # given an inline job that fails once and is retried after a short delay
    q = make_queue(mode="inline")
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("first attempt fails")
        return "ok"

    job = q.put(flaky, retries=1, retry_delay=0.05)
    assert job.status is Status.SCHEDULED
    # when waiting for the queue to drain
    left = q.wait(timeout=1)
    # then the retry ran once it was due, and nothing is left
    assert left == 0
    assert job.status is Status.FINISHED
    assert attempts == [1, 1]
