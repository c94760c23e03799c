"""Results stay until popped (``get``, ``collect``) or forgotten; ``result(id)`` reads without
popping; an unknown id raises UnknownJob (DESIGN §2)."""

from __future__ import annotations

import pytest

import conveyor
from tests.conformance import jobs


def test_result_reads_without_popping(queue_factory, board):
    q = queue_factory(workers=1, mode="thread")
    job = q.put(jobs.record, args=(board.key, "value"))

    assert q.result(job.id, timeout=5) == "value"
    assert q.result(job.id) == "value"  # still there
    assert job.result(timeout=0) == "value"
    assert q.size() == 1
    assert q.status(job.id) == "finished"

    popped = q.get()
    assert popped is not None and popped.id == job.id and popped.result == "value"
    assert q.size() == 0
    with pytest.raises(conveyor.UnknownJob):
        q.result(job.id)


def test_get_pops_in_completion_order(queue_factory, board):
    q = queue_factory(workers=2, mode="thread")
    slow = q.put(jobs.blocker, args=(board.key, "slow", "go"))
    board.wait_started("slow")
    fast = q.put(jobs.record, args=(board.key, "fast"))
    fast.result(timeout=5)
    board.gate("go").set()
    slow.result(timeout=5)
    last = q.put(jobs.fail, args=(board.key, "last"))
    last.wait(timeout=5)

    order = [q.get(), q.get(), q.get()]
    assert [r.id for r in order if r is not None] == [fast.id, slow.id, last.id]
    assert [r.status for r in order if r is not None] == ["finished", "finished", "failed"]
    assert q.get() is None
    assert q.size() == 0


def test_get_with_wait_blocks_until_a_job_ends(queue_factory, board):
    q = queue_factory(workers=1, mode="thread")
    assert q.get() is None
    job = q.put(jobs.blocker, args=(board.key, "job", "go"))
    board.wait_started("job")
    assert q.get() is None  # nothing ended yet, and get does not wait by default

    board.gate("go").set()
    popped = q.get(wait=True, timeout=5)
    assert popped is not None and popped.id == job.id


def test_collect_pops_every_ended_job_and_leaves_the_rest(queue_factory, board):
    q = queue_factory(workers=2, mode="thread")
    done = [q.put(jobs.record, args=(board.key, f"d{i}")) for i in range(5)]
    for job in done:
        job.result(timeout=5)
    running = q.put(jobs.blocker, args=(board.key, "running", "go"))
    board.wait_started("running")

    records = q.collect()

    assert sorted(r.id for r in records) == sorted(job.id for job in done)
    assert all(r.status == "finished" for r in records)
    assert q.size() == 1 and q.status(running.id) == "running"
    assert q.collect() == []
    board.gate("go").set()
    running.result(timeout=5)
    assert [r.id for r in q.collect()] == [running.id]
    assert q.size() == 0


def test_forget_drops_a_result(queue_factory, board):
    q = queue_factory(workers=1, mode="thread")
    kept = q.put(jobs.record, args=(board.key, "kept"))
    dropped = q.put(jobs.record, args=(board.key, "dropped"))
    kept.result(timeout=5)
    dropped.result(timeout=5)

    q.forget(dropped.id)

    with pytest.raises(conveyor.UnknownJob):
        q.status(dropped.id)
    assert [r.id for r in q.collect()] == [kept.id]


@pytest.mark.parametrize("call", ["status", "result", "job", "cancel", "forget"])
def test_an_unknown_id_raises_unknown_job(queue_factory, board, call):
    q = queue_factory(workers=1, mode="thread")
    q.put(jobs.record, args=(board.key, "known"), id="known").result(timeout=5)

    with pytest.raises(conveyor.UnknownJob) as caught:
        getattr(q, call)("never-submitted")
    assert caught.value.job_id == "never-submitted"
    assert isinstance(caught.value, KeyError)


@pytest.mark.parametrize("call", ["status", "result", "job", "cancel"])
def test_a_popped_id_is_unknown(queue_factory, board, call):
    q = queue_factory(workers=1, mode="thread")
    job = q.put(jobs.record, args=(board.key, "job"))
    job.result(timeout=5)
    assert [r.id for r in q.collect()] == [job.id]

    with pytest.raises(conveyor.UnknownJob):
        getattr(q, call)(job.id)


def test_result_with_a_timeout_on_a_running_job_raises_timeout_error(queue_factory, board):
    q = queue_factory(workers=1, mode="thread")
    job = q.put(jobs.blocker, args=(board.key, "job", "go"))
    board.wait_started("job")

    with pytest.raises(TimeoutError):
        q.result(job.id, timeout=0.05)
    with pytest.raises(TimeoutError):
        job.result(timeout=0)
    assert job.status == "running"

    board.gate("go").set()
    assert job.result(timeout=5) == "job"


def test_cancelling_a_waiting_job(queue_factory, board):
    q = queue_factory(workers=1, mode="thread")
    busy = q.put(jobs.blocker, args=(board.key, "busy", "go"))
    board.wait_started("busy")
    job = q.put(jobs.record, args=(board.key, "job"))

    assert job.cancel() is True

    assert job.status == "cancelled"
    with pytest.raises(conveyor.JobCancelled) as caught:
        job.result(timeout=5)
    assert caught.value.job_id == job.id
    board.gate("go").set()
    busy.result(timeout=5)
    assert q.put(jobs.record, args=(board.key, "probe")).result(timeout=5) == "probe"
    assert "job" not in board.spans


def test_cancelling_an_ended_job_returns_false(queue_factory, board):
    q = queue_factory(workers=1, mode="thread")
    done = q.put(jobs.record, args=(board.key, "done"))
    failed = q.put(jobs.fail, args=(board.key, "failed"))
    done.result(timeout=5)
    failed.wait(timeout=5)
    cancelled = q.put(jobs.record, args=(board.key, "x"), delay=3600)
    assert cancelled.cancel() is True

    assert q.cancel(done.id) is False
    assert failed.cancel() is False
    assert cancelled.cancel() is False
    assert [done.status, failed.status, cancelled.status] == ["finished", "failed", "cancelled"]
    assert done.result() == "done"
