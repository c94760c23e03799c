"""Batching (``prefetch``) is honest about what it claims and what it holds back.

- A job claimed ahead that no slot started spends no attempt when its worker dies: a SIGKILLed
  batching worker's jobs at hand come back with their attempt not counted, and a job that
  fails once and has one retry still gets it.
- A job claimed ahead that a slot started counts its attempt once the backend is told (with
  the worker's next backend call), and every loss of a lease counts, so a job that keeps
  killing its worker is failed in the end.
- A report held back is written within ``REPORT_DELAY`` of the job's end, not a heartbeat
  later (a job that ended runs again only if its worker dies within that window).
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

import conveyor
from conveyor.backends.sqlite import LOST_LEASE_ALLOWANCE
from conveyor.executors import build
from conveyor.testing import ManualClock
from conveyor.worker import Worker
from tests.worker.real_workers import app, runs, wait_until

WAIT = 30  # seconds a test waits for what should happen at once

TASKS = """
@q.task()
def quick(folder, name):
    mark(folder, name, "start")
    return name


@q.task()
def hold(folder, name, flag):
    '''Run until ``flag`` exists.'''
    mark(folder, name, "start")
    while not os.path.exists(flag):
        time.sleep(0.01)
    return name


@q.task(retries=1)
def flaky(folder, name):
    '''Fail the first time it runs, succeed the second (it has one retry).'''
    first = not list(Path(folder).glob(f"{name}.*.start"))
    mark(folder, name, "start")
    if first:
        raise RuntimeError("the first run of a flaky job fails")
    return name
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_jobs_claimed_ahead_by_a_killed_worker_come_back_with_no_attempt_spent(
    tmp_path: Path,
) -> None:
    with app(tmp_path, TASKS, lease=1.0) as a:
        q, tasks, marks = a.module.q, a.module, str(a.marks)  # type: ignore[union-attr]
        worker = a.worker("--workers", "1")  # batching: prefetch 8 by default
        # warm up: short jobs, so that the worker claims ahead from now on
        warm = [tasks.quick.put(args=(marks, f"w{n}")) for n in range(10)]
        assert [job.result(timeout=WAIT) for job in warm] == [f"w{n}" for n in range(10)]
        # then, due at one instant: a quick job (its slot's next claim), a job that holds its
        # slot, and flaky jobs behind it (claimed ahead with it)
        at = time.time() + 0.5
        tasks.quick.put(args=(marks, "first"), id="first", at=at)
        tasks.hold.put(args=(marks, "held", str(tmp_path / "go")), id="held", at=at)
        flaky = [tasks.flaky.put(args=(marks, f"f{n}"), id=f"f{n}", at=at).id for n in range(12)]
        wait_until(lambda: runs(a.marks, "held"), WAIT, "the holding job started")
        # the jobs claimed ahead: its other running jobs, none of which started
        ahead = [r.id for r in q.jobs("running") if not runs(a.marks, r.id)]
        assert ahead, "nothing was claimed ahead: the test proves nothing"
        # when the worker is killed while its slot runs the held job
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        wait_until(lambda: q.backend.recover_expired(), WAIT, "the leases running out")
        # then the jobs it claimed ahead come back with no attempt spent
        for job_id in ahead:
            record = q.job(job_id)
            assert (record.status, record.attempts) == ("waiting", 0), record
            assert "never started" in (record.error or "")
        held = q.job("held")
        assert (held.status, held.attempts) == ("waiting", 1)  # it ran: its attempt counts
        # and a new worker runs every job: each flaky one fails once and gets its retry
        (tmp_path / "go").touch()
        second = a.worker("--workers", "1")
        wait_until(lambda: q.size("finished") == 10 + 2 + len(flaky), WAIT, "all finished")
        for job_id in flaky:
            record = q.job(job_id)
            assert (record.status, record.attempts) == ("finished", 2), record
            assert [pid for pid, _ in runs(a.marks, job_id)] == [second.pid]
        assert q.job("held").attempts == 2


# ------------------------------------------------------------------ the accounting
@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/queue.db"


@pytest.fixture
def queue(url: str, clock: ManualClock) -> conveyor.Queue:
    q = conveyor.Queue(url, workers=0, clock=clock, lease=10)
    q.task(name="double")(_double)
    yield q  # type: ignore[misc]
    q.close()


def _double(n: int) -> int:
    return 2 * n


def test_a_started_job_claimed_ahead_counts_once_the_backend_is_told(queue, clock):
    # given a batching worker (never started: the test drives it as its slot would) that has
    # claimed ahead, and has given one job claimed ahead to its slot
    for n in range(6):
        queue.put(_double, args=(n,), id=f"j{n}")
    worker = Worker(
        queue.backend, build("thread", 1), clock=clock, lease=10, prefetch=3, codec=queue.codec
    )
    (first,) = worker.claim(1)
    (second,) = worker.finished(first, 2 * 0, claim_next=1)  # j1 for the slot, j2-j4 ahead
    (third,) = worker.finished(second, 2 * 1, claim_next=1)  # j2 taken from at hand
    assert (third.id, [j.id for j in worker._claims.at_hand]) == ("j2", ["j3", "j4"])
    # when its next backend call (here the beat) tells that j2 started, and the worker dies
    worker.beat()
    clock.advance(11)
    # then, once the lease ran out, j2's attempt counts, those never started do not
    assert queue.backend.recover_expired() == 3
    attempts = {job: queue.job(job).attempts for job in ("j2", "j3", "j4")}
    assert attempts == {"j2": 1, "j3": 0, "j4": 0}
    assert [queue.status(job) for job in ("j2", "j3", "j4")] == ["waiting"] * 3


def test_a_job_lost_again_and_again_is_failed_even_when_never_started(queue, clock):
    # given a job behind another, claimed ahead (never started) by workers that keep dying
    queue.put(_double, args=(0,), id="front", retries=100)
    queue.put(_double, args=(1,), id="behind")
    bound = 0 + LOST_LEASE_ALLOWANCE  # its retries (0) plus the allowance
    for loss in range(1, bound + 2):
        claimed = queue.backend.report(
            [], worker=f"dead-{loss}/slot", mode="thread", claim=2, ahead=1
        ).claimed
        assert [job.id for job in claimed] == ["front", "behind"]
        clock.advance(11)
        assert queue.backend.recover_expired() == 2
        record = queue.job("behind")
        if loss <= bound:  # each loss gives its attempt back, and counts
            assert (record.status, record.attempts) == ("waiting", 0)
    # then the loss past the allowance fails it
    assert (record.status, record.attempts) == ("failed", 0)
    assert record.error.startswith("WorkerLost")


# ------------------------------------------------------------------- held-back reports
GATE = threading.Event()
B_STARTED = threading.Event()


def _after_a_beat(path: str) -> str:
    """Return just after the worker's next heartbeat (its ``last_seen`` changes)."""
    db = sqlite3.connect(path)
    try:
        seen = db.execute("SELECT max(last_seen) FROM workers").fetchone()
        deadline = time.monotonic() + 10
        while db.execute("SELECT max(last_seen) FROM workers").fetchone() == seen:
            if time.monotonic() > deadline:
                raise TimeoutError("no heartbeat in 10 s")
            time.sleep(0.002)
    finally:
        db.close()
    return "a"


def _blocked() -> str:
    B_STARTED.set()
    if not GATE.wait(WAIT):
        raise TimeoutError("the gate stayed shut")
    return "b"


@pytest.mark.slow
def test_a_report_held_back_is_written_within_the_report_delay(tmp_path: Path) -> None:
    GATE.clear()
    B_STARTED.clear()
    path = tmp_path / "queue.db"
    q = conveyor.Queue(f"sqlite:///{path}", workers=1, prefetch=4)  # beats every second
    try:
        for fn in (_double, _after_a_beat, _blocked):
            q.task()(fn)
        # due at one instant: a short job (then the worker claims 1 + 4), "a" which ends just
        # after a heartbeat, "b" (claimed ahead with it) which runs until the gate opens
        at = time.time() + 0.3
        q.put(_double, args=(1,), id="warm", at=at)
        q.put(_after_a_beat, args=(str(path),), id="a", at=at)
        q.put(_blocked, id="b", at=at)
        for n in range(3):
            q.put(_double, args=(n,), id=f"later{n}", at=at)
        # when "a" has ended and its slot runs "b" (so "a"'s report was held back)
        assert B_STARTED.wait(WAIT)
        ended = time.monotonic()
        # then "a"'s report is written well before the next heartbeat, a second later
        limit = 0.5  # REPORT_DELAY (0.05 s), with slack for a loaded machine; a beat: 1 s
        while q.status("a") != "finished" and time.monotonic() - ended < limit:
            time.sleep(0.005)
        assert q.status("a") == "finished"
        assert q.status("b") == "running"
    finally:
        GATE.set()
        q.close()
