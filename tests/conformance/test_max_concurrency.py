"""``max_concurrency``: fewer than that many jobs of a task run at once (DESIGN §2)."""

from __future__ import annotations

import pytest

import conveyor
from tests.conformance import jobs


def test_never_more_than_the_limit_run_and_all_finish(queue_factory, board):
    q = queue_factory(workers=4, mode="thread")
    limited = q.task(name="limited", max_concurrency=2)(jobs.record)
    handles = [limited.enqueue(board.key, f"l{i}", 0.01, "limited") for i in range(12)]

    assert [h.result(timeout=5) for h in handles] == [f"l{i}" for i in range(12)]
    assert board.peak["limited"] <= 2
    assert board.active["limited"] == 0


def test_other_tasks_keep_running_while_a_task_is_at_its_limit(queue_factory, board):
    q = queue_factory(workers=4, mode="thread")
    limited = q.task(name="limited", max_concurrency=2)(jobs.blocker)
    first = limited.enqueue(board.key, "l1", "go")
    second = limited.enqueue(board.key, "l2", "go")
    board.wait_started("l1", "l2")
    third = limited.enqueue(board.key, "l3", "go")
    others = [q.put(jobs.record, args=(board.key, f"other{i}")) for i in range(5)]

    assert [h.result(timeout=5) for h in others] == [f"other{i}" for i in range(5)]
    assert third.status == "waiting"  # two workers are idle, but the task is at its limit
    assert q.size("running") == 2

    board.gate("go").set()
    assert [h.result(timeout=5) for h in (first, second, third)] == ["l1", "l2", "l3"]
    assert board.ended_before_started("l1", "l3") or board.ended_before_started("l2", "l3")


def test_a_limit_of_one_serialises_the_task(queue_factory, board):
    q = queue_factory(workers=3, mode="thread")
    single = q.task(name="single", max_concurrency=1)(jobs.record)
    handles = [single.enqueue(board.key, f"s{i}", 0.005, "single") for i in range(10)]

    for handle in handles:
        handle.result(timeout=5)
    assert board.peak["single"] == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_an_invalid_limit_is_refused(queue_factory, bad):
    q = queue_factory(workers=0)
    with pytest.raises(conveyor.InvalidJob):
        q.task(max_concurrency=bad)(jobs.identity)
