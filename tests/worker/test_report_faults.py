"""A report or a claim the backend cannot write (a database that is really full) never ends
a slot nor leaves its job running forever: the report is kept and retried, and lands once there
is room; a claim is retried; a worker whose reports keep failing for a lease gives up, stops
heartbeating and exits with status 1, and its job goes back to the queue.

The database is made full for the worker process alone: a job sets SQLite's
``max_page_count`` on the worker's own connection to the pages the file has, so that any write
needing a new page fails with SQLITE_FULL ("database or disk is full"), and lifts the limit
once the test creates a flag file. The job's result (20 kB) needs new pages; renewing a lease
does not. Where the tests run as root, a small tmpfs holding the database is also filled up
for real, so that every write fails at COMMIT, claims and heartbeats included.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import conveyor
from tests.faults import fill_disk
from tests.worker.real_workers import app, runs, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TASKS = """
import threading

BIG = "x" * 20_000


def full_until(flag):
    '''Let this worker's connection add no page to the database until ``flag`` exists.'''
    backend = q.backend

    def limit(pages):
        with backend._lock:
            backend._db.execute(f"PRAGMA max_page_count = {pages}")

    with backend._lock:
        pages = backend._db.execute("PRAGMA page_count").fetchone()["page_count"]
    limit(pages)

    def free():
        while not os.path.exists(flag):
            time.sleep(0.01)
        limit(2**32)

    threading.Thread(target=free, daemon=True).start()


@q.task()
def big(folder, name, flag):
    '''Fill the database (unless ``flag`` exists), then return a result that needs room.'''
    mark(folder, name, "start")
    if not os.path.exists(flag):
        full_until(flag)
    mark(folder, name, "end")
    return BIG


@q.task()
def small(folder, name):
    mark(folder, name, "start")
    return name
"""

FULL = "database or disk is full"


@pytest.mark.parametrize("prefetch", ["0", "8"])
def test_a_report_written_once_there_is_room_again_and_the_slot_goes_on(
    tmp_path: Path, prefetch: str
) -> None:
    with app(tmp_path, TASKS, lease=10.0) as a:
        q, tasks = a.module.q, a.module  # type: ignore[union-attr]
        flag = tmp_path / "room-again"
        job = tasks.big.put(args=(str(a.marks), "big", str(flag)), id="big")
        # a worker with one slot runs the job; the write of its report fails
        worker = a.worker("--workers", "1", prefetch=prefetch)
        wait_until(lambda: FULL in a.log(0), 30, "the report's write failing")
        assert job.status == "running"  # still the worker's: its report is on its way
        # when there is room again
        flag.touch()
        # then the report lands: the job ran once and finished with its result
        assert job.result(timeout=30) == tasks.BIG
        assert runs(a.marks, "big") == [(worker.pid, True)]
        assert q.job("big").attempts == 1
        # and the slot that wrote it goes on running jobs
        after = tasks.small.put(args=(str(a.marks), "after"), id="after")
        assert after.result(timeout=30) == "after"
        assert worker.poll() is None
        worker.terminate()
        assert worker.wait(timeout=30) == 0


def test_a_worker_whose_reports_keep_failing_gives_up_and_its_job_runs_elsewhere(
    tmp_path: Path,
) -> None:
    with app(tmp_path, TASKS, lease=1.0) as a:
        q, tasks = a.module.q, a.module  # type: ignore[union-attr]
        flag = tmp_path / "room-again"
        job = tasks.big.put(args=(str(a.marks), "big", str(flag)), id="big")
        # a worker whose database stays full: the job's report can never be written
        first = a.worker("--workers", "1")
        # then it gives up after a lease: it exits with status 1, saying why
        assert first.wait(timeout=60) == 1
        assert FULL in a.log(0) and "gives up" in a.log(0)
        # it is no longer listed as a live worker
        assert "workers (0)" in a.status()
        # and its job goes back to the queue once its lease runs out: a new worker (whose
        # database has room) runs it again, the lost attempt counted
        flag.touch()
        second = a.worker("--workers", "1")
        assert job.result(timeout=30) == tasks.BIG
        assert sorted(pid for pid, _ in runs(a.marks, "big")) == sorted([first.pid, second.pid])
        record = q.job("big")
        assert (record.attempts, record.worker.split(":")[1]) == (2, str(second.pid))


# ------------------------------------------------------------------ a disk really full
@pytest.mark.parametrize("prefetch", ["0", "8"])
def test_claims_failing_on_a_full_disk_are_retried_and_every_job_runs_once_there_is_room(
    tmp_path: Path, small_disk: Path, prefetch: str
) -> None:
    with app(tmp_path, TASKS, small_disk / "queue.db", lease=10.0) as a:
        q, tasks = a.module.q, a.module  # type: ignore[union-attr]
        worker = a.worker("--workers", "2", prefetch=prefetch)
        wait_until(lambda: q.backend.workers(), 30, "the worker registered")
        # forty jobs due in a moment, and then the disk is full
        at = time.time() + 1.0
        jobs = [tasks.small.put(args=(str(a.marks), f"j{n}"), at=at) for n in range(40)]
        filler = fill_disk(small_disk)
        # when the worker's claims fail at COMMIT (the jobs are due), and the room comes back
        # within a lease
        wait_until(lambda: time.time() > at + 0.5 and FULL in a.log(0), 30, "writes failing")
        filler.unlink()
        # then every job runs, once, in that worker, which goes on
        assert [job.result(timeout=30) for job in jobs] == [f"j{n}" for n in range(40)]
        assert all(runs(a.marks, f"j{n}") == [(worker.pid, False)] for n in range(40))
        assert worker.poll() is None
        worker.terminate()
        assert worker.wait(timeout=30) == 0


# ------------------------------------------------------------- an embedded worker
FULL_ONCE: list[conveyor.Queue] = []  # the queue whose connection the job makes full


def _limit_pages(q: conveyor.Queue, pages: int | None) -> None:
    """Let ``q``'s connection add no page beyond ``pages`` (None: the pages it has)."""
    backend = q.backend
    with backend._lock:  # type: ignore[attr-defined]
        db = backend._db  # type: ignore[attr-defined]
        if pages is None:
            pages = db.execute("PRAGMA page_count").fetchone()["page_count"]
        db.execute(f"PRAGMA max_page_count = {pages}")


def _big_once() -> str:
    """The first time: make the database full for the queue's connection. Then a big result."""
    if FULL_ONCE:
        _limit_pages(FULL_ONCE.pop(), None)
    return "x" * 20_000


def test_an_embedded_worker_gives_a_job_back_when_its_report_cannot_be_written_for_a_lease(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/queue.db"
    q = conveyor.Queue(url, workers=1, lease=1.0, prefetch=0)  # it never gives up
    other = conveyor.Queue(url, workers=0, lease=1.0)  # as another worker process
    try:
        q.task()(_big_once)
        FULL_ONCE[:] = [q]
        job = q.put(_big_once, id="big")
        # when the job's report cannot be written for longer than a lease
        # then the worker stops renewing its lease, and the job goes back to the queue
        # (the worker's own heartbeat may be the one that takes it back, and claim it again)
        wait_until(lambda: (other.job("big").error or "").startswith("WorkerLost"), 30, "back")
        # and once there is room again it runs again and finishes, in that worker
        _limit_pages(q, 2**32)
        assert job.result(timeout=30) == "x" * 20_000
        assert other.job("big").attempts >= 2
    finally:
        FULL_ONCE.clear()
        q.close()
        other.close()
