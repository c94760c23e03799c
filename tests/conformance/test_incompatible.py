"""Incompatible jobs: a job does not start while a running job is named (by id or task name) in
its ``incompatible`` list, nor while a running job lists its id or task name (DESIGN §2)."""

from __future__ import annotations

from tests.conformance import jobs


def test_incompatible_with_a_task_name(queue_factory, board):
    q = queue_factory(workers=3, mode="thread")
    alpha = q.task(name="alpha")(jobs.blocker)
    running = alpha.put(args=(board.key, "alpha1", "go"))
    board.wait_started("alpha1")

    held = q.put(jobs.record, args=(board.key, "held"), incompatible=["alpha"])
    unrelated = q.put(jobs.record, args=(board.key, "unrelated"), incompatible=["beta"])

    assert unrelated.result(timeout=5) == "unrelated"
    assert held.status == "waiting"
    board.gate("go").set()
    running.result(timeout=5)
    assert held.result(timeout=5) == "held"
    assert board.ended_before_started("alpha1", "held")


def test_incompatible_with_a_job_id(queue_factory, board):
    q = queue_factory(workers=3, mode="thread")
    running = q.put(jobs.blocker, args=(board.key, "target", "go"), id="target-job")
    board.wait_started("target")

    held = q.put(jobs.record, args=(board.key, "held"), incompatible=["target-job"])
    unrelated = q.put(jobs.record, args=(board.key, "unrelated"), incompatible=["other-job"])

    assert unrelated.result(timeout=5) == "unrelated"
    assert held.status == "waiting"
    board.gate("go").set()
    running.result(timeout=5)
    assert held.result(timeout=5) == "held"
    assert board.ended_before_started("target", "held")


def test_a_running_job_keeps_the_task_it_lists_from_starting(queue_factory, board):
    q = queue_factory(workers=3, mode="thread")
    beta = q.task(name="beta")(jobs.record)
    gamma = q.task(name="gamma")(jobs.record)
    lister = q.put(jobs.blocker, args=(board.key, "lister", "go"), incompatible=["beta"])
    board.wait_started("lister")

    held = beta.put(args=(board.key, "beta1"))
    unrelated = gamma.put(args=(board.key, "gamma1"))

    assert unrelated.result(timeout=5) == "gamma1"
    assert held.status == "waiting"
    board.gate("go").set()
    lister.result(timeout=5)
    assert held.result(timeout=5) == "beta1"
    assert board.ended_before_started("lister", "beta1")


def test_a_running_job_keeps_the_job_id_it_lists_from_starting(queue_factory, board):
    q = queue_factory(workers=3, mode="thread")
    lister = q.put(jobs.blocker, args=(board.key, "lister", "go"), incompatible=["job-x"])
    board.wait_started("lister")

    held = q.put(jobs.record, args=(board.key, "x"), id="job-x")
    unrelated = q.put(jobs.record, args=(board.key, "y"), id="job-y")

    assert unrelated.result(timeout=5) == "y"
    assert held.status == "waiting"
    board.gate("go").set()
    lister.result(timeout=5)
    assert held.result(timeout=5) == "x"
    assert board.ended_before_started("lister", "x")


def test_pysiq_example_2(queue_factory, board):
    """PySiQ: three jobs of task ``foo`` on two workers; job 2 is incompatible with ``foo``,
    job 3 depends on job 2. They run 1, 2, 3 and job 2 never overlaps job 1."""
    q = queue_factory(workers=2, mode="thread")
    job1 = q.put(jobs.foo, args=(board.key, "1", "job1"), id="1")
    job2 = q.put(jobs.foo, args=(board.key, "2"), id="2", incompatible=["foo"])
    job3 = q.put(jobs.foo, args=(board.key, "3"), id="3", after=["2"])
    board.wait_started("1")
    assert job1.record().task == "foo"
    assert job2.status == "waiting"  # a worker is free, but a foo job runs
    assert job3.status == "waiting"

    board.gate("job1").set()
    assert [job.result(timeout=5) for job in (job1, job2, job3)] == ["1", "2", "3"]

    assert board.starts() == ["1", "2", "3"]
    assert not board.overlaps("1", "2")
    assert board.ended_before_started("2", "3")
