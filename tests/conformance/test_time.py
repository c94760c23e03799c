"""Time rules on a ManualClock: delay / at, expiry, retry delays with backoff (DESIGN §2).

No test sleeps for a scheduled time: the clock is moved with ``clock.advance``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

import conveyor
from tests.conformance import jobs


@pytest.fixture
def clock(clock):
    """The shared ManualClock, moved to a whole second so that advances add up exactly."""
    clock.set(float(math.ceil(clock.now())))
    return clock


def _probe(q, board, label):
    """Run a plain job to the end: proof that an idle worker looked at the queue."""
    assert q.put(jobs.record, args=(board.key, label)).result(timeout=5) == label


@pytest.mark.needs_local_clock
def test_delay_keeps_a_job_scheduled_until_the_clock_passes_it(queue_factory, board, clock):
    q = queue_factory(workers=1, mode="thread", clock=clock)
    job = q.put(jobs.record, args=(board.key, "late"), delay=30)
    assert job.status == "scheduled"

    clock.advance(29)
    _probe(q, board, "probe")
    assert job.status == "scheduled"
    assert "late" not in board.spans

    clock.advance(1)
    assert job.result(timeout=5) == "late"
    assert job.record().attempts == 1


def test_a_delayed_job_is_counted_and_waited_for(queue_factory, board, clock):
    q = queue_factory(workers=1, mode="thread", clock=clock)
    q.put(jobs.record, args=(board.key, "late"), delay=30)

    assert q.size("scheduled") == 1
    assert q.size("waiting") == 0
    assert q.size() == 1
    assert q.wait(timeout=0.05) == 1  # still one job ahead


@pytest.mark.needs_local_clock
@pytest.mark.parametrize(
    "make_at",
    [
        pytest.param(lambda ts: ts, id="timestamp"),
        pytest.param(lambda ts: datetime.fromtimestamp(ts, UTC), id="aware-datetime"),
        pytest.param(lambda ts: datetime.fromtimestamp(ts), id="naive-local-datetime"),
    ],
)
def test_at_starts_a_job_at_a_point_in_time(queue_factory, board, clock, make_at):
    q = queue_factory(workers=1, mode="thread", clock=clock)
    job = q.put(jobs.record, args=(board.key, "at"), at=make_at(clock.now() + 60))
    assert job.status == "scheduled"

    clock.advance(59)
    _probe(q, board, "probe")
    assert job.status == "scheduled"

    clock.advance(1)
    assert job.result(timeout=5) == "at"


def test_at_in_the_past_runs_at_once(queue_factory, board, clock):
    q = queue_factory(workers=1, mode="thread", clock=clock)
    job = q.put(jobs.record, args=(board.key, "past"), at=clock.now() - 3600)
    assert job.result(timeout=5) == "past"


@pytest.mark.needs_local_clock
@pytest.mark.parametrize("relative", [True, False], ids=["seconds", "datetime"])
def test_expires_cancels_a_job_that_has_not_started(queue_factory, board, clock, relative):
    q = queue_factory(workers=1, mode="thread", clock=clock)
    busy = q.put(jobs.blocker, args=(board.key, "busy", "go"))
    board.wait_started("busy")
    expires = 10 if relative else datetime.fromtimestamp(clock.now() + 10, UTC)
    job = q.put(jobs.record, args=(board.key, "stale"), expires=expires)

    clock.advance(9)
    assert job.status == "waiting"
    clock.advance(2)
    assert job.status == "cancelled"
    assert job.record().error == "expired"
    with pytest.raises(conveyor.JobCancelled) as caught:
        job.result(timeout=5)
    assert caught.value.reason == "expired"

    board.gate("go").set()
    busy.result(timeout=5)
    _probe(q, board, "probe")
    assert "stale" not in board.spans


@pytest.mark.needs_local_clock
def test_expires_also_cancels_a_scheduled_job(queue_factory, board, clock):
    q = queue_factory(workers=1, mode="thread", clock=clock)
    job = q.put(jobs.record, args=(board.key, "stale"), delay=20, expires=10)

    clock.advance(30)
    assert job.status == "cancelled"
    assert job.record().error == "expired"
    assert "stale" not in board.spans


@pytest.mark.needs_local_clock
def test_expires_does_not_touch_a_job_that_already_started(queue_factory, board, clock):
    q = queue_factory(workers=1, mode="thread", clock=clock)
    job = q.put(jobs.blocker, args=(board.key, "slow", "go"), expires=10)
    board.wait_started("slow")

    clock.advance(60)
    assert job.status == "running"

    board.gate("go").set()
    assert job.result(timeout=5) == "slow"
    assert job.status == "finished"


@pytest.mark.needs_local_clock
@pytest.mark.needs_local_events
def test_retries_wait_retry_delay_times_backoff(queue_factory, board, clock, events):
    q = queue_factory(workers=1, mode="thread", clock=clock)
    events.attach(q, "retrying", "finished")
    job = q.put(jobs.flaky, args=(board.key, "flaky", 2), retries=2, retry_delay=10, backoff=2)

    # attempt 1 fails: the next one is due 10 s later
    events.wait_count("retrying", 1)
    assert job.status == "scheduled"
    assert job.record().attempts == 1
    clock.advance(9)
    _probe(q, board, "probe1")
    assert job.status == "scheduled"
    assert board.calls["flaky"] == 1

    # attempt 2 fails: the next one is due 10 * 2 = 20 s later
    clock.advance(1)
    events.wait_count("retrying", 2)
    assert job.status == "scheduled"
    assert job.record().attempts == 2
    clock.advance(19)
    _probe(q, board, "probe2")
    assert job.status == "scheduled"
    assert board.calls["flaky"] == 2

    # attempt 3 succeeds
    clock.advance(1)
    assert job.result(timeout=5) == "flaky"
    record = job.record()
    assert record.status == "finished"
    assert record.attempts == 3
    assert board.calls["flaky"] == 3
    assert events.count("retrying", job.id) == 2
    assert events.count("finished", job.id) == 1


@pytest.mark.needs_local_clock
@pytest.mark.needs_local_events
def test_a_job_that_exhausts_its_retries_fails_with_the_remote_error(
    queue_factory, board, clock, events
):
    q = queue_factory(workers=1, mode="thread", clock=clock)
    events.attach(q, "retrying", "failed")
    job = q.put(jobs.fail, args=(board.key, "doomed"), retries=2, retry_delay=5)

    events.wait_count("retrying", 1)
    clock.advance(5)
    events.wait_count("retrying", 2)
    clock.advance(5)
    with pytest.raises(conveyor.JobFailed) as caught:
        job.result(timeout=5)

    failure = caught.value
    assert failure.job_id == job.id
    assert failure.error_type == "ValueError"
    assert "doomed failed on purpose" in failure.error
    assert failure.traceback is not None
    assert "Traceback (most recent call last)" in failure.traceback
    assert "ValueError: doomed failed on purpose" in failure.traceback
    assert "jobs.py" in failure.traceback  # where it was raised
    record = job.record()
    assert record.status == "failed"
    assert record.attempts == 3
    assert board.calls["doomed"] == 3
    assert events.count("failed", job.id) == 1


def test_retries_without_a_delay_run_again_at_once(queue_factory, board, clock):
    q = queue_factory(workers=1, mode="thread", clock=clock)
    job = q.put(jobs.flaky, args=(board.key, "flaky", 3), retries=3)

    assert job.result(timeout=5) == "flaky"
    assert job.record().attempts == 4


@pytest.mark.needs_local_clock
@pytest.mark.needs_local_events
def test_expires_does_not_cancel_a_job_waiting_to_retry(queue_factory, board, clock, events):
    q = queue_factory(workers=1, mode="thread", clock=clock)
    events.attach(q, "retrying")
    job = q.put(jobs.flaky, args=(board.key, "flaky", 1), expires=10, retries=1, retry_delay=30)
    events.wait_count("retrying", 1)

    clock.advance(20)  # past expires, but the job has started once already
    assert job.status == "scheduled"

    clock.advance(10)
    assert job.result(timeout=5) == "flaky"
    assert job.record().attempts == 2
