"""``after=``: a job starts only once every dependency finished; a dependency that fails or is
cancelled cancels the job, saying which (DESIGN §2)."""

from __future__ import annotations

import pytest

import conveyor
from tests.conformance import jobs


def test_waits_for_every_dependency_given_by_id_or_handle(queue_factory, board):
    q = queue_factory(workers=3, mode="thread")
    a = q.put(jobs.blocker, args=(board.key, "a", "a"), id="dep-a")
    b = q.put(jobs.blocker, args=(board.key, "b", "b"), id="dep-b")
    c = q.put(jobs.record, args=(board.key, "c"), after=["dep-a", b])  # an id and a handle
    board.wait_started("a", "b")
    assert c.status == "waiting"

    board.gate("a").set()
    a.result(timeout=5)
    assert c.status == "waiting"  # b still runs

    board.gate("b").set()
    assert c.result(timeout=5) == "c"
    assert board.ended_before_started("a", "c")
    assert board.ended_before_started("b", "c")
    assert set(c.record().after) == {"dep-a", "dep-b"}


def test_a_failed_dependency_cancels_the_job_and_names_it(queue_factory, board):
    q = queue_factory(workers=2, mode="thread")
    dep = q.put(jobs.fail, args=(board.key, "dep", "go"), id="the-failing-dep")
    other = q.put(jobs.record, args=(board.key, "other"), id="fine-dep")
    job = q.put(jobs.record, args=(board.key, "job"), after=[dep, other])

    board.gate("go").set()
    with pytest.raises(conveyor.JobCancelled) as caught:
        job.result(timeout=5)

    assert dep.status == "failed"
    assert job.status == "cancelled"
    assert "the-failing-dep" in (caught.value.reason or "")
    assert "the-failing-dep" in (job.record().error or "")
    assert "job" not in board.spans  # it never ran


def test_a_cancelled_dependency_cancels_the_job_and_names_it(queue_factory, board):
    q = queue_factory(workers=1, mode="thread")
    q.put(jobs.blocker, args=(board.key, "busy", "go"))
    board.wait_started("busy")
    dep = q.put(jobs.record, args=(board.key, "dep"), id="the-cancelled-dep")
    job = q.put(jobs.record, args=(board.key, "job"), after=["the-cancelled-dep"])

    assert dep.cancel() is True

    assert job.status == "cancelled"
    with pytest.raises(conveyor.JobCancelled) as caught:
        job.result(timeout=5)
    assert "the-cancelled-dep" in (caught.value.reason or "")
    assert "the-cancelled-dep" in (job.record().error or "")


def test_cancellation_cascades_through_a_2000_long_chain(queue_factory, board):
    q = queue_factory(workers=1, mode="thread")
    q.put(jobs.blocker, args=(board.key, "busy", "go"))
    board.wait_started("busy")
    length = 2000
    q.put(jobs.identity, args=(0,), id="link-0")
    for i in range(1, length):
        q.put(jobs.identity, args=(i,), id=f"link-{i}", after=[f"link-{i - 1}"])
    assert q.size("waiting") == length

    assert q.cancel("link-0") is True

    records = {r.id: r for r in q.jobs() if r.id.startswith("link-")}
    assert len(records) == length
    assert all(r.status == "cancelled" for r in records.values())
    for i in range(1, length):  # each link names the link it depended on
        assert f"link-{i - 1}" in (records[f"link-{i}"].error or "")
    assert q.size("waiting") == 0


def test_a_failure_cascades_through_a_chain_of_dependents(queue_factory, board):
    q = queue_factory(workers=2, mode="thread")
    root = q.put(jobs.fail, args=(board.key, "root", "go"), id="root")
    mid = q.put(jobs.record, args=(board.key, "mid"), id="mid", after=[root])
    leaf = q.put(jobs.record, args=(board.key, "leaf"), id="leaf", after=[mid])

    board.gate("go").set()
    with pytest.raises(conveyor.JobCancelled) as caught:
        leaf.result(timeout=5)

    assert [root.status, mid.status, leaf.status] == ["failed", "cancelled", "cancelled"]
    assert "root" in (mid.record().error or "")
    assert "mid" in (caught.value.reason or "")
    assert "mid" not in board.spans and "leaf" not in board.spans


def test_a_dependency_that_already_failed_cancels_the_new_job_at_once(queue_factory, board):
    q = queue_factory(workers=1, mode="thread")
    dep = q.put(jobs.fail, args=(board.key, "dep"), id="failed-before")
    with pytest.raises(conveyor.JobFailed):
        dep.result(timeout=5)

    job = q.put(jobs.record, args=(board.key, "job"), after=["failed-before"])

    assert job.status == "cancelled"  # right at put, nothing had to run
    assert "failed-before" in (job.record().error or "")
    with pytest.raises(conveyor.JobCancelled):
        job.result(timeout=0)


def test_a_dependency_that_already_finished_does_not_hold_the_job(queue_factory, board):
    q = queue_factory(workers=1, mode="thread")
    dep = q.put(jobs.record, args=(board.key, "dep"), id="done-before")
    dep.result(timeout=5)

    job = q.put(jobs.record, args=(board.key, "job"), after=[dep])

    assert job.result(timeout=5) == "job"


def test_an_unknown_dependency_is_refused_and_changes_nothing(queue_factory, board):
    q = queue_factory(workers=0)
    q.put(jobs.identity, args=(1,), id="known")
    before = [(r.id, r.status) for r in q.jobs()]

    with pytest.raises(conveyor.UnknownDependency) as caught:
        q.put(jobs.identity, args=(2,), id="orphan", after=["known", "no-such-job"])

    assert isinstance(caught.value, conveyor.InvalidJob)
    assert q.size() == 1
    assert [(r.id, r.status) for r in q.jobs()] == before
    with pytest.raises(conveyor.UnknownJob):
        q.status("orphan")


def test_a_job_that_depends_on_itself_is_a_cycle(queue_factory, board):
    q = queue_factory(workers=0)

    with pytest.raises(conveyor.DependencyCycle):
        q.put(jobs.identity, args=(1,), id="selfish", after=["selfish"])

    assert q.size() == 0
    with pytest.raises(conveyor.UnknownJob):
        q.status("selfish")
