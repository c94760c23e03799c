"""No silent traps in ``conveyor worker`` and ``conveyor status``: a ``--mode`` that the app puts
no job in still runs its jobs (in that mode), a burst worker recovers expired leases and waits
for jobs that may come back (and never ends while one of its slots is claiming), status judges
each worker by its own lease and shows the lost ones, SIGTERM is answered as SIGTERM, and an
in-memory app is refused. Real ``python -m conveyor`` processes on SQLite files."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import conveyor
from conveyor import Status
from conveyor.runner import run_worker
from tests import jobs
from tests.worker.real_workers import App, app, runs, wait_until

WAIT = 30.0

TASKS = """
@q.task(name="where")
def where(folder):
    # which process ran the job, and its parent
    Path(folder, f"where.{os.getpid()}.{os.getppid()}").touch()
    return os.getpid()


@q.task(name="hang_once")
def hang_once(folder):
    # the first run hangs (its worker is killed); a later run returns at once
    first = not list(Path(folder).glob("hang_once.*.start"))
    mark(folder, "hang_once", "start")
    if first:
        time.sleep(60)
    mark(folder, "hang_once", "end")
    return "done"


@q.task(name="slow")
def slow(folder, seconds):
    mark(folder, "slow", "start")
    time.sleep(seconds)
    return "slow"
"""


@pytest.fixture
def made(tmp_path: Path) -> Iterator[App]:
    with app(tmp_path, TASKS) as made:
        yield made


def command(made: App, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m conveyor *args`` to its end in the app's folder."""
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        cwd=made.folder,
        env=made.env(**settings),
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
        check=False,
    )


def lease_until(db: Path, job_id: str) -> float | None:
    with sqlite3.connect(db) as raw:
        row = raw.execute("SELECT lease_until FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else row[0]


# ------------------------------------------------------------------------ --mode
def test_mode_process_runs_a_thread_apps_jobs_in_worker_processes(made: App) -> None:
    # given a thread app (no task of it is put in process mode) and two of its jobs
    tasks = made.module
    assert tasks.q.mode == "thread"  # type: ignore[union-attr]
    put = [tasks.where.enqueue(str(made.marks)) for _ in range(2)]  # type: ignore[union-attr]

    # when a process burst worker runs
    done = command(made, "worker", made.spec, "--mode", "process", "--burst", "-w", "1")

    # then it ran both jobs, in a process of its own (a child of the worker's forkserver)
    assert done.returncode == 0, done.stderr
    (job_pid,) = {job.result(timeout=0) for job in put}
    assert [mark.name for mark in made.marks.glob("where.*")] != []
    assert f":{job_pid}:process-" not in done.stderr  # the worker's id names its own pid
    assert job_pid != os.getpid() and "process-1 started" in done.stderr
    assert "1 process slot(s) for the queue's thread-mode jobs" in done.stderr
    assert done.stdout.strip() == "2 finished, 0 failed, 0 retried, 0 cancelled, 0 put back"


# ------------------------------------------------------------------------- burst
def start_and_kill(made: App, job_id: str) -> None:
    """Start a worker with a 1 s lease, let it take ``hang_once``, and SIGKILL it."""
    worker = made.worker("-w", "1", lease="1")
    wait_until(lambda: runs(made.marks, "hang_once"), WAIT, "the job started")
    worker.kill()
    worker.wait(WAIT)
    assert made.module.q.status(job_id) == Status.RUNNING  # type: ignore[union-attr]


def test_burst_recovers_an_expired_lease_before_deciding_there_is_nothing_to_do(
    made: App,
) -> None:
    # given a job whose worker was killed and whose lease has run out
    job = made.module.hang_once.enqueue(str(made.marks))  # type: ignore[union-attr]
    start_and_kill(made, job.id)
    db = made.folder / "queue.db"
    wait_until(lambda: (lease_until(db, job.id) or 0) < time.time(), WAIT, "the lease ran out")

    # when a burst worker starts
    done = command(made, "worker", made.spec, "--burst", "-w", "1")

    # then it took the job back, ran it to its end, and said so
    assert done.returncode == 0, done.stderr
    assert job.result(timeout=0) == "done"
    assert [ended for _pid, ended in runs(made.marks, "hang_once")].count(True) == 1
    assert f"job {job.id} (task hang_once, attempt 1) recovered" in done.stderr
    assert done.stdout.strip() == "1 finished, 0 failed, 0 retried, 0 cancelled, 0 put back"


def test_burst_waits_for_a_job_that_another_worker_holds_and_may_come_back(made: App) -> None:
    # given a job held by a worker that was just killed (its lease of 1 s still running)
    job = made.module.hang_once.enqueue(str(made.marks))  # type: ignore[union-attr]
    start_and_kill(made, job.id)

    # when a burst worker starts at once
    done = command(made, "worker", made.spec, "--burst", "-w", "2")

    # then it did not exit while the job could come back: it ran it once its lease ran out
    assert done.returncode == 0, done.stderr
    assert job.result(timeout=0) == "done"
    assert "recovered" in done.stderr


def test_burst_waits_while_another_live_worker_runs_a_job(made: App) -> None:
    # given a job running in another (live) worker
    job = made.module.slow.enqueue(str(made.marks), 3.0)  # type: ignore[union-attr]
    other = made.worker("-w", "1")
    wait_until(lambda: runs(made.marks, "slow"), WAIT, "the job started")

    # when a burst worker starts while it runs
    done = command(made, "worker", made.spec, "--burst", "-w", "1")

    # then it ended only once that job had ended (it could have failed and come back)
    assert done.returncode == 0, done.stderr
    assert made.module.q.status(job.id) == Status.FINISHED  # type: ignore[union-attr]
    other.send_signal(signal.SIGTERM)
    assert other.wait(WAIT) == 0


def test_a_two_slot_burst_worker_never_leaves_its_single_job_behind(tmp_path: Path) -> None:
    # one slot claims the job while the other finds nothing: the burst must not end before
    # the claim is tracked (a race: many rounds)
    q = conveyor.Queue(f"sqlite:///{tmp_path / 'q.db'}", workers=0, allow_modules=[jobs.__name__])
    try:
        left = []
        for n in range(200):
            job = q.put(jobs.double, args=(n,), id=f"j{n}")
            run_worker(q, workers=2, burst=True, handle_signals=False)
            if q.status(job.id) != Status.FINISHED:
                left.append(job.id)
        assert left == []
    finally:
        q.close()


# ------------------------------------------------------------------------ status
def status_rows(text: str) -> dict[str, list[str]]:
    """The workers table of ``conveyor status``: id -> its other cells."""
    lines = text.split("\nworkers (", 1)[1].splitlines()[2:]
    return {line.split()[0]: line.split()[1:] for line in lines if line.strip()[:1] not in "("}


def test_status_judges_each_worker_by_its_own_lease_and_shows_the_lost_ones(
    made: App,
) -> None:
    # given a worker with a lease of 3 s that was killed, and a live one with a lease of 60 s
    # (the live one drops the killed one from the registry 3 of its leases after its last
    # beat: 5 s or more after its lease ran out, time enough for a slow `status` to start)
    q = made.module.q  # type: ignore[union-attr]
    short = made.worker("-w", "1", lease="3")
    live = made.worker("-w", "1", lease="60")
    wait_until(lambda: len(q.backend.workers()) == 2, WAIT, "both workers registered")
    names = {short.pid: "short", live.pid: "live"}
    short.kill()
    short.wait(WAIT)
    killed = time.time()
    wait_until(lambda: time.time() - killed > 3.5, WAIT, "the short lease ran out")

    # when status is asked by a viewer whose own lease is 60 s
    done = command(made, "status", made.spec, lease="60")

    # then the killed worker shows as lost (by its own lease), the live one as alive
    assert done.returncode == 0, done.stderr
    rows = status_rows(done.stdout)
    states = {names[int(cells[1])]: cells[-1] for cells in rows.values()}
    assert states == {"short": "lost", "live": "alive"}
    assert "workers (1 alive, 1 lost)" in done.stdout
    live.send_signal(signal.SIGTERM)
    assert live.wait(WAIT) == 0


def test_status_reads_a_worker_registry_made_before_workers_recorded_their_lease(
    made: App,
) -> None:
    # given a queue file whose workers table has no lease column, with a worker in it
    db = made.folder / "queue.db"
    with sqlite3.connect(db) as raw:
        raw.execute("ALTER TABLE workers DROP COLUMN lease")
        now = time.time()
        raw.execute(
            "INSERT INTO workers (id, host, pid, mode, slots, started, last_seen)"
            " VALUES ('old-worker', 'elsewhere', 1, 'thread', 1, ?, ?)",
            (now - 100, now - 10),
        )
    # when status opens it (with a lease of 5 s for workers that recorded none)
    done = command(made, "status", made.spec, lease="5")
    # then the column is added, and the old worker judged by that lease
    assert done.returncode == 0, done.stderr
    assert status_rows(done.stdout)["old-worker"][-1] == "lost"
    with sqlite3.connect(db) as raw:
        columns = {row[1] for row in raw.execute("PRAGMA table_info(workers)")}
    assert "lease" in columns


# ----------------------------------------------------------------------- signals
def test_sigterm_is_answered_as_sigterm(made: App) -> None:
    job = made.module.slow.enqueue(str(made.marks), 0.5)  # type: ignore[union-attr]
    worker = made.worker("-w", "1")
    wait_until(lambda: runs(made.marks, "slow"), WAIT, "the job started")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(WAIT) == 0
    log = made.log(0)
    (line,) = [line for line in log.splitlines() if "stopping;" in line]
    assert "SIGTERM" in line
    assert "SIGINT" not in line and "Ctrl-C" not in line
    assert made.module.q.status(job.id) == Status.FINISHED  # type: ignore[union-attr]


# ------------------------------------------------------------------- memory://
def test_an_in_memory_app_is_refused_by_the_worker_command(tmp_path: Path) -> None:
    (tmp_path / "memapp.py").write_text("import conveyor\n\nq = conveyor.Queue(workers=0)\n")
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "worker", "memapp:q", "--burst"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 2
    assert "memapp:q is a memory:// queue" in done.stderr
    assert "sqlite:///" in done.stderr
    assert done.stdout == ""
