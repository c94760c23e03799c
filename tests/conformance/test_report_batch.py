"""``report``: a worker's reports and its next claim in one atomic step.
Every report whose attempt still holds its job is recorded (with the start time the worker gives),
a stale one is dropped, and the claim sees what the reports freed.

The tests call the backend of a queue without workers (``workers=0``): where jobs run does not
matter here, so on ``sqlite-process`` they exercise the same file as on ``sqlite``.
"""

from __future__ import annotations

import pytest

from conveyor import JobRecord
from conveyor.job import ErrorInfo
from conveyor.records import Failure, Finished
from tests.conformance import jobs

WORKER = "tester/slot-1"


def _backend(queue_factory, **kwargs):
    q = queue_factory(workers=0, **kwargs)
    return q, q.backend


def done(q, job_id, attempt, result, started=None):
    """The report that ``attempt`` of ``job_id`` returned ``result``, the result encoded as
    the queue's workers encode it."""
    serializer = q.codec.serializer
    encoded = result if serializer is None else serializer.dumps(result)
    return Finished(job_id, attempt, encoded, started)


def report(backend, reports, claim):
    """Record ``reports`` and claim up to ``claim`` jobs in one call; the jobs claimed."""
    return backend.report(reports, worker=WORKER, mode="thread", claim=claim).claimed


def fail(backend, job_id, attempt, error):
    """Report a failed attempt; what became of it."""
    failure = Failure(job_id, attempt, error)
    (recorded,) = backend.report([failure], worker=WORKER, mode="thread").recorded
    return recorded


def test_reports_several_jobs_and_claims_the_next_ones_in_one_call(queue_factory):
    q, backend = _backend(queue_factory)
    for n in range(5):
        q.put(jobs.identity, args=(n,), id=f"j{n}")
    first = backend.claim(WORKER, "thread", 2)
    assert [job.id for job in first] == ["j0", "j1"]

    reports = [done(q, job.id, job.attempt, f"result {job.id}") for job in first]
    claimed = report(backend, reports, 2)

    assert [job.id for job in claimed] == ["j2", "j3"]  # submission order
    assert [job.attempt for job in claimed] == [1, 1]
    assert q.codec.decode(claimed[0]).args == (2,)
    assert (q.status("j0"), q.status("j1")) == ("finished", "finished")
    assert (q.result("j0", timeout=0), q.result("j1", timeout=0)) == ("result j0", "result j1")
    assert (q.status("j2"), q.status("j3"), q.status("j4")) == ("running", "running", "waiting")
    assert q.size("running") == 2


def test_reports_only_claim_nothing_with_limit_zero(queue_factory):
    q, backend = _backend(queue_factory)
    for n in range(3):
        q.put(jobs.identity, args=(n,), id=f"j{n}")
    (job,) = backend.claim(WORKER, "thread", 1)

    claimed = report(backend, [done(q, job.id, job.attempt, 7)], 0)

    assert claimed == []
    assert q.result("j0", timeout=0) == 7
    assert (q.status("j1"), q.status("j2")) == ("waiting", "waiting")
    assert report(backend, [], 0) == []
    assert q.size("waiting") == 2 and q.size("running") == 0


def test_no_reports_is_a_plain_claim_that_does_not_wait(queue_factory):
    q, backend = _backend(queue_factory)
    assert report(backend, [], 3) == []  # nothing to claim
    q.put(jobs.identity, args=(1,), id="only")

    claimed = report(backend, [], 3)

    assert [job.id for job in claimed] == ["only"]
    assert q.status("only") == "running"


def test_a_report_of_a_cancelled_job_is_dropped_and_the_others_recorded(queue_factory):
    q, backend = _backend(queue_factory)
    for n in range(3):
        q.put(jobs.identity, args=(n,), id=f"j{n}")
    claimed = backend.claim(WORKER, "thread", 3)
    assert q.cancel("j1") is True

    reports = [done(q, job.id, job.attempt, f"late {job.id}") for job in claimed]
    assert report(backend, reports, 1) == []

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
    assert fail(backend, first.id, first.attempt, ErrorInfo("ValueError", "once")).retrying
    second = backend.claim(WORKER, "thread", 2)
    assert [(job.id, job.attempt) for job in second] == [("retried", 2), ("plain", 1)]

    stale = done(q, "retried", first.attempt, "from attempt 1")
    fresh = done(q, "plain", 1, "plain done")
    assert report(backend, [stale, fresh], 1) == []

    record = backend.get("retried")
    assert (record.status, record.attempts, record.result) == ("running", 2, None)
    assert q.result("plain", timeout=0) == "plain done"

    report(backend, [done(q, "retried", 2, "from attempt 2")], 0)
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
        done(q, "given", claimed[0].attempt, 1, started=claim_time + 10),
        done(q, "kept", claimed[1].attempt, 2),  # None: the claim's time stays
    ]
    report(backend, reports, 0)

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

    claimed = report(backend, [done(q, "a", a.attempt, "A")], 5)

    assert [job.id for job in claimed] == ["b", "c"]  # b was put first
    assert q.result("a", timeout=0) == "A"
    assert (q.status("b"), q.status("c")) == ("running", "running")


def test_a_dependent_of_a_dropped_report_stays_waiting(queue_factory):
    q, backend = _backend(queue_factory)
    q.put(jobs.identity, args=("a",), id="a", retries=1)
    q.put(jobs.identity, args=("b",), id="b", after=["a"])
    (a,) = backend.claim(WORKER, "thread", 1)
    fail(backend, a.id, a.attempt, ErrorInfo("ValueError", "once"))
    (again,) = backend.claim(WORKER, "thread", 1)

    stale = done(q, "a", a.attempt, "stale")
    assert report(backend, [stale], 5) == []

    assert (q.status("a"), q.status("b")) == ("running", "waiting")
    claimed = report(backend, [done(q, "a", again.attempt, "A")], 5)
    assert [job.id for job in claimed] == ["b"]


def test_a_lane_moves_on_within_the_call(queue_factory):
    q, backend = _backend(queue_factory)
    for n in range(3):
        q.put(jobs.identity, args=(n,), id=f"l{n}", lane="one-by-one")
    (first,) = backend.claim(WORKER, "thread", 3)  # a lane runs one at a time
    assert first.id == "l0"

    claimed = report(backend, [done(q, "l0", 1, 0)], 3)

    assert [job.id for job in claimed] == ["l1"]
    assert q.status("l2") == "waiting"
