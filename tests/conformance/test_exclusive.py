"""Exclusive groups: no two running jobs share a group (DESIGN §2)."""

from __future__ import annotations

import itertools

from tests.conformance import jobs


def test_jobs_sharing_a_group_never_overlap(queue_factory, board):
    q = queue_factory(workers=4, mode="thread")
    labels = [f"g{i}" for i in range(8)]
    handles = [
        q.put(jobs.record, args=(board.key, label, 0.01, "g"), exclusive=["g"]) for label in labels
    ]
    for handle in handles:
        handle.result(timeout=5)

    assert board.peak["g"] == 1
    for a, b in itertools.combinations(labels, 2):
        assert not board.overlaps(a, b)


def test_a_running_group_member_holds_the_next_while_other_groups_run(queue_factory, board):
    q = queue_factory(workers=3, mode="thread")
    first = q.put(jobs.blocker, args=(board.key, "first", "go"), exclusive="db")
    board.wait_started("first")
    second = q.put(jobs.record, args=(board.key, "second"), exclusive=["db"])
    elsewhere = q.put(jobs.record, args=(board.key, "elsewhere"), exclusive=["cache"])
    free = q.put(jobs.record, args=(board.key, "free"))

    assert elsewhere.result(timeout=5) == "elsewhere"
    assert free.result(timeout=5) == "free"
    assert second.status == "waiting"

    board.gate("go").set()
    first.result(timeout=5)
    assert second.result(timeout=5) == "second"
    assert board.ended_before_started("first", "second")


def test_a_job_in_several_groups_excludes_each_of_them(queue_factory, board):
    q = queue_factory(workers=3, mode="thread")
    both = q.put(jobs.blocker, args=(board.key, "both", "go"), exclusive=["a", "b"])
    board.wait_started("both")
    in_a = q.put(jobs.record, args=(board.key, "in_a"), exclusive=["a"])
    in_b = q.put(jobs.record, args=(board.key, "in_b"), exclusive=["b"])
    probe = q.put(jobs.record, args=(board.key, "probe"), exclusive=["c"])

    assert probe.result(timeout=5) == "probe"
    assert in_a.status == "waiting" and in_b.status == "waiting"

    board.gate("go").set()
    both.result(timeout=5)
    in_a.result(timeout=5)
    in_b.result(timeout=5)
    assert board.ended_before_started("both", "in_a")
    assert board.ended_before_started("both", "in_b")


def test_jobs_in_different_groups_overlap(queue_factory, board):
    q = queue_factory(workers=2, mode="thread")
    board.barrier("meet", 2)
    a = q.put(jobs.meet, args=(board.key, "a", "meet"), exclusive=["x"])
    b = q.put(jobs.meet, args=(board.key, "b", "meet"), exclusive=["y"])

    assert a.result(timeout=5) == "a"  # only possible if both ran at once
    assert b.result(timeout=5) == "b"
    assert board.overlaps("a", "b")


def test_200_jobs_in_one_group_on_4_workers_run_one_at_a_time(queue_factory, board):
    q = queue_factory(workers=4, mode="thread")
    handles = [
        q.put(jobs.record, args=(board.key, f"db{i}", 0.0005, "db"), exclusive=["db"])
        for i in range(200)
    ]
    assert q.wait(timeout=10) == 0

    assert [h.result(timeout=0) for h in handles] == [f"db{i}" for i in range(200)]
    assert board.peak["db"] == 1
    assert board.active["db"] == 0
    assert all(h.status == "finished" for h in handles)
