"""``finish_many_and_claim``: a batching worker's reports and its next claim in one atomic step.
Every report whose attempt still holds its job is recorded (with the start time the worker gives),
a stale one is dropped, and the claim sees what the reports freed.

The tests call the backend of a queue without workers (``workers=0``): where jobs run does not
matter here, so on ``sqlite-process`` they exercise the same file as on ``sqlite``.
"""

from __future__ import annotations

import pytest

from conveyor import JobRecord
from conveyor.job import ErrorInfo
from conveyor.records import Finished
from tests.conformance import jobs

WORKER = "tester/slot-1"


def _backend(queue_factory, **kwargs):
    q = queue_factory(workers=0, **kwargs)
    return q, q.backend


def test_reports_several_jobs_and_claims_the_next_ones_in_one_call(queue_factory):
    q, backend = _backend(queue_factory)
    for n in range(5):
        q.put(jobs.identity, args=(n,), id=f"j{n}")
    first = backend.claim(WORKER, "thread", 2)
    assert [job.id for job in first] == ["j0", "j1"]

    reports = [Finished(job.id, job.attempt, f"result {job.id}") for job in first]
    claimed = backend.finish_many_and_claim(reports, WORKER, "thread", 2)

    assert [job.id for job in claimed] == ["j2", "j3"]  # submission order
    assert [job.attempt for job in claimed] == [1, 1]
    assert claimed[0].args == (2,)
    assert (q.status("j0"), q.status("j1")) == ("finished", "finished")
    assert (q.result("j0", timeout=0), q.result("j1", timeout=0)) == ("result j0", "result j1")
    assert (q.status("j2"), q.status("j3"), q.status("j4")) == ("running", "running", "waiting")
    assert q.size("running") == 2


def test_reports_only_claim_nothing_with_limit_zero(queue_factory):
    q, backend = _backend(queue_factory)
    for n in range(3):
        q.put(jobs.identity, args=(n,), id=f"j{n}")
    (job,) = backend.claim(WORKER, "thread", 1)

    claimed = backend.finish_many_and_claim([Finished(job.id, job.attempt, 7)], WORKER, "thread", 0)

    assert claimed == []
    assert q.result("j0", timeout=0) == 7
    assert (q.status("j1"), q.status("j2")) == ("waiting", "waiting")
    assert backend.finish_many_and_claim([], WORKER, "thread", 0) == []
    assert q.size("waiting") == 2 and q.size("running") == 0


def test_no_reports_is_a_plain_claim_that_does_not_wait(queue_factory):
    q, backend = _backend(queue_factory)
    assert backend.finish_many_and_claim([], WORKER, "thread", 3) == []  # nothing to claim
    q.put(jobs.identity, args=(1,), id="only")

    claimed = backend.finish_many_and_claim([], WORKER, "thread", 3)

    assert [job.id for job in claimed] == ["only"]
    assert q.status("only") == "running"


def test_a_report_of_a_cancelled_job_is_dropped_and_the_others_recorded(queue_factory):
    q, backend = _backend(queue_factory)
    for n in range(3):
        q.put(jobs.identity, args=(n,), id=f"j{n}")
    claimed = backend.claim(WORKER, "thread", 3)
    assert q.cancel("j1") is True

    reports = [Finished(job.id, job.attempt, f"late {job.id}") for job in claimed]
    assert backend.finish_many_and_claim(reports, WORKER, "thread", 1) == []

    assert (q.status("j0"), q.status("j1"), q.status("j2")) == ("finished", "cancelled", "finished")
    assert (q.result("j0", timeout=0), q.result("j2", timeout=0)) == ("late j0", "late j2")
    assert backend.get("j1").result is None  # the cancelled job keeps no result
    assert q.size("running") == 0


def test_a_report_of_a_stale_attempt_is_dropped(queue_factory):
    q, backend = _backend(queue_factory)
    q.put(jobs.identity, args=(1,), id="retried", retries=1)
    q.put(jobs.identity, args=(2,), id="plain")
    (first,) = backend.claim(WORKER, "thread", 1)
    assert first.id == "retried"
    assert backend.fail(first.id, first.attempt, ErrorInfo("ValueError", "once")).retrying
    second = backend.claim(WORKER, "thread", 2)
    assert [(job.id, job.attempt) for job in second] == [("retried", 2), ("plain", 1)]

    stale = Finished("retried", first.attempt, "from attempt 1")
    fresh = Finished("plain", 1, "plain done")
    assert backend.finish_many_and_claim([stale, fresh], WORKER, "thread", 1) == []

    record = backend.get("retried")
    assert (record.status, record.attempts, record.result) == ("running", 2, None)
    assert q.result("plain", timeout=0) == "plain done"

    backend.finish_many_and_claim([Finished("retried", 2, "from attempt 2")], WORKER, "thread", 0)
    assert q.result("retried", timeout=0) == "from attempt 2"


def test_the_reported_start_becomes_the_records_started(queue_factory, clock):
    q, backend = _backend(queue_factory, clock=clock)
    q.put(jobs.identity, args=(1,), id="given")
    q.put(jobs.identity, args=(2,), id="kept")
    claim_time = clock.now()
    claimed = backend.claim(WORKER, "thread", 2)
    clock.advance(10)
    end_time = clock.advance(10)

    reports = [
        Finished("given", claimed[0].attempt, 1, started=claim_time + 10),
        Finished("kept", claimed[1].attempt, 2),  # None: the claim's time stays
    ]
    backend.finish_many_and_claim(reports, WORKER, "thread", 0)

    given, kept = backend.get("given"), backend.get("kept")
    assert given.started == JobRecord.timestamp(claim_time + 10)
    assert given.ended == JobRecord.timestamp(end_time)
    assert given.runtime == pytest.approx(10)
    assert kept.started == JobRecord.timestamp(claim_time)
    assert kept.ended == JobRecord.timestamp(end_time)


def test_a_dependent_of_a_reported_job_is_claimed_in_the_same_call(queue_factory):
    q, backend = _backend(queue_factory)
    q.put(jobs.identity, args=("a",), id="a")
    q.put(jobs.identity, args=("b",), id="b", after=["a"])
    q.put(jobs.identity, args=("c",), id="c")
    (a,) = backend.claim(WORKER, "thread", 1)
    assert a.id == "a"
    assert q.status("b") == "waiting"

    claimed = backend.finish_many_and_claim([Finished("a", a.attempt, "A")], WORKER, "thread", 5)

    assert [job.id for job in claimed] == ["b", "c"]  # b was put first
    assert q.result("a", timeout=0) == "A"
    assert (q.status("b"), q.status("c")) == ("running", "running")


def test_a_dependent_of_a_dropped_report_stays_waiting(queue_factory):
    q, backend = _backend(queue_factory)
    q.put(jobs.identity, args=("a",), id="a", retries=1)
    q.put(jobs.identity, args=("b",), id="b", after=["a"])
    (a,) = backend.claim(WORKER, "thread", 1)
    backend.fail(a.id, a.attempt, ErrorInfo("ValueError", "once"))
    (again,) = backend.claim(WORKER, "thread", 1)

    stale = Finished("a", a.attempt, "stale")
    assert backend.finish_many_and_claim([stale], WORKER, "thread", 5) == []

    assert (q.status("a"), q.status("b")) == ("running", "waiting")
    claimed = backend.finish_many_and_claim(
        [Finished("a", again.attempt, "A")], WORKER, "thread", 5
    )
    assert [job.id for job in claimed] == ["b"]


def test_a_lane_moves_on_within_the_call(queue_factory):
    q, backend = _backend(queue_factory)
    for n in range(3):
        q.put(jobs.identity, args=(n,), id=f"l{n}", lane="one-by-one")
    (first,) = backend.claim(WORKER, "thread", 3)  # a lane runs one at a time
    assert first.id == "l0"

    claimed = backend.finish_many_and_claim([Finished("l0", 1, 0)], WORKER, "thread", 3)

    assert [job.id for job in claimed] == ["l1"]
    assert q.status("l2") == "waiting"
