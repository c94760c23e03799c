"""Statuses move waiting -> running -> finished / failed / cancelled; events and counts follow
(DESIGN §1 statuses and ``on``)."""

from __future__ import annotations

import pytest

import conveyor
from tests.conformance import jobs


def _hold_the_worker(queue_factory, board, events=None):
    """One worker busy with the job "busy" (gate "go"), so that jobs put next are waiting."""
    q = queue_factory(workers=1, mode="thread")
    if events is not None:
        events.attach(q)
    busy = q.put(jobs.blocker, args=(board.key, "busy", "go"), id="busy")
    board.wait_started("busy")
    if events is not None:
        events.wait_count("started", 1, "busy")
    return q, busy


@pytest.fixture
def held(queue_factory, board, events):
    """``_hold_the_worker`` with every event of the queue logged."""
    return _hold_the_worker(queue_factory, board, events)


@pytest.mark.needs_local_events
def test_waiting_running_finished(held, board, events):
    q, _busy = held
    job = q.put(jobs.blocker, args=(board.key, "job", "job"), id="job")
    assert job.status == "waiting" and not job.done()
    assert events.of("job") == [("queued", "waiting", 0)]
    assert (q.size("waiting"), q.size("running"), q.size()) == (1, 1, 2)

    board.gate("go").set()
    board.wait_started("job")
    events.wait_count("started", 1, "job")
    assert job.status == "running" and not job.done()
    assert (q.size("waiting"), q.size("running"), q.size("finished")) == (0, 1, 1)

    board.gate("job").set()
    assert job.result(timeout=5) == "job"
    events.wait_count("finished", 1, "job")
    assert job.status == "finished" and job.done()
    assert events.of("job") == [
        ("queued", "waiting", 0),
        ("started", "running", 1),
        ("finished", "finished", 1),
    ]
    assert (q.size("waiting"), q.size("running"), q.size("finished")) == (0, 0, 2)
    assert q.size("failed", "cancelled") == 0


@pytest.mark.needs_local_events
def test_waiting_running_failed(held, board, events):
    q, _busy = held
    job = q.put(jobs.fail, args=(board.key, "job"), id="job")
    assert job.status == "waiting"

    board.gate("go").set()
    assert job.wait(timeout=5)
    events.wait_count("failed", 1, "job")
    assert job.status == "failed" and job.done()
    assert events.of("job") == [
        ("queued", "waiting", 0),
        ("started", "running", 1),
        ("failed", "failed", 1),
    ]
    assert q.size("failed") == 1 and q.size("finished") == 1
    record = job.record()
    assert record.error is not None and record.error.startswith("ValueError")
    assert record.started is not None and record.ended is not None


@pytest.mark.needs_local_events
def test_waiting_cancelled(held, board, events):
    q, busy = held
    job = q.put(jobs.record, args=(board.key, "job"), id="job")

    assert job.cancel() is True

    events.wait_count("cancelled", 1, "job")
    assert job.status == "cancelled" and job.done()
    assert events.of("job") == [("queued", "waiting", 0), ("cancelled", "cancelled", 0)]
    assert (q.size("waiting"), q.size("cancelled")) == (0, 1)
    board.gate("go").set()
    busy.result(timeout=5)
    assert q.wait(timeout=5) == 0
    assert "job" not in board.spans
    assert job.record().started is None


@pytest.mark.needs_local_events
def test_retrying_goes_back_to_waiting(held, board, events):
    q, _busy = held
    job = q.put(jobs.flaky, args=(board.key, "job", 1), id="job", retries=1)

    board.gate("go").set()
    assert job.result(timeout=5) == "job"
    events.wait_count("finished", 1, "job")
    assert [event for event, _, _ in events.of("job")] == [
        "queued",
        "started",
        "retrying",
        "started",
        "finished",
    ]
    assert events.of("job")[-1] == ("finished", "finished", 2)


@pytest.mark.needs_local_events
def test_cancelling_a_running_job(held, board, events):
    q, busy = held

    assert busy.cancel() is True

    assert busy.status == "cancelled"
    events.wait_count("cancelled", 1, "busy")
    assert [event for event, _, _ in events.of("busy")] == ["queued", "started", "cancelled"]
    assert q.size("running") == 0


def test_cancelling_a_running_job_frees_its_slot(queue_factory, board):
    q, busy = _hold_the_worker(queue_factory, board)

    assert busy.cancel() is True

    assert busy.status == "cancelled"
    with pytest.raises(conveyor.JobCancelled):
        busy.result(timeout=5)
    assert q.size("running") == 0
    # the slot is free again: a new job runs although "busy" never returned
    assert q.put(jobs.record, args=(board.key, "next")).result(timeout=5) == "next"


def test_the_jobs_listing_follows_the_statuses(queue_factory, board):
    q, _busy = _hold_the_worker(queue_factory, board)
    waiting = q.put(jobs.record, args=(board.key, "w"), id="w")
    cancelled = q.put(jobs.record, args=(board.key, "c"), id="c")
    cancelled.cancel()

    assert [r.id for r in q.jobs("running")] == ["busy"]
    assert [r.id for r in q.jobs("waiting")] == ["w"]
    assert [r.id for r in q.jobs("cancelled")] == ["c"]
    assert [r.id for r in q.jobs()] == ["busy", "w", "c"]

    board.gate("go").set()
    waiting.result(timeout=5)
    assert sorted(r.id for r in q.jobs("finished")) == ["busy", "w"]
    assert q.jobs("waiting") == [] and q.jobs("running") == []


def test_counts_stay_right_after_a_scheduled_job_is_cancelled(queue_factory, board):
    q = queue_factory(workers=0)
    delayed = q.put(jobs.record, args=(board.key, "delayed"), delay=3600)
    delayed.cancel()

    q.put(jobs.record, args=(board.key, "waiting"))

    assert q.size("waiting") == 1
    assert q.size() == 2
    assert q.wait(timeout=0.05) == 1  # one job is still waiting
