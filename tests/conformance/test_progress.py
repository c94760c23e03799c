"""``conveyor.progress()`` from inside a running job: the record shows the latest value of the
running attempt, the last one is kept when the job ends, a new attempt starts without any, a
value for an attempt that no longer holds its job changes nothing, and ``q.on("progress")``
hears each value recorded (on Redis, from every process)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

import conveyor
from tests.conformance import jobs

#: the executor modes a job may report progress from (inline: tests/unit/test_progress.py)
MODES = ["thread", "async", "process"]


def wait_until(predicate: Callable[[], bool], timeout: float = jobs.WAIT) -> None:
    """Poll ``predicate`` until it holds (a job's progress reaches the backend from its worker:
    a worker process's through a pipe, so the job cannot say when it landed)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.01)


def boards_reachable(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """In process mode a job runs in a child of its worker: tell it where this process serves
    its boards (before the queue starts its worker, whose environment the child takes)."""
    if mode == "process":
        address, authkey = jobs.serve_boards()
        monkeypatch.setenv(jobs.ADDRESS_VARIABLE, address)
        monkeypatch.setenv(jobs.AUTHKEY_VARIABLE, authkey.hex())


def progress_of(q: conveyor.Queue, job_id: str) -> tuple[float | None, str | None]:
    record = q.job(job_id)
    return record.progress, record.progress_message


@pytest.mark.parametrize("mode", MODES)
def test_progress_shows_while_running_and_the_last_value_is_kept(
    queue_factory, board, monkeypatch, mode
):
    boards_reachable(monkeypatch, mode)
    q = queue_factory(workers=1, mode=mode)
    steps = [[0.7, "seven"], [0.8, "eight"], [1.0, "done"]]
    job = q.put(jobs.progressing, args=(board.key, "job", "go", steps))
    assert progress_of(q, job.id) in [(None, None), (0.5, "half")]

    wait_until(lambda: progress_of(q, job.id) == (0.5, "half"))
    assert q.status(job.id) == "running"
    running = [r for r in q.jobs("running") if r.id == job.id]
    assert [(r.progress, r.progress_message) for r in running] == [(0.5, "half")]

    board.gate("go").set()
    assert job.result(timeout=jobs.WAIT) == "job"
    record = q.job(job.id)
    assert record.status == "finished"
    # the values came faster than they are sent: the last one is always sent before the end
    assert (record.progress, record.progress_message) == (1.0, "done")


def test_many_calls_end_on_the_last_value(queue_factory):
    q = queue_factory(workers=1, mode="thread")
    job = q.put(jobs.progress_items, args=(5000,))
    assert job.result(timeout=jobs.WAIT) == 5000
    assert progress_of(q, job.id) == (1.0, "item 5000")


def test_a_new_attempt_starts_without_the_last_ones_progress(queue_factory, board):
    q = queue_factory(workers=1, mode="thread")
    job = q.put(jobs.progress_then_fail_once, args=(board.key, "job"), retries=1)
    assert job.result(timeout=jobs.WAIT) == "job"
    record = q.job(job.id)
    assert record.attempts == 2
    assert (record.progress, record.progress_message) == (None, None)


def test_progress_of_an_attempt_that_no_longer_holds_its_job_changes_nothing(queue_factory, board):
    q = queue_factory(workers=1, mode="thread")
    backend = q.backend
    job = q.put(jobs.blocker, args=(board.key, "job", "go"))
    board.wait_started("job")
    attempt = q.job(job.id).attempts
    assert attempt == 1

    assert backend.progress(job.id, attempt + 1, 0.2, "a later attempt") is False
    assert backend.progress("no-such-job", 1, 0.2) is False
    assert progress_of(q, job.id) == (None, None)
    assert backend.progress(job.id, attempt, 0.3, "mine") is True
    assert progress_of(q, job.id) == (0.3, "mine")
    assert backend.progress(job.id, attempt, 0.4) is True
    assert progress_of(q, job.id) == (0.4, None)

    assert q.cancel(job.id)
    assert backend.progress(job.id, attempt, 0.9, "too late") is False
    record = q.job(job.id)
    assert record.status == "cancelled"
    assert (record.progress, record.progress_message) == (0.4, None)


@pytest.mark.parametrize(
    ("fraction", "message", "error"),
    [
        (-0.1, None, ValueError),
        (1.5, None, ValueError),
        (float("nan"), None, ValueError),
        (True, None, TypeError),
        ("0.5", None, TypeError),
        (0.5, 7, TypeError),
        (0.5, "x" * 1001, ValueError),
        (0.5, "lone \ud800", ValueError),
    ],
)
def test_a_value_that_cannot_be_recorded_is_refused_and_changes_nothing(
    queue_factory, board, fraction, message, error
):
    q = queue_factory(workers=1, mode="thread")
    job = q.put(jobs.blocker, args=(board.key, "job", "go"))
    board.wait_started("job")
    attempt = q.job(job.id).attempts
    assert q.backend.progress(job.id, attempt, 0.25, "kept") is True

    with pytest.raises(error):
        q.backend.progress(job.id, attempt, fraction, message)
    assert progress_of(q, job.id) == (0.25, "kept")
    board.gate("go").set()
    assert job.result(timeout=jobs.WAIT) == "job"


@pytest.mark.parametrize("mode", MODES)
def test_progress_events_come_in_order_before_the_end(
    queue_factory, board, monkeypatch, variant, mode
):
    if variant.id == "sqlite-process":
        pytest.skip("sqlite-process: events fire in the worker process that ran the job")
    boards_reachable(monkeypatch, mode)
    q = queue_factory(workers=1, mode=mode)
    seen: list[tuple[str, str, float | None, str | None]] = []
    cond = threading.Condition()

    def note(name: str) -> Callable[[conveyor.JobRecord], None]:
        def callback(record: conveyor.JobRecord) -> None:
            with cond:
                seen.append((name, str(record.status), record.progress, record.progress_message))
                cond.notify_all()

        return callback

    q.on("progress", note("progress"))
    q.on("finished", note("finished"))
    job = q.put(jobs.progressing, args=(board.key, "job", "go", [[1.0, "done"]]))
    with cond:
        assert cond.wait_for(lambda: len(seen) >= 1, jobs.WAIT)
        assert seen[0] == ("progress", "running", 0.5, "half")
    board.gate("go").set()
    assert job.result(timeout=jobs.WAIT) == "job"
    with cond:
        assert cond.wait_for(lambda: len(seen) >= 3, jobs.WAIT)
    assert [(name, fraction, message) for name, _, fraction, message in seen] == [
        ("progress", 0.5, "half"),
        ("progress", 1.0, "done"),
        ("finished", 1.0, "done"),
    ]
    # an event relayed from another process carries the job as it is when it is relayed: the
    # last progress event may come after the job ended
    relayed = variant.worker_processes
    assert seen[1][1] == "running" or (relayed and seen[1][1] == "finished")
    assert seen[2][1] == "finished"
