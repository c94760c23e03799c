"""``unique``: while a job with the same key is waiting or running (or ended less than
``unique_for`` seconds ago) a new put returns the existing job (DESIGN §2)."""

from __future__ import annotations

import math

import pytest

import conveyor
from tests.conformance import jobs


def test_a_unique_key_returns_the_same_job_while_waiting_and_running(queue_factory, board):
    q = queue_factory(workers=1, mode="thread")
    q.put(jobs.blocker, args=(board.key, "busy", "busy"))
    board.wait_started("busy")

    first = q.put(jobs.blocker, args=(board.key, "first", "first"), unique="report")
    assert first.status == "waiting"
    again = q.put(jobs.record, args=(board.key, "again"), unique="report")
    assert again.id == first.id
    assert q.size() == 2

    board.gate("busy").set()
    board.wait_started("first")
    assert first.status == "running"
    while_running = q.put(jobs.record, args=(board.key, "while_running"), unique="report")
    assert while_running.id == first.id
    assert q.size() == 2

    board.gate("first").set()
    assert first.result(timeout=5) == "first"
    assert "again" not in board.spans and "while_running" not in board.spans


def test_after_the_job_ended_the_same_key_makes_a_new_job(queue_factory, board):
    q = queue_factory(workers=1, mode="thread")
    first = q.put(jobs.record, args=(board.key, "first"), unique="report")
    first.result(timeout=5)

    second = q.put(jobs.record, args=(board.key, "second"), unique="report")

    assert second.id != first.id
    assert second.result(timeout=5) == "second"
    assert q.size() == 2


def test_unique_true_derives_the_key_from_task_and_arguments(queue_factory):
    q = queue_factory(workers=0)
    one = q.put(jobs.identity, args=(1,), unique=True)

    assert q.put(jobs.identity, args=(1,), unique=True).id == one.id
    assert q.put(jobs.identity, (1,), unique=True).id == one.id
    other_args = q.put(jobs.identity, args=(2,), unique=True)
    other_task = q.put(jobs.reciprocal, args=(1,), unique=True)
    not_unique = q.put(jobs.identity, args=(1,))

    assert len({one.id, other_args.id, other_task.id, not_unique.id}) == 4
    assert q.size() == 4


def test_unique_true_counts_keyword_arguments(queue_factory):
    q = queue_factory(workers=0)
    a = q.put(jobs.record, args=("k", "a"), kwargs={"hold": 0.0}, unique=True)
    b = q.put(jobs.record, args=("k", "a"), kwargs={"hold": 0.5}, unique=True)
    c = q.put(jobs.record, args=("k", "a"), kwargs={"hold": 0.0}, unique=True)

    assert a.id != b.id
    assert c.id == a.id


@pytest.mark.needs_local_clock
def test_unique_for_keeps_returning_the_ended_job_until_it_passes(queue_factory, board, clock):
    clock.set(float(math.ceil(clock.now())))
    q = queue_factory(workers=1, mode="thread", clock=clock)
    first = q.put(jobs.record, args=(board.key, "first"), unique="nightly", unique_for=60)
    first.result(timeout=5)

    assert q.put(jobs.record, args=(board.key, "x"), unique="nightly").id == first.id
    clock.advance(59)
    assert q.put(jobs.record, args=(board.key, "y"), unique="nightly").id == first.id
    assert board.calls["first"] == 1 and "x" not in board.spans and "y" not in board.spans

    clock.advance(2)
    fresh = q.put(jobs.record, args=(board.key, "fresh"), unique="nightly")
    assert fresh.id != first.id
    assert fresh.result(timeout=5) == "fresh"


def test_a_cancelled_unique_job_frees_its_key(queue_factory):
    q = queue_factory(workers=0)
    first = q.put(jobs.identity, args=(1,), unique="k")
    assert first.cancel() is True

    second = q.put(jobs.identity, args=(1,), unique="k")

    assert second.id != first.id
    assert second.status == "waiting"


@pytest.mark.parametrize("bad", ["", 0, 1.5, ["k"]])
def test_a_bad_unique_key_is_refused(queue_factory, bad):
    q = queue_factory(workers=0)
    with pytest.raises(conveyor.InvalidJob):
        q.put(jobs.identity, args=(1,), unique=bad)
    assert q.size() == 0


def test_a_scheduled_unique_job_is_returned_too(queue_factory, board, clock):
    q = queue_factory(workers=1, mode="thread", clock=clock)
    first = q.put(jobs.record, args=(board.key, "first"), unique="later", delay=60)
    assert first.status == "scheduled"

    again = q.put(jobs.record, args=(board.key, "again"), unique="later")

    assert again.id == first.id
    assert [r.id for r in q.jobs()] == [first.id]


def test_unique_for_never_hands_out_a_popped_job(queue_factory, board, clock):
    q = queue_factory(workers=1, mode="thread", clock=clock)
    first = q.put(jobs.record, args=(board.key, "first"), unique="nightly", unique_for=60)
    first.result(timeout=5)
    assert [r.id for r in q.collect()] == [first.id]

    again = q.put(jobs.record, args=(board.key, "again"), unique="nightly")

    assert again.status in ("waiting", "running", "finished")  # a job the queue knows
