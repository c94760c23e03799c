"""What only the SQLite backend has: a file shared by processes, stored payloads, indexes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import conveyor
from conveyor.backends.sqlite.schema import (
    DUE,
    EXPIRED,
    NEXT_TIMER,
    PARKED_TOP,
    READY_TOP,
    capacities,
    job_columns,
    plan_columns,
    shape_columns,
)
from conveyor.rules.plan import compile_plan
from tests.backends import sqlite_jobs

ROOT = Path(__file__).resolve().parents[2]
#: the module of the jobs, which every queue here allows its workers to run
ALLOW = [sqlite_jobs.__name__]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/queue.db"


def test_jobs_and_results_outlive_the_queue_object(url: str) -> None:
    with conveyor.Queue(url, allow_modules=ALLOW, workers=1) as q:
        job = q.put(sqlite_jobs.identity, args=({"a": [1, 2]},), id="kept")
        assert job.result(timeout=10) == {"a": [1, 2]}

    reopened = conveyor.Queue(url, allow_modules=ALLOW, workers=0)
    try:
        assert reopened.status("kept") == "finished"
        assert reopened.result("kept") == {"a": [1, 2]}
        assert [r.id for r in reopened.collect()] == ["kept"]
    finally:
        reopened.close()


def test_a_lambda_or_closure_is_refused_at_put_and_says_what_to_do(url: str) -> None:
    q = conveyor.Queue(url, allow_modules=ALLOW, workers=0)
    try:

        def closure() -> int:
            return 1

        for fn in (lambda: 1, closure):
            with pytest.raises(conveyor.NotSerializable, match="module level"):
                q.put(fn)
        assert q.size() == 0
    finally:
        q.close()


def test_json_refuses_what_it_cannot_carry_and_names_pickle(url: str) -> None:
    q = conveyor.Queue(url, allow_modules=ALLOW, workers=0)
    try:
        with pytest.raises(conveyor.NotSerializable, match='serializer="pickle"'):
            q.put(sqlite_jobs.identity, args=({1, 2},))
        assert q.size() == 0
    finally:
        q.close()


def test_pickle_serializer_carries_python_objects(tmp_path: Path) -> None:
    with conveyor.Queue(
        f"sqlite:///{tmp_path}/p.db", allow_modules=ALLOW, workers=1, serializer="pickle"
    ) as q:
        assert q.put(sqlite_jobs.identity, args=({1, 2},)).result(timeout=10) == {1, 2}


def test_a_forged_payload_is_recorded_failed_and_never_unpickled(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/signed.db"
    mark = tmp_path / "mark"
    producer = conveyor.Queue(
        db, allow_modules=ALLOW, workers=0, serializer="pickle", secret="right key"
    )
    forged = conveyor.Queue(
        db, allow_modules=ALLOW, workers=0, serializer="pickle", secret="wrong key"
    )
    try:
        bad = forged.put(sqlite_jobs.identity, args=(sqlite_jobs.Bomb(str(mark)),), id="bad")
        good = producer.put(sqlite_jobs.identity, args=(7,), id="good")
    finally:
        forged.close()
    producer.close()
    with conveyor.Queue(
        db, allow_modules=ALLOW, workers=1, serializer="pickle", secret="right key"
    ) as worker:
        assert worker.result(good.id, timeout=10) == 7
        with pytest.raises(conveyor.JobFailed) as failure:
            worker.result(bad.id, timeout=10)
    assert failure.value.error_type == "PayloadRefused"
    assert not mark.exists()


def test_a_corrupt_row_fails_that_job_only_and_the_worker_lives(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    q = conveyor.Queue(f"sqlite:///{path}", allow_modules=ALLOW, workers=0)
    q.put(sqlite_jobs.identity, args=(1,), id="corrupt", priority=0)
    q.put(sqlite_jobs.identity, args=(2,), id="fine", priority=1)
    q.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE jobs SET payload = ? WHERE id = 'corrupt'", (b"\x00garbage",))

    with conveyor.Queue(f"sqlite:///{path}", allow_modules=ALLOW, workers=1) as q:
        assert q.result("fine", timeout=10) == 2
        with pytest.raises(conveyor.JobFailed, match="PayloadRefused"):
            q.result("corrupt", timeout=10)


def test_result_ttl_deletes_ended_jobs_after_it(tmp_path: Path) -> None:
    from conveyor.testing import ManualClock

    clock = ManualClock()
    with conveyor.Queue(
        f"sqlite:///{tmp_path}/ttl.db", allow_modules=ALLOW, workers=1, clock=clock, result_ttl=60
    ) as q:
        job = q.put(sqlite_jobs.identity, args=(1,))
        assert job.result(timeout=10) == 1
        clock.advance(59)
        assert q.status(job.id) == "finished"
        clock.advance(2)
        with pytest.raises(conveyor.UnknownJob):
            q.status(job.id)


@pytest.mark.parametrize(
    ("query", "args", "index"),
    [
        (READY_TOP, ("thread",), "jobs_ready"),
        (PARKED_TOP, ("group:db", "thread"), "jobs_parked"),
        (DUE, (1e12,), "jobs_due"),
        (EXPIRED, (1e12,), "jobs_expiry"),
        (NEXT_TIMER, (), "jobs_due"),
    ],
)
def test_claim_and_timer_queries_use_their_index_not_a_scan(
    url: str, query: str, args: tuple[object, ...], index: str
) -> None:
    q = conveyor.Queue(url, allow_modules=ALLOW, workers=0)
    try:
        for n in range(50):
            q.put(sqlite_jobs.identity, args=(n,), delay=n % 2 * 100, expires=1000)
        backend = q.backend
        plan = " ".join(
            str(row) for row in backend._db.execute("EXPLAIN QUERY PLAN " + query, args)
        )  # type: ignore[attr-defined]
    finally:
        q.close()
    assert index in plan
    assert "SCAN jobs" not in plan


DRAIN = textwrap.dedent(
    """
    import sys
    import conveyor
    q = conveyor.Queue(sys.argv[1], workers=2, allow_modules=["tests.backends.sqlite_jobs"])
    q.wait()
    q.close()
    """
)


def test_two_worker_processes_share_the_file_and_run_each_job_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    marks = tmp_path / "marks"
    marks.mkdir()
    q = conveyor.Queue(url, allow_modules=ALLOW, workers=0)
    # one meeting job per slot (2 processes x 2): each process must take some of them
    meet = [q.put(sqlite_jobs.rendezvous, args=(str(marks), f"meet{n}", 2)).id for n in range(4)]
    ids = meet + [q.put(sqlite_jobs.note, args=(str(marks), f"job{n}")).id for n in range(200)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen([sys.executable, "-c", DRAIN, url], env=env, cwd=ROOT) for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.wait(timeout=120) == 0
    finally:
        for worker in workers:
            worker.kill()
    outcomes = q.waiter.wait_results(ids, timeout=10)
    q.close()
    assert all(status == "finished" for status, _, _ in outcomes)
    runs = sorted(p.name.split(".")[0] for p in marks.iterdir())
    expected = [f"job{n}" for n in range(200)] + [f"meet{n}" for n in range(4)]
    assert runs == sorted(expected)  # each exactly once
    pids = {p.name.split(".")[1] for p in marks.iterdir()}
    assert len(pids) == 2  # both processes took work


@pytest.mark.skipif(sqlite3.sqlite_version_info < (3, 35), reason="needs DROP COLUMN")
def test_a_file_from_before_stored_plans_gets_them_and_keeps_its_blocked_jobs_blocked(
    url: str,
) -> None:
    def opened() -> tuple[conveyor.Queue, Any]:
        q = conveyor.Queue(url, allow_modules=ALLOW, workers=0)
        return q, q.task(name="limited", max_concurrency=1)(sqlite_jobs.identity)

    # given jobs of a limited task and of an exclusive group, one of each running
    q, limited = opened()
    try:
        for n in (1, 2):
            limited.put(args=(n,), id=f"limited{n}")
            q.put(sqlite_jobs.identity, args=(n,), id=f"db{n}", exclusive=["db"])
        running = q.backend.claim("w/1", "thread", 4)
    finally:
        q.close()
    assert sorted(job.id for job in running) == ["db1", "limited1"]
    # in a file as an older conveyor left it: no plans, the task's limit in its own table
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        for column in ("needs", "holds", "frees"):
            db.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
        db.execute("DROP TABLE capacities")
        db.execute("CREATE TABLE limits (task TEXT PRIMARY KEY, max INTEGER NOT NULL)")
        db.execute("INSERT INTO limits VALUES ('limited', 1)")
    # when it is opened, every job gets the plan its options compile to
    q, _ = opened()
    try:
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            stored = {
                row[0]: row[1:]
                for row in db.execute("SELECT id, task, exclusive, needs, holds, frees FROM jobs")
            }
        for job_id, (task, exclusive, *columns) in stored.items():
            plan = compile_plan(
                job_id,
                task,
                exclusive=tuple(json.loads(exclusive)),
                max_concurrency=1 if task == "limited" else None,
            )
            assert tuple(columns) == plan_columns(plan), job_id
        # and the jobs blocked before still wait for the running ones, then start
        assert q.backend.claim("w/1", "thread", 4) == []
        for job in running:
            run = q.codec.decode(job)
            report = q.codec.finished(run, run.args[0])
            (recorded,) = q.backend.report([report], worker="w/1", mode="thread").recorded
            assert recorded.held
        assert sorted(job.id for job in q.backend.claim("w/1", "thread", 4)) == [
            "db2",
            "limited2",
        ]
    finally:
        q.close()


@pytest.mark.skipif(sqlite3.sqlite_version_info < (3, 35), reason="needs DROP COLUMN")
def test_a_file_from_before_progress_gets_its_columns(url: str) -> None:
    # given a running job in a file as a conveyor before progress left it
    q = conveyor.Queue(url, allow_modules=ALLOW, workers=0)
    try:
        q.put(sqlite_jobs.identity, args=(1,), id="job")
        (claimed,) = q.backend.claim("w/1", "thread", 1)
    finally:
        q.close()
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        for column in ("progress", "progress_message"):
            db.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
    # when it is opened, the job has no progress yet, and its running attempt may record some
    q = conveyor.Queue(url, allow_modules=ALLOW, workers=0)
    try:
        record = q.job("job")
        assert (record.status, record.progress, record.progress_message) == ("running", None, None)
        assert q.backend.progress("job", claimed.attempt, 0.5, "half") is True
        record = q.job("job")
        assert (record.progress, record.progress_message) == (0.5, "half")
    finally:
        q.close()


@pytest.mark.parametrize(
    ("job_id", "task", "exclusive", "incompatible", "limit"),
    [
        ("j1", "t", (), (), None),
        ('a "quoted" id\\é', "t", (), (), None),
        ("j2", "t", ("db", "net"), (), None),
        ("j3", "t", (), ("other", "job-x", "other"), 3),
        ("j4", "tâche", ("db",), ("t",), 1),
    ],
)
def test_a_submit_stores_the_columns_its_plan_compiles_to(
    job_id: str,
    task: str,
    exclusive: tuple[str, ...],
    incompatible: tuple[str, ...],
    limit: int | None,
) -> None:
    # a submit builds its columns from its kind's, cached: the same as the plan's own
    shape = shape_columns(task, exclusive, incompatible, limit)
    plan = compile_plan(
        job_id, task, exclusive=exclusive, incompatible=incompatible, max_concurrency=limit
    )
    columns = job_columns(job_id, shape)
    assert columns == plan_columns(plan)
    assert [json.loads(column) for column in columns]  # each a JSON list
    assert list(shape.capacities) == capacities(plan)


def test_idle_slots_share_one_look_at_other_processes_commits(url: str) -> None:
    """Of the idle slots of a queue, one looks at PRAGMA data_version every POLL_INTERVAL
    (the poller); the others sleep until it sees a change: eight idle slots make about as
    many looks as one, not eight times as many."""
    from conveyor.backends.sqlite.waiting import POLL_INTERVAL

    watch = 0.5
    looks: list[str] = []
    with conveyor.Queue(url, workers=8, allow_modules=[sqlite_jobs.__name__]) as q:
        assert q.put(sqlite_jobs.identity, args=(1,)).result(timeout=30) == 1  # slots are up
        q.backend._db.set_trace_callback(looks.append)
        since = q.backend.version()
        assert q.backend.wait(since, watch) == since  # nothing changes meanwhile
        q.backend._db.set_trace_callback(None)
    polls = sum("data_version" in statement for statement in looks)
    one_poller = watch / POLL_INTERVAL  # (fewer on a loaded machine, never more)
    assert polls < 2.5 * one_poller, f"{polls} looks in {watch} s"
