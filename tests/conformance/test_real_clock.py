"""Every timer rule on the real clock (no ManualClock), on every backend variant (DESIGN §2):
``delay``, ``at``, retry delays, ``expires``, ``unique_for``, and lease recovery where leases
exist (SQLite).

A timed job must start (or be cancelled) no earlier than its time, and not much later: within
``LATE`` seconds, a generous correctness bound under load, not a speed target. Times come from
the job records (the backend's clock, which is the real one here). The queues are idle apart
from the job under test, so nothing but the timer can wake the workers: that is the point.
Nothing here calls ``q.wait()``, which on the memory backend applies due timers itself and so
would hide a worker that never wakes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from tests.conformance import jobs
from tests.conformance.conftest import Variant, WorkerProcess

#: seconds a timed job may start (or end) after its time
LATE = 1.0
#: seconds any single wait of these tests may take before it fails
WAIT = 10.0


def _at(stamp: datetime | None) -> float:
    assert stamp is not None
    return stamp.timestamp()


def _until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll ``predicate`` (every 5 ms) until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def _assert_on_time(started: float, earliest: float, due_by: float) -> None:
    assert started >= earliest, f"started {earliest - started:.3f} s before its time"
    assert started - due_by < LATE, f"started {started - due_by:.3f} s after its time"


def test_a_delayed_job_on_an_idle_queue_starts_on_time(queue_factory, board):
    q = queue_factory(workers=2, mode="thread")
    before = time.time()
    job = q.put(jobs.record, args=(board.key, "late"), delay=0.4)
    after = time.time()
    assert job.status == "scheduled"

    assert job.result(timeout=WAIT) == "late"
    _assert_on_time(_at(job.record().started), before + 0.4, after + 0.4)


def test_at_on_an_idle_queue_starts_on_time(queue_factory, board):
    q = queue_factory(workers=2, mode="thread")
    when = time.time() + 0.4
    job = q.put(jobs.record, args=(board.key, "at"), at=when)
    assert job.status == "scheduled"

    assert job.result(timeout=WAIT) == "at"
    _assert_on_time(_at(job.record().started), when, when)


def test_an_earlier_timer_wakes_workers_sleeping_toward_a_later_one(queue_factory, board):
    q = queue_factory(workers=2, mode="thread")
    q.put(jobs.record, args=(board.key, "far"), delay=30)  # every idle worker sleeps toward it
    assert q.put(jobs.record, args=(board.key, "probe")).result(timeout=WAIT) == "probe"
    before = time.time()
    near = q.put(jobs.record, args=(board.key, "near"), delay=0.3)
    after = time.time()

    assert near.result(timeout=WAIT) == "near"
    _assert_on_time(_at(near.record().started), before + 0.3, after + 0.3)
    assert "far" not in board.spans


def test_a_retry_delay_on_an_idle_queue_is_kept(queue_factory, board):
    q = queue_factory(workers=2, mode="thread")
    job = q.put(jobs.flaky, args=(board.key, "flaky", 1), retries=1, retry_delay=0.4)
    _until(lambda: job.status == "scheduled")  # the first attempt failed: waiting to retry
    seen = time.time()
    first = job.record()
    assert first.attempts == 1

    assert job.result(timeout=WAIT) == "flaky"
    second = job.record()
    assert second.attempts == 2
    # the retry is due 0.4 s after the first attempt failed: after it started, before we saw it
    _assert_on_time(_at(second.started), _at(first.started) + 0.4, seen + 0.4)


def test_expiry_cancels_a_delayed_job_on_time(queue_factory, board):
    q = queue_factory(workers=2, mode="thread")
    before = time.time()
    job = q.put(jobs.record, args=(board.key, "stale"), delay=5, expires=0.3)
    after = time.time()

    assert job.wait(timeout=WAIT), "the job did not expire"
    record = job.record()
    assert (record.status, record.error) == ("cancelled", "expired")
    _assert_on_time(_at(record.ended), before + 0.3, after + 0.3)
    assert "stale" not in board.spans


def test_expiry_cancels_a_job_held_behind_its_lane_on_time(queue_factory, board):
    q = queue_factory(workers=2, mode="thread")
    head = q.put(jobs.blocker, args=(board.key, "head", "go"), lane="L")
    board.wait_started("head")
    before = time.time()
    job = q.put(jobs.record, args=(board.key, "stale"), lane="L", expires=0.3)
    after = time.time()

    assert job.wait(timeout=WAIT), "the job did not expire"
    record = job.record()
    assert (record.status, record.error) == ("cancelled", "expired")
    _assert_on_time(_at(record.ended), before + 0.3, after + 0.3)
    board.gate("go").set()
    assert head.result(timeout=WAIT) == "head"
    assert "stale" not in board.spans


def test_unique_for_holds_the_key_that_long_after_the_job_ended(queue_factory, board):
    q = queue_factory(workers=2, mode="thread")
    first = q.put(jobs.record, args=(board.key, "u1"), unique="k", unique_for=1.0)
    assert first.result(timeout=WAIT) == "u1"
    seen = time.time()  # the end is recorded by now (the hold runs from then)
    ended = _at(first.record().ended)

    again = q.put(jobs.record, args=(board.key, "u2"), unique="k", unique_for=1.0)
    if time.time() < ended + 1.0:  # the put ran inside the hold (it always does unless stalled)
        assert again.id == first.id
    time.sleep(max(0.0, seen + 1.0 - time.time()) + 0.05)

    later = q.put(jobs.record, args=(board.key, "u3"), unique="k", unique_for=1.0)
    assert later.id != first.id
    assert later.result(timeout=WAIT) == "u3"
    assert "u2" not in board.spans


def test_a_lost_lease_returns_the_job_once_the_lease_ran_out(
    queue_factory, board, variant: Variant, tmp_path: Path
):
    """A worker process is SIGKILLed while it runs a job; a live worker puts the job back
    when the lease ends (not before) and runs it again."""
    if variant.url.startswith("memory"):
        pytest.skip(f"{variant.id}: no leases (workers live in the queue's process)")
    lease = 1.0
    q = queue_factory(workers=0, lease=lease)
    victim = WorkerProcess(q, 1, {"lease": lease, "allow_modules": [jobs.__name__]}, tmp_path)
    try:
        job = q.put(jobs.blocker, args=(board.key, "job", "go"))
        board.wait_started("job")
        claimed = _at(job.record().started)
        victim.process.kill()
        killed = time.time()
        victim.process.wait(timeout=WAIT)
    finally:
        if victim.process.poll() is None:
            victim.process.kill()
            victim.process.wait()
    board.gate("go").set()  # the rerun passes at once
    queue_factory(workers=1, lease=lease)  # a live worker, which recovers expired leases

    assert job.result(timeout=WAIT) == "job"
    record = job.record()
    assert record.attempts == 2
    assert record.worker is not None and f":{victim.process.pid}:" not in record.worker
    # the first claim's lease ran at least `lease` from the claim, at most `lease` from the kill
    _assert_on_time(_at(record.started), claimed + lease, killed + lease)
