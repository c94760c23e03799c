"""No slot ever dies: an unexpected error in a slot's loop (a claim that raises because the
database is full, a wait longer than a lock or poll() accepts) is logged, and the slot goes
on. The full databases here are real: a SQLite file at its ``max_page_count``, and a tmpfs
filled to the last byte (as root; skipped elsewhere)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

import conveyor
from conveyor import JobFailed
from conveyor.job import JobOptions
from conveyor.records import Call, JobSpec
from tests.faults import fill_disk
from tests.polling import wait_until

WAIT = 10  # seconds a test waits for something that should happen soon (forks included)
JOBS = 40  # jobs waiting while the database is full


# ------------------------------------------------------------------ waits too long to wait
def test_the_watchdog_survives_a_timeout_longer_than_a_lock_can_wait(make_queue):
    # given a thread queue running a job with a timeout of 10**12 seconds (beyond
    # threading.TIMEOUT_MAX): the watchdog's next deadline, once no earlier one is due. put
    # refuses such a timeout, so the job goes straight to the backend, as a job written
    # into a shared store by hand would
    q = make_queue(workers=2)
    gate, started = threading.Event(), threading.Event()

    def hold() -> str:
        started.set()
        gate.wait(WAIT)
        return "held"

    try:
        spec = JobSpec(
            "held", "hold", "thread", JobOptions(timeout=10**12), payload=Call(hold, (), {})
        )
        q.embedded.start()  # no put starts the queue's workers: start them
        q.backend.submit([spec])
        held = conveyor.Job(q, "held")
        assert started.wait(WAIT)
        # when later jobs, one after another, pass their timeout of 0.2 s
        for _ in range(3):
            stuck = q.put(gate.wait, args=(WAIT,), timeout=0.2)
            # then the watchdog, still alive, stops each of them
            with pytest.raises(JobFailed) as failure:
                stuck.result(timeout=WAIT)
            assert failure.value.error_type == "TimeoutError"
        assert held.status is conveyor.Status.RUNNING
    finally:
        gate.set()
    assert held.result(timeout=WAIT) == "held"


def test_a_process_job_with_a_thirty_day_timeout_runs_and_its_slot_goes_on(make_queue):
    # given a process queue with one worker process
    q = make_queue(workers=1, mode="process")
    # when a job has a timeout longer than poll() can wait in one call
    job = q.put(os.getpid, timeout=30 * 86400)
    # then it runs, and so do the jobs after it, in the same worker process
    pid = job.result(timeout=WAIT)
    assert pid != os.getpid()
    assert q.put(os.getpid).result(timeout=WAIT) == pid
    q.close(wait=True)


# ------------------------------------------------------------------------ a full database
def rendezvous(folder: str) -> str:
    """Mark this slot (process and thread) and wait until two slots have marked: a job fails
    unless two slots of the worker take jobs."""
    mark = f"{os.getpid()}-{threading.get_ident()}"
    (Path(folder) / mark).touch()
    deadline = time.monotonic() + WAIT
    while len(os.listdir(folder)) < 2:
        if time.monotonic() > deadline:
            raise RuntimeError("only one slot took jobs")
        time.sleep(0.005)
    return mark


async def answer(n: int) -> int:
    await asyncio.sleep(0)
    return n


def put_jobs(q: conveyor.Queue, mode: str, folder: Path) -> list[conveyor.Job]:
    """JOBS jobs, each in an exclusive group of its own with a long name: starting one stores
    the group's name in a new row that needs a new page of the database."""
    if mode == "async":
        task = q.task(name="answer")(answer)
        args = [(n,) for n in range(JOBS)]
    else:
        task = q.task(name="rendezvous")(rendezvous)
        args = [(str(folder),)] * JOBS
    return [
        task.put(args=args[n], exclusive=[f"group-{n}-" + "x" * 2000], id=f"job-{n:02d}")
        for n in range(JOBS)
    ]


def fill_to_max_page_count(db: sqlite3.Connection) -> None:
    """Make the database full for this connection: no page free and none to add (the filler
    holds the room that deleting it frees: enough pages to start every job)."""
    db.execute("CREATE TABLE filler (x BLOB)")
    pages = db.execute("PRAGMA page_count").fetchone()["page_count"]
    db.execute(f"PRAGMA max_page_count = {pages + 10 * JOBS}")
    for size in (4000, 400, 40):
        with contextlib.suppress(sqlite3.OperationalError):
            while True:
                db.execute("INSERT INTO filler VALUES (randomblob(?))", (size,))
    assert db.execute("PRAGMA freelist_count").fetchone()["freelist_count"] == 0


def disk_full(exc: BaseException | None) -> bool:
    """True if ``exc``, or an exception it was raised in handling, says the disk is full."""
    while exc is not None:
        if "database or disk is full" in str(exc):
            return True
        exc = exc.__context__
    return False


def slot_errors(caplog: pytest.LogCaptureFixture) -> set[str]:
    """The threads that logged the disk being full: a slot's loop (conveyor.executors) or the
    worker's claim it called, which logs and retries (conveyor.worker)."""
    return {
        r.threadName
        for r in caplog.records
        if r.name.startswith(("conveyor.executors", "conveyor.worker"))
        and r.levelno >= logging.WARNING
        and (
            "database or disk is full" in r.getMessage()
            or (r.exc_info is not None and disk_full(r.exc_info[1]))
        )
    }


def assert_every_job_ran_once(q: conveyor.Queue, mode: str, handles: list[conveyor.Job]) -> None:
    results = [h.result(timeout=30) for h in handles]
    if mode == "async":
        assert results == list(range(JOBS))
    else:
        assert len(set(results)) == 2  # the jobs ran in both slots
    records = q.jobs()
    assert sorted(r.id for r in records) == [h.id for h in handles]
    assert all(r.status == "finished" and r.attempts == 1 for r in records)


@pytest.mark.parametrize("mode", ["thread", "process", "async"])
def test_slots_survive_a_database_full_at_claim_and_run_every_job_once_space_is_freed(
    tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="conveyor")
    folder = tmp_path / "marks"
    folder.mkdir()
    # given a SQLite queue with two slots, and JOBS jobs put while the slots cannot claim
    # (the backend's lock is held), after which the database is made full
    q = conveyor.Queue(f"sqlite:///{tmp_path}/q.db", workers=2, mode=mode)
    db = q.backend._db  # type: ignore[attr-defined]
    try:
        with q.backend._lock:  # type: ignore[attr-defined]
            handles = put_jobs(q, mode, folder)
            fill_to_max_page_count(db)
        # when every claim fails with "database or disk is full"
        expected = 1 if mode == "async" else 2  # the async executor claims from one loop
        assert wait_until(lambda: len(slot_errors(caplog)) >= expected), caplog.text
        # and then space is freed
        with q.backend._lock:  # type: ignore[attr-defined]
            db.execute("DELETE FROM filler")
        # then the slots, still alive, run every job exactly once
        assert_every_job_ran_once(q, mode, handles)
    finally:
        q.close(wait=False)


def test_thread_slots_survive_a_disk_full_at_commit_and_run_every_job_once_space_is_freed(
    tmp_path: Path, small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="conveyor")
    folder = tmp_path / "marks"
    folder.mkdir()
    # given a SQLite queue on a small disk with two thread slots, and JOBS jobs put while
    # the slots cannot claim; the write-ahead log is emptied, so the next commit must grow it
    q = conveyor.Queue(f"sqlite:///{small_disk}/q.db", workers=2)
    db = q.backend._db  # type: ignore[attr-defined]
    try:
        with q.backend._lock:  # type: ignore[attr-defined]
            handles = put_jobs(q, "thread", folder)
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            filler = fill_disk(small_disk)
        # when every claim's COMMIT fails: the disk is full
        assert wait_until(lambda: len(slot_errors(caplog)) >= 2), caplog.text
        # and then space is freed
        filler.unlink()
        # then the slots, still alive, run every job exactly once
        assert_every_job_ran_once(q, "thread", handles)
    finally:
        q.close(wait=False)
