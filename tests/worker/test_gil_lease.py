"""Leases under a blocked GIL: no job runs twice while the worker that runs it lives.

A thread-mode job that holds the GIL in one C call longer than the lease starves its worker's
heartbeat. On SQLite, a lease that ran out is not taken back while its owner is alive on this
host (its pid runs, and is the same process: its start time is recorded in the worker
registry) and silent since; a lease of a worker that died, that left the registry, that lives
on another host, or that beats without renewing the job, is judged by time.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import conveyor
from conveyor.records import WorkerInfo
from conveyor.testing import ManualClock
from tests.worker.real_workers import app, runs, wait_until

TASKS = """
@q.task()
def hog(folder, name, n):
    '''Hold the GIL in one C call (a sum over a range) for as long as ``n`` makes it.'''
    mark(folder, name, "start")
    sum(range(n))
    mark(folder, name, "end")
    return name


@q.task()
def hold(folder, name, flag):
    '''Run until ``flag`` exists (sleeping: the GIL is free).'''
    mark(folder, name, "start")
    while not os.path.exists(flag):
        time.sleep(0.01)
    return name
"""


def gil_held_for(seconds: float) -> int:
    """The ``n`` for which ``sum(range(n))`` holds the GIL about ``seconds`` here."""
    n = 10**7
    took = min(_timed_sum(n) for _ in range(3))
    return int(n * seconds / took)


def _timed_sum(n: int) -> float:
    start = time.perf_counter()
    sum(range(n))
    return time.perf_counter() - start


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_job_holding_the_gil_past_the_lease_runs_once_and_a_killed_workers_job_returns(
    tmp_path: Path,
) -> None:
    with app(tmp_path, TASKS, lease=1.5) as a:
        q, tasks, marks = a.module.q, a.module, str(a.marks)  # type: ignore[union-attr]
        workers = [a.worker("--workers", "1"), a.worker("--workers", "1")]
        wait_until(lambda: len(q.backend.workers()) == 2, 30, "both workers registered")
        # a job that holds its worker's GIL for about 4 s, more than twice the lease
        job = tasks.hog.put(args=(marks, "hog", gil_held_for(4.0)), id="hog")
        # while the other worker recovers expired leases every half second
        assert job.result(timeout=120) == "hog"
        # then it ran once, in one worker, and finished on its first attempt
        ((pid, ended),) = runs(a.marks, "hog")
        assert ended and pid in {w.pid for w in workers}
        assert q.job("hog").attempts == 1

        # and a job whose worker is killed still comes back after the lease, on the other
        flag = tmp_path / "go"
        held = tasks.hold.put(args=(marks, "held", str(flag)), id="held")
        wait_until(lambda: runs(a.marks, "held"), 30, "the held job started")
        ((victim_pid, _),) = runs(a.marks, "held")
        victim = next(w for w in workers if w.pid == victim_pid)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        flag.touch()
        assert held.result(timeout=30) == "held"
        survivor = next(w for w in workers if w is not victim)
        assert sorted(pid for pid, _ in runs(a.marks, "held")) == sorted([victim.pid, survivor.pid])
        assert q.job("held").attempts == 2


# -------------------------------------------------------- whose expired lease is kept
LEASE = 10.0


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/queue.db"


@pytest.fixture
def owners(url: str, clock: ManualClock) -> Iterator[conveyor.Queue]:
    """The queue through which the test registers workers and claims for them."""
    q = conveyor.Queue(url, workers=0, clock=clock, lease=LEASE)
    q.task(name="double")(_double)
    yield q
    q.close()


@pytest.fixture
def other(url: str, clock: ManualClock) -> Iterator[conveyor.Queue]:
    """Another connection to the file, as another worker process recovering leases."""
    q = conveyor.Queue(url, workers=0, clock=clock, lease=LEASE)
    yield q
    q.close()


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes that stand for worker processes; killed at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def _double(n: int) -> int:
    return 2 * n


def _sleeper(started: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    started.append(proc)
    return proc


def _claim_for(q: conveyor.Queue, clock: ManualClock, owner: str, host: str, pid: int) -> str:
    """Register worker ``owner`` and claim one new job for it; return the job's id."""
    now = clock.now()
    q.backend.register_worker(WorkerInfo(owner, host, pid, "thread", 1, now, now))
    q.put(_double, args=(1,), id=f"job-of-{owner}")
    (claimed,) = q.backend.claim(f"{owner}/slot-1", "thread", 1)
    return claimed.id


def test_an_expired_lease_is_kept_only_while_its_owner_lives_here_and_is_silent(
    owners, other, clock, url, sleepers
):
    here = socket.gethostname()
    me = os.getpid()
    killed, zombie, reused = _sleeper(sleepers), _sleeper(sleepers), _sleeper(sleepers)
    jobs = {
        "alive": _claim_for(owners, clock, "alive", here, me),
        "beats-without-it": _claim_for(owners, clock, "beats-without-it", here, me),
        "elsewhere": _claim_for(owners, clock, "elsewhere", "another-host", me),
        "unregistered": _claim_for(owners, clock, "unregistered", here, me),
        "killed": _claim_for(owners, clock, "killed", here, killed.pid),
        "zombie": _claim_for(owners, clock, "zombie", here, zombie.pid),
        "pid-reused": _claim_for(owners, clock, "pid-reused", here, reused.pid),
    }
    # when every lease runs out while each owner is silent, and another worker recovers them
    clock.advance(LEASE + 1)
    # then only the job of the owner on another host is taken back: that lease is judged by time
    assert other.backend.recover_expired() == 1
    assert owners.status(jobs["elsewhere"]) == "waiting"
    assert all(owners.status(job_id) == "running" for o, job_id in jobs.items() if o != "elsewhere")
    # then: one owner beats without its job (it gave it up), one left the registry, one was
    # killed (and reaped), one was killed and not reaped yet, and one is now another process
    # that got the recorded pid (the registry's start time differs)
    owners.backend.heartbeat("beats-without-it", [])
    owners.backend.unregister_worker("unregistered")
    killed.kill()
    killed.wait()
    zombie.kill()
    wait_until(lambda: _state(zombie.pid) == "Z", 10, "the killed process became a zombie")
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE workers SET proc_start = 'an-earlier-boot:1' WHERE id = 'pid-reused'")
    # when another worker recovers expired leases again
    recovered = other.backend.recover_expired()
    # then only the live, silent owner on this host keeps its job
    assert recovered == len(jobs) - 2
    assert owners.status(jobs["alive"]) == "running"
    for owner, job_id in jobs.items():
        if owner != "alive":
            record = owners.job(job_id)
            assert (record.status, record.attempts) == ("waiting", 1), owner
            assert (record.error or "").startswith("WorkerLost"), owner
    # and its registry entry is kept however long it stays silent; the dead ones' go
    clock.advance(3 * LEASE + 1)
    assert other.backend.recover_expired() == 0
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        left = {row[0] for row in db.execute("SELECT id FROM workers")}
    assert "alive" in left and not left & {"killed", "zombie", "pid-reused", "elsewhere"}


def _state(pid: int) -> str:
    """The state letter of process ``pid`` (Linux), e.g. R, S or Z."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return stat.rpartition(")")[2].split()[0]


@pytest.mark.skipif(sqlite3.sqlite_version_info < (3, 35), reason="needs DROP COLUMN")
def test_a_file_from_before_the_registry_knew_start_times_is_brought_up_to_date(url, clock, other):
    # given a file whose tables lack the columns added since (dropped here, as it was made)
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        for table, column in (("jobs", "ahead"), ("jobs", "lost"), ("workers", "proc_start")):
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    # when a queue opens it, registers a live worker and claims for it
    q = conveyor.Queue(url, workers=0, clock=clock, lease=LEASE)
    try:
        q.task(name="double")(_double)
        job_id = _claim_for(q, clock, "alive", socket.gethostname(), os.getpid())
        clock.advance(LEASE + 1)
        # then the columns are back, and the live owner keeps its expired lease
        assert other.backend.recover_expired() == 0
        assert q.status(job_id) == "running"
    finally:
        q.close()
    with sqlite3.connect(path) as db:
        columns = {
            table: {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            for table in ("jobs", "workers")
        }
    assert {"ahead", "lost"} <= columns["jobs"] and "proc_start" in columns["workers"]
