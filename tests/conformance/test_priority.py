"""Among jobs that may start: lower priority first, then first submitted (DESIGN §2)."""

from __future__ import annotations

from tests.conformance import jobs


def _queue_behind_a_blocker(queue_factory, board):
    """Given one worker busy with a gated job, so that everything put next queues up."""
    q = queue_factory(workers=1, mode="thread")
    first = q.put(jobs.blocker, args=(board.key, "first", "go"))
    board.wait_started("first")
    return q, first


def test_lower_priority_runs_first_then_submission_order(queue_factory, board):
    q, first = _queue_behind_a_blocker(queue_factory, board)
    priorities = {"p5": 5, "p1a": 1, "p3a": 3, "p1b": 1, "p0": 0, "p3b": 3, "neg": -2}
    handles = [
        q.put(jobs.record, args=(board.key, label), priority=priority)
        for label, priority in priorities.items()
    ]
    assert q.size("waiting") == len(priorities)

    board.gate("go").set()
    for handle in [first, *handles]:
        handle.result(timeout=5)

    assert board.starts() == ["first", "neg", "p0", "p1a", "p1b", "p3a", "p3b", "p5"]


def test_equal_priorities_run_first_in_first_out(queue_factory, board):
    q, _first = _queue_behind_a_blocker(queue_factory, board)
    labels = [f"job{i:02d}" for i in range(20)]
    handles = [q.put(jobs.record, args=(board.key, label), priority=7) for label in labels]

    board.gate("go").set()
    for handle in handles:
        handle.result(timeout=5)

    assert board.starts() == ["first", *labels]


def test_a_later_urgent_job_overtakes_earlier_waiting_ones(queue_factory, board):
    q, _first = _queue_behind_a_blocker(queue_factory, board)
    early = [q.put(jobs.record, args=(board.key, f"early{i}")) for i in range(3)]
    urgent = q.put(jobs.record, args=(board.key, "urgent"), priority=-1)

    board.gate("go").set()
    for handle in [*early, urgent]:
        handle.result(timeout=5)

    assert board.starts() == ["first", "urgent", "early0", "early1", "early2"]
