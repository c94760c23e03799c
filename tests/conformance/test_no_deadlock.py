"""No accepted job can deadlock: lanes and dependencies (DESIGN §2, the lane order of
``conveyor.rules``).

A lane job joins its lane's order only once its dependencies have finished, so the front of a
lane never waits on a dependency that waits behind it. Where the order of starts is asserted
exactly, one worker slot runs the jobs (``prefetch=0``: no claim ahead), behind a ``gate`` job
that holds the slot until every job is in.
"""

from __future__ import annotations

import pytest

import conveyor
from tests.conformance import jobs

WAIT = 10.0


def _one_slot_behind_a_gate(queue_factory, board):
    q = queue_factory(workers=1, mode="thread", prefetch=0)
    gate = q.put(jobs.blocker, args=(board.key, "gate", "go"))
    board.wait_started("gate")
    return q, gate


def test_the_issue_example_runs_both_jobs_in_order(queue_factory, board):
    q = queue_factory(workers=2, mode="thread")
    first = q.put(jobs.record, args=(board.key, "first"), id="first", lane="L", delay=0.2)
    second = q.put(
        jobs.record, args=(board.key, "second"), id="second", lane="L", priority=-1, after=["first"]
    )

    assert first.result(timeout=WAIT) == "first"
    assert second.result(timeout=WAIT) == "second"
    assert board.ended_before_started("first", "second")


def test_a_lane_job_joins_its_lane_once_its_dependencies_finished(queue_factory, board):
    q, gate = _one_slot_behind_a_gate(queue_factory, board)
    first = q.put(jobs.record, args=(board.key, "first"), id="first", lane="L")
    # it would be the lane's front (priority -1) but waits for "first", which is behind it
    second = q.put(jobs.record, args=(board.key, "second"), lane="L", priority=-1, after=["first"])
    third = q.put(jobs.record, args=(board.key, "third"), lane="L")
    board.gate("go").set()

    for job in (gate, first, second, third):
        job.result(timeout=WAIT)
    # once "first" finished, "second" joined the lane ahead of "third" (lower priority value)
    assert board.starts() == ["gate", "first", "second", "third"]


def test_two_lanes_whose_fronts_wait_on_each_other_do_not_deadlock(queue_factory, board):
    q, gate = _one_slot_behind_a_gate(queue_factory, board)
    b1 = q.put(jobs.record, args=(board.key, "b1"), id="b1", lane="L1")
    b2 = q.put(jobs.record, args=(board.key, "b2"), id="b2", lane="L2")
    # each would be its lane's front, waiting on a job behind the other lane's front
    h1 = q.put(jobs.record, args=(board.key, "h1"), lane="L1", priority=-1, after=["b2"])
    h2 = q.put(jobs.record, args=(board.key, "h2"), lane="L2", priority=-1, after=["b1"])
    board.gate("go").set()

    for job in (gate, b1, b2, h1, h2):
        job.result(timeout=WAIT)
    # b1 first (submitted first); then h2, which joined lane L2 ahead of b2; then b2, then h1
    assert board.starts() == ["gate", "b1", "h2", "b2", "h1"]


def test_a_job_cancelled_before_joining_its_lane_does_not_short_circuit_it(queue_factory, board):
    q, gate = _one_slot_behind_a_gate(queue_factory, board)
    bad = q.put(jobs.fail, args=(board.key, "bad"), id="bad")
    never = q.put(jobs.record, args=(board.key, "never"), lane="L", after=["bad"])
    runs = q.put(jobs.record, args=(board.key, "runs"), lane="L", stop_on_lane_error=True)
    board.gate("go").set()

    with pytest.raises(conveyor.JobFailed):
        bad.result(timeout=WAIT)
    with pytest.raises(conveyor.JobCancelled) as caught:
        never.result(timeout=WAIT)
    assert "'bad'" in (caught.value.reason or "")  # its dependency, not its lane
    # "never" was never in the lane's order: no job before "runs" in lane L failed
    assert runs.result(timeout=WAIT) == "runs"
    gate.result(timeout=WAIT)


def test_a_job_joining_after_its_lane_failed_is_short_circuited(queue_factory, board):
    q = queue_factory(workers=2, mode="thread")
    dep = q.put(jobs.blocker, args=(board.key, "dep", "dep"), id="dep")
    bad = q.put(jobs.fail, args=(board.key, "bad"), id="bad", lane="L")
    late = q.put(
        jobs.record, args=(board.key, "late"), lane="L", stop_on_lane_error=True, after=["dep"]
    )
    with pytest.raises(conveyor.JobFailed):
        bad.result(timeout=WAIT)
    board.gate("dep").set()  # "late" joins lane L now: the job before it there failed

    assert dep.result(timeout=WAIT) == "dep"
    with pytest.raises(conveyor.JobCancelled) as caught:
        late.result(timeout=WAIT)
    assert "'bad'" in (caught.value.reason or "") and "'L'" in (caught.value.reason or "")
    assert "late" not in board.spans


def test_a_scheduled_job_keeps_its_place_in_its_lane(queue_factory, board):
    q, gate = _one_slot_behind_a_gate(queue_factory, board)
    waiting = q.put(jobs.record, args=(board.key, "waiting"), lane="L")
    delayed = q.put(jobs.record, args=(board.key, "delayed"), lane="L", priority=-1, delay=0.3)
    board.gate("go").set()

    for job in (gate, waiting, delayed):
        job.result(timeout=WAIT)
    # the lane waited for the delayed job's timer: it is ahead of "waiting" in the lane's order
    assert board.starts() == ["gate", "delayed", "waiting"]


def test_a_dependency_named_twice_is_waited_for_once(queue_factory, board):
    q, gate = _one_slot_behind_a_gate(queue_factory, board)
    first = q.put(jobs.record, args=(board.key, "first"), id="first", unique="key")
    again = q.put(jobs.record, args=(board.key, "again"), unique="key")
    assert again.id == "first"  # unique sent it to the first job
    twice = q.put(jobs.record, args=(board.key, "twice"), after=["first", "first"])
    both = q.put(jobs.record, args=(board.key, "both"), after=[first, again])
    board.gate("go").set()

    for job in (gate, first, twice, both):
        job.result(timeout=WAIT)
    assert board.starts() == ["gate", "first", "twice", "both"]
