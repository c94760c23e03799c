"""The command line for real: ``python -m conveyor ...`` processes on a SQLite app written to a
temporary folder, checked through the public API of a queue on the same file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import conveyor
from conveyor import Status

WAIT = 10  # seconds a test waits for something that should happen soon
REPO = Path(__file__).resolve().parents[2]

APP = '''
"""A conveyor app for the CLI tests."""

import os
import time
from pathlib import Path

import conveyor

HERE = Path(__file__).resolve().parent
q = conveyor.Queue("sqlite:///" + str(HERE / "jobs.db"), workers=0)


@q.task(name="add")
def add(a, b=0):
    return a + b


def gated(name, seconds=20.0):
    """Mark HERE/<name>.started, then block until HERE/<name>.go exists (the test's gate)."""
    (HERE / f"{name}.started").touch()
    deadline = time.monotonic() + seconds
    while not (HERE / f"{name}.go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return name


q.task()(gated)  # registered as it is: enqueued as app:gated, run by the worker


@q.task(name="pid_then_sleep", mode="process")
def pid_then_sleep(seconds):
    """Record this worker process's pid, then sleep."""
    (HERE / "pid.partial").write_text(str(os.getpid()))
    (HERE / "pid.partial").rename(HERE / "pid")
    time.sleep(seconds)
'''


def wait_for(predicate: Callable[[], object], timeout: float = WAIT) -> bool:
    """Poll ``predicate`` until it is truthy or ``timeout`` passes; return whether it was."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class App:
    """The app folder, a way to run ``conveyor`` there, and a queue on the same file."""

    def __init__(self, folder: Path, queue: conveyor.Queue) -> None:
        self.folder = folder
        self.q = queue
        self.env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.procs: list[subprocess.Popen[str]] = []

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run ``python -m conveyor ARGS`` to its end."""
        return subprocess.run(
            [sys.executable, "-m", "conveyor", *args],
            cwd=self.folder,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=WAIT * 3,
        )

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        """Start ``python -m conveyor ARGS``; its stderr goes to the file ``log``."""
        log = (self.folder / "log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", *args],
            cwd=self.folder,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def log(self) -> str:
        return (self.folder / "log").read_text()

    def enqueue(self, *args: str) -> str:
        result = self.run("enqueue", "app:q", *args)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def go(self, name: str) -> None:
        (self.folder / f"{name}.go").touch()

    def started(self, name: str) -> bool:
        return (self.folder / f"{name}.started").exists()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    (tmp_path / "app.py").write_text(APP)
    queue = conveyor.Queue("sqlite:///" + str(tmp_path / "jobs.db"), workers=0)
    made = App(tmp_path, queue)
    yield made
    for proc in made.procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=WAIT)
    queue.close(wait=False)


def test_python_dash_m_conveyor_is_the_command(app):
    result = app.run("--help")
    assert result.returncode == 0
    assert "Usage: python -m conveyor" in result.stdout
    for command in ["worker", "status", "jobs", "enqueue", "cancel"]:
        assert command in result.stdout


def test_enqueue_then_a_burst_worker_runs_the_jobs(app):
    # given jobs put from the command line: by task name, and by module:function
    first = app.enqueue("add", "--args", "[1, 2]", "--id", "first")
    second = app.enqueue("app:gated", "--args", '["second"]', "--kwargs", '{"seconds": 0}')
    assert first == "first"
    assert app.q.status(second) is Status.WAITING
    # when a burst worker runs
    result = app.run("worker", "app:q", "--burst", "-w", "2")
    # then it ran both, said so, and exited
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2 finished, 0 failed, 0 retried, 0 cancelled, 0 put back"
    assert app.q.result("first", timeout=0) == 3
    assert app.q.result(second, timeout=0) == "second"


def test_enqueue_options_reach_the_job(app):
    # given a job put with a priority and a delay
    app.enqueue("add", "--args", "[1]", "--id", "later", "--priority", "5", "--delay", "60")
    # then the queue holds it scheduled, with that priority
    record = app.q.job("later")
    assert (record.status, record.priority) == (Status.SCHEDULED, 5)


def test_max_jobs_exits_after_that_many(app):
    ids = [app.enqueue("add", "--args", f"[{n}]") for n in range(3)]
    result = app.run("worker", "app:q", "--max-jobs", "2", "-w", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2 finished, 0 failed, 0 retried, 0 cancelled, 0 put back"
    assert [app.q.status(i) for i in ids].count(Status.FINISHED) == 2
    assert app.q.size(Status.WAITING) == 1


def test_jobs_lists_a_table_filtered_and_limited(app):
    # given one finished job and two waiting
    app.enqueue("add", "--args", "[1]", "--id", "done")
    app.run("worker", "app:q", "--max-jobs", "1", "-w", "1")
    app.enqueue("add", "--args", "[2]", "--id", "w1")
    app.enqueue("add", "--args", "[3]", "--id", "w2")
    # when listing all, only the waiting ones, and the last one
    everything = app.run("jobs", "app:q").stdout.splitlines()
    waiting = app.run("jobs", "app:q", "--status", "waiting").stdout.splitlines()
    last = app.run("jobs", "app:q", "--limit", "1").stdout.splitlines()
    # then the table has its header and one row per job
    assert everything[0].split() == [
        "id", "task", "status", "attempts", "worker", "submitted", "started", "ended"
    ]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in everything[1:]}
    assert set(rows) == {"done", "w1", "w2"}
    assert rows["done"][1:4] == ["add", "finished", "1"]
    assert rows["done"][4].endswith("/conveyor-thread-1")
    assert rows["w1"][1:4] == ["add", "waiting", "0"]
    assert [line.split()[0] for line in waiting[1:]] == ["w1", "w2"]
    assert [line.split()[0] for line in last[1:2]] == ["w2"]
    assert "2 earlier job(s) not shown" in last[-1]


def test_cancel_cancels_a_waiting_job_and_fails_for_an_ended_one(app):
    app.enqueue("add", "--args", "[1]", "--id", "victim", "--delay", "60")
    result = app.run("cancel", "app:q", "victim")
    assert (result.returncode, result.stdout.strip()) == (0, "cancelled victim")
    assert app.q.status("victim") is Status.CANCELLED
    again = app.run("cancel", "app:q", "victim")
    assert again.returncode == 1
    assert "already ended (cancelled)" in again.stderr


def test_status_shows_counts_running_jobs_and_live_workers(app):
    # given a worker process running a job that waits for the test
    job = app.enqueue("app:gated", "--args", '["held"]', "--id", "held")
    app.enqueue("add", "--args", "[1]", "--id", "queued", "--delay", "60")
    worker = app.start("worker", "app:q", "-w", "1", "--burst")
    assert wait_for(lambda: app.started("held"))
    # when asking for the status
    result = app.run("status", "app:q")
    # then it shows the counts, the running job with its worker, and the worker's pid
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "waiting 0  scheduled 1  running 1  finished 0  failed 0  cancelled 0" in out
    running_row = next(line for line in out.splitlines() if line.startswith("held "))
    assert f":{worker.pid}:thread-" in running_row
    workers_row = next(line for line in out.splitlines() if f" {worker.pid} " in line)
    assert workers_row.split()[3:5] == ["thread", "1"]
    # and once the job ends, the burst worker leaves, unregistered
    app.go("held")
    assert worker.wait(WAIT) == 0
    assert app.q.result(job, timeout=0) == "held"
    assert app.q.backend.workers() == []


def test_sigterm_mid_job_loses_nothing(app):
    # given a worker with a short graceful_timeout, running a job that outlasts it, and more
    # jobs waiting
    held = app.enqueue("app:gated", "--args", '["held"]')
    more = [app.enqueue("add", "--args", f"[{n}]") for n in range(3)]
    worker = app.start("worker", "app:q", "-w", "1", CONVEYOR_GRACEFUL_TIMEOUT="0.3")
    assert wait_for(lambda: app.started("held"))
    # when it gets SIGTERM
    worker.send_signal(signal.SIGTERM)
    # then it exits cleanly, having put the running job back, uncounted
    assert worker.wait(WAIT) == 0
    assert "put back 1 running job(s)" in app.log()
    record = app.q.job(held)
    assert (record.status, record.attempts) == (Status.WAITING, 0)
    assert all(app.q.status(i) is Status.WAITING for i in more)
    # and a new worker runs every job to its end
    app.go("held")
    result = app.run("worker", "app:q", "--burst")
    assert result.stdout.strip() == "4 finished, 0 failed, 0 retried, 0 cancelled, 0 put back"
    assert app.q.result(held, timeout=0) == "held"
    assert app.q.job(held).attempts == 1


def test_sigterm_lets_a_job_that_ends_within_the_grace_finish(app):
    held = app.enqueue("app:gated", "--args", '["held"]')
    after = app.enqueue("add", "--args", "[1]")
    worker = app.start("worker", "app:q", "-w", "1", CONVEYOR_GRACEFUL_TIMEOUT=str(WAIT))
    assert wait_for(lambda: app.started("held"))
    worker.send_signal(signal.SIGTERM)
    assert wait_for(lambda: "stopping;" in app.log())
    app.go("held")
    assert worker.wait(WAIT) == 0
    assert (
        worker.stdout is not None
        and worker.stdout.read().strip()
        == "1 finished, 0 failed, 0 retried, 0 cancelled, 0 put back"
    )
    assert app.q.result(held, timeout=0) == "held"
    assert app.q.status(after) is Status.WAITING  # claimed no more once told to stop


def test_a_second_sigint_kills_the_worker_process_and_requeues_its_job(app):
    # given a process worker (graceful_timeout far longer than the test) running a job
    job = app.enqueue("pid_then_sleep", "--args", "[60]")
    worker = app.start(
        "worker", "app:q", "--mode", "process", "-w", "1", CONVEYOR_GRACEFUL_TIMEOUT="60"
    )
    pid_file = app.folder / "pid"
    assert wait_for(pid_file.exists)
    # when Ctrl-C is pressed twice
    worker.send_signal(signal.SIGINT)
    assert wait_for(lambda: "stopping;" in app.log())
    started = time.monotonic()
    worker.send_signal(signal.SIGINT)
    # then it exits at once, the job's process is killed, and the job waits again
    assert worker.wait(WAIT) == 0
    assert time.monotonic() - started < WAIT
    record = app.q.job(job)
    assert (record.status, record.attempts) == (Status.WAITING, 0)
    pid = int(pid_file.read_text())
    assert wait_for(lambda: not _alive(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
