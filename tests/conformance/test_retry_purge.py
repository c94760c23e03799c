"""``Queue.retry`` puts a failed or cancelled job back (attempts reset, the old end kept in
``meta["conveyor.history"]``); ``Queue.purge`` drops jobs, never running ones. The same on
every backend variant."""

from __future__ import annotations

import pytest

import conveyor
from tests.conformance import jobs

HISTORY = "conveyor.history"


def test_a_failed_job_retried_runs_again_with_attempts_reset_and_its_error_in_history(
    queue_factory, board
):
    q = queue_factory(workers=1, mode="thread")
    job = q.put(jobs.flaky, args=(board.key, "f", 2), id="flaky", retries=1)
    with pytest.raises(conveyor.JobFailed):
        job.result(timeout=10)
    failed = job.record()
    assert (failed.status, failed.attempts) == ("failed", 2)

    again = job.retry()

    assert again.id == "flaky"
    assert again.result(timeout=10) == "f"  # the third call succeeds
    record = q.job("flaky")
    assert (record.status, record.attempts, record.error) == ("finished", 1, None)
    (earlier,) = record.meta[HISTORY]
    assert earlier["status"] == "failed"
    assert earlier["attempts"] == 2
    assert "f attempt 2 failed on purpose" in earlier["error"]
    assert "ValueError" in earlier["traceback"]
    assert earlier["ended"] <= earlier["retried"]  # ISO 8601 UTC: text order is time order
    assert board.call_count("f") == 3


def test_retry_refuses_jobs_that_did_not_fail_and_changes_nothing(queue_factory, board):
    q = queue_factory(workers=1, mode="thread")
    done = q.put(jobs.record, args=(board.key, "done"), id="done")
    done.result(timeout=10)
    running = q.put(jobs.blocker, args=(board.key, "run", "go"), id="running")
    board.wait_started("run")
    waiting = q.put(jobs.record, args=(board.key, "wait"), id="waiting")

    for job_id, status in [("done", "finished"), ("running", "running"), ("waiting", "waiting")]:
        with pytest.raises(conveyor.InvalidJob, match="only failed or cancelled"):
            q.retry(job_id)
        assert q.status(job_id) == status
    with pytest.raises(conveyor.UnknownJob):
        q.retry("no-such-job")

    board.gate("go").set()
    assert running.result(timeout=10) == "run"
    assert waiting.result(timeout=10) == "wait"
    assert q.job("done").attempts == 1
    assert HISTORY not in q.job("done").meta


def test_a_cancelled_job_retried_runs(queue_factory, board):
    q = queue_factory(workers=1, mode="thread")
    q.put(jobs.blocker, args=(board.key, "busy", "go"), id="busy")
    board.wait_started("busy")
    job = q.put(jobs.record, args=(board.key, "later"), id="later")
    assert job.cancel() is True

    q.retry("later")
    board.gate("go").set()

    assert job.result(timeout=10) == "later"
    (earlier,) = q.job("later").meta[HISTORY]
    assert (earlier["status"], earlier["error"], earlier["attempts"]) == (
        "cancelled",
        "cancelled",
        0,
    )


def test_dependents_stay_cancelled_and_wait_for_a_retried_dependency(queue_factory, board):
    q = queue_factory(workers=2, mode="thread")
    dep = q.put(jobs.flaky, args=(board.key, "dep", 1), id="dep")
    child = q.put(jobs.record, args=(board.key, "child"), id="child", after=["dep"])
    with pytest.raises(conveyor.JobCancelled):
        child.result(timeout=10)

    with pytest.raises(conveyor.InvalidJob, match="retry 'dep' first"):
        q.retry("child")
    assert q.status("child") == "cancelled"

    q.retry("dep")
    assert dep.result(timeout=10) == "dep"
    assert q.status("child") == "cancelled"  # the cascade's cancel stands

    q.retry("child")
    assert child.result(timeout=10) == "child"
    assert board.ended_before_started("dep", "child")


def test_a_child_retried_while_its_dependency_runs_again_waits_for_it(queue_factory, board):
    q = queue_factory(workers=2, mode="thread")
    dep = q.put(jobs.fail, args=(board.key, "dep"), id="dep")
    child = q.put(jobs.record, args=(board.key, "child"), id="child", after=[dep])
    with pytest.raises(conveyor.JobCancelled):
        child.result(timeout=10)
    q.forget("dep")  # a dependency no longer in the queue counts as satisfied
    dep = q.put(jobs.blocker, args=(board.key, "dep2", "go"), id="dep")
    board.wait_started("dep2")

    q.retry("child")
    assert q.status("child") == "waiting"

    board.gate("go").set()
    assert child.result(timeout=10) == "child"
    assert board.ended_before_started("dep2", "child")


def test_a_retry_takes_its_unique_key_again_unless_another_job_holds_it(queue_factory, board):
    q = queue_factory(workers=2, mode="thread")
    first = q.put(jobs.flaky, args=(board.key, "u", 1), id="first", unique="key")
    with pytest.raises(conveyor.JobFailed):
        first.result(timeout=10)
    second = q.put(jobs.blocker, args=(board.key, "second", "go"), id="second", unique="key")
    assert second.id == "second"
    board.wait_started("second")

    with pytest.raises(conveyor.InvalidJob, match="holds its unique key"):
        q.retry("first")
    assert q.status("first") == "failed"

    board.gate("go").set()
    second.result(timeout=10)
    q.put(jobs.blocker, args=(board.key, "hold", "hold"), id="hold")  # keep a slot busy
    board.wait_started("hold")
    q.put(jobs.blocker, args=(board.key, "hold2", "hold"), id="hold2")
    board.wait_started("hold2")
    q.retry("first")  # both slots busy: it waits, holding the key
    assert q.put(jobs.record, args=(board.key, "dup"), unique="key").id == "first"
    board.gate("hold").set()
    assert first.result(timeout=10) == "u"


def test_a_retried_lane_job_runs_and_the_lane_goes_on(queue_factory, board):
    q = queue_factory(workers=2, mode="thread")
    a = q.put(jobs.flaky, args=(board.key, "a", 1), id="a", lane="L", stop_on_lane_error=True)
    b = q.put(jobs.record, args=(board.key, "b"), id="b", lane="L", stop_on_lane_error=True)
    with pytest.raises(conveyor.JobCancelled):
        b.result(timeout=10)
    assert a.status == "failed"

    q.retry("a")  # its own earlier failure does not short-circuit it
    assert a.result(timeout=10) == "a"
    q.retry("b")
    assert b.result(timeout=10) == "b"
    assert board.starts() == ["a", "a", "b"]


def test_purge_drops_ended_jobs_by_default_and_never_running_ones(queue_factory, board):
    q = queue_factory(workers=1, mode="thread")
    q.put(jobs.record, args=(board.key, "ok"), id="ok").result(timeout=10)
    failed = q.put(jobs.fail, args=(board.key, "bad"), id="bad")
    with pytest.raises(conveyor.JobFailed):
        failed.result(timeout=10)
    running = q.put(jobs.blocker, args=(board.key, "run", "go"), id="run")
    board.wait_started("run")
    q.put(jobs.record, args=(board.key, "cancelled"), id="cancelled").cancel()
    q.put(jobs.record, args=(board.key, "later"), id="later", delay=3600)
    q.put(jobs.record, args=(board.key, "dependent"), id="dependent", after=["later"])

    assert q.purge(older_than=3600) == 0  # they all ended just now
    assert q.purge(task="tests.conformance.jobs.fail") == 0  # task names are qualnames
    assert q.purge(task="fail") == 1
    assert q.purge() == 2  # ok and cancelled
    assert {r.id for r in q.jobs()} == {"run", "later", "dependent"}

    with pytest.raises(conveyor.InvalidJob, match="never purged"):
        q.purge(status="running")
    with pytest.raises(conveyor.InvalidJob, match="unknown status"):
        q.purge(status="done")
    with pytest.raises(conveyor.InvalidJob, match="older_than"):
        q.purge(older_than=-1)
    assert q.purge(status="scheduled") == 1  # cancelled first: its dependent is cancelled
    assert q.status("dependent") == "cancelled"
    assert q.purge(status=["cancelled", "waiting"], older_than=0) == 1
    assert [r.id for r in q.jobs()] == ["run"]

    board.gate("go").set()
    assert running.result(timeout=10) == "run"
    assert q.purge() == 1
    assert q.jobs() == []


def test_a_retried_lane_job_waits_for_its_retried_dependency_outside_the_lane_order(
    queue_factory, board
):
    # given a lane whose first job fails, cancelling its dependent (ahead of it by priority)
    q = queue_factory(workers=2, mode="thread")
    first = q.put(jobs.flaky, args=(board.key, "first", 1), id="first", lane="L")
    second = q.put(
        jobs.record, args=(board.key, "second"), id="second", lane="L", priority=-1, after=["first"]
    )
    with pytest.raises(conveyor.JobFailed):
        first.result(timeout=10)
    with pytest.raises(conveyor.JobCancelled):
        second.result(timeout=10)

    # when both are retried (the dependent jumps the lane by priority once it joins)
    q.retry("first")
    q.retry("second")

    # then the dependent joins the lane only once its dependency finished: no deadlock
    assert first.result(timeout=10) == "first"
    assert second.result(timeout=10) == "second"
    assert board.ended_before_started("first", "second")
