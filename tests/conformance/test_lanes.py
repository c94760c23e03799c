"""Lanes: one lane runs one job at a time, by priority then submission; a lane short-circuits
on error with ``stop_on_lane_error`` (DESIGN §2, ezpq's synchronous lanes)."""

from __future__ import annotations

import itertools
import random

import pytest

import conveyor
from tests.conformance import jobs


def test_jobs_of_one_lane_never_overlap_and_run_by_priority_then_submission(queue_factory, board):
    q = queue_factory(workers=4, mode="thread")
    head = q.put(jobs.blocker, args=(board.key, "head", "go"), lane="disk")
    board.wait_started("head")
    spec = [("l0", 2), ("l1", 0), ("l2", 1), ("l3", 0), ("l4", 2), ("l5", -1), ("l6", 1)]
    handles = [
        q.put(jobs.record, args=(board.key, label, 0.01), lane="disk", priority=priority)
        for label, priority in spec
    ]
    assert all(h.status == "waiting" for h in handles)  # three workers idle, lane busy

    board.gate("go").set()
    for handle in [head, *handles]:
        handle.result(timeout=5)

    assert board.starts() == ["head", "l5", "l1", "l3", "l2", "l6", "l0", "l4"]
    for a, b in itertools.combinations(["head", *(label for label, _ in spec)], 2):
        assert not board.overlaps(a, b), f"{a} and {b} of one lane overlapped"


def test_a_lane_holds_its_next_job_while_other_work_runs(queue_factory, board):
    q = queue_factory(workers=2, mode="thread")
    q.put(jobs.blocker, args=(board.key, "head", "go"), lane="L")
    board.wait_started("head")
    second = q.put(jobs.record, args=(board.key, "second"), lane="L")
    free = q.put(jobs.record, args=(board.key, "free"))

    assert free.result(timeout=5) == "free"  # the idle worker took the lane-less job ...
    assert second.status == "waiting"  # ... but not the lane's next one

    board.gate("go").set()
    assert second.result(timeout=5) == "second"
    assert board.ended_before_started("head", "second")


def test_different_lanes_run_in_parallel(queue_factory, board):
    q = queue_factory(workers=2, mode="thread")
    board.barrier("both", 2)
    a = q.put(jobs.meet, args=(board.key, "a", "both"), lane="left")
    b = q.put(jobs.meet, args=(board.key, "b", "both"), lane="right")

    # each job returns only once the other one is running at the same time
    assert a.result(timeout=5) == "a"
    assert b.result(timeout=5) == "b"
    assert board.overlaps("a", "b")


def test_stop_on_lane_error_short_circuits_the_lane(queue_factory, board):
    q = queue_factory(workers=2, mode="thread")
    lane = "lane-x"
    bad = q.put(jobs.fail, args=(board.key, "bad", "go"), lane=lane, id="bad")
    skip1 = q.put(jobs.record, args=(board.key, "skip1"), lane=lane, stop_on_lane_error=True)
    skip2 = q.put(jobs.record, args=(board.key, "skip2"), lane=lane, stop_on_lane_error=True)
    plain = q.put(jobs.record, args=(board.key, "plain"), lane=lane)
    after_ok = q.put(jobs.record, args=(board.key, "after_ok"), lane=lane, stop_on_lane_error=True)
    other = q.put(jobs.record, args=(board.key, "other"), lane="lane-y", stop_on_lane_error=True)

    board.gate("go").set()
    with pytest.raises(conveyor.JobFailed):
        bad.result(timeout=5)
    for skipped in (skip1, skip2):
        with pytest.raises(conveyor.JobCancelled) as caught:
            skipped.result(timeout=5)
        assert lane in (caught.value.reason or "")
        assert lane in (skipped.record().error or "")
    assert plain.result(timeout=5) == "plain"  # no flag: it runs after a failure
    assert after_ok.result(timeout=5) == "after_ok"  # the job before it finished
    assert other.result(timeout=5) == "other"  # another lane is not affected

    assert "skip1" not in board.spans and "skip2" not in board.spans
    assert board.ended_before_started("bad", "plain")


def test_a_cancelled_lane_job_short_circuits_the_next_one(queue_factory, board):
    q = queue_factory(workers=1, mode="thread")
    lane = "lane-z"
    head = q.put(jobs.blocker, args=(board.key, "head", "go"), lane=lane)
    board.wait_started("head")
    doomed = q.put(jobs.record, args=(board.key, "doomed"), lane=lane)
    follower = q.put(jobs.record, args=(board.key, "follower"), lane=lane, stop_on_lane_error=True)
    assert doomed.cancel() is True

    board.gate("go").set()
    head.result(timeout=5)
    with pytest.raises(conveyor.JobCancelled) as caught:
        follower.result(timeout=5)
    assert lane in (caught.value.reason or "")
    assert "follower" not in board.spans


def test_stop_on_lane_error_holds_when_the_failed_job_ended_before_the_put(queue_factory, board):
    q = queue_factory(workers=1, mode="thread")
    bad = q.put(jobs.fail, args=(board.key, "bad"), lane="L")
    with pytest.raises(conveyor.JobFailed):
        bad.result(timeout=5)

    # the job before this one in lane "L" failed: the lane is short-circuited
    late = q.put(jobs.record, args=(board.key, "late"), lane="L", stop_on_lane_error=True)

    with pytest.raises(conveyor.JobCancelled):
        late.result(timeout=5)


def test_ezpq_lane_error_example(queue_factory, board):
    """ezpq: reciprocal of random ints (0 included) across 5 lanes, all stop_on_lane_error."""
    rng = random.Random(20240501)
    values = [rng.randint(0, 10) for _ in range(40)]
    values[6] = values[13] = values[22] = 0  # lanes 1, 3, 2 fail early for sure
    lanes = 5
    q = queue_factory(workers=6, mode="thread")
    heads = [  # hold every lane until all jobs are in, so the outcome does not race the puts
        q.put(jobs.blocker, args=(board.key, f"head{lane}", "go"), lane=lane)
        for lane in range(lanes)
    ]
    handles = [
        q.put(jobs.reciprocal, args=(x,), lane=i % lanes, stop_on_lane_error=True)
        for i, x in enumerate(values)
    ]
    board.gate("go").set()
    for head in heads:
        head.result(timeout=5)
    assert q.wait(timeout=5) == 0

    records = [h.record() for h in handles]
    assert {r.status for r in records} == {"finished", "failed", "cancelled"}
    for lane in range(lanes):
        previous = "finished"  # the head of each lane finished
        for i in range(lane, len(values), lanes):
            record, x = records[i], values[i]
            if record.status == "cancelled":
                assert previous in ("failed", "cancelled"), f"job {i} cancelled after {previous}"
            else:
                assert previous == "finished", f"job {i} ran after a {previous} job"
                if x == 0:
                    assert record.status == "failed"
                    assert (record.error or "").startswith("ZeroDivisionError")
                else:
                    assert record.status == "finished"
                    assert record.result == pytest.approx(1 / x)
            previous = record.status


def test_lane_jobs_freed_by_one_end_join_the_lane_together(queue_factory, board):
    """Lane jobs whose last dependency ends in the same step join the lane's order together,
    so its front is the first of them by priority: a stop_on_lane_error job is judged against
    the job before it in that order, not against a failure older than both."""
    q = queue_factory(workers=1, mode="thread")
    bad = q.put(jobs.fail, args=(board.key, "bad"), lane="L")
    with pytest.raises(conveyor.JobFailed):
        bad.result(timeout=5)
    dep = q.put(jobs.blocker, args=(board.key, "dep", "go"))
    board.wait_started("dep")
    # put first, but after "first" in the lane's order (priority 5 against 1)
    strict = q.put(
        jobs.record, args=(board.key, "strict"), lane="L", priority=5, stop_on_lane_error=True,
        after=[dep.id],
    )  # fmt: skip
    first = q.put(jobs.record, args=(board.key, "first"), lane="L", priority=1, after=[dep.id])

    board.gate("go").set()
    assert first.result(timeout=5) == "first"
    assert strict.result(timeout=5) == "strict"  # the job before it in the lane finished
    assert board.starts() == ["bad", "dep", "first", "strict"]
