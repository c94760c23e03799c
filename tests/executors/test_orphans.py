"""Orphans: a worker process's children die with it. A process-mode worker killed with
SIGKILL leaves no child running its job, long before the job's lease could expire."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import conveyor
from tests.executors import proc_jobs
from tests.faults import process_gone
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]
LEASE = 60  # seconds: the job must not come back, nor its process live on, by the lease
GONE_WITHIN = 5  # seconds a child may outlive its worker
pytestmark = pytest.mark.timeout(120)


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_a_sigkilled_process_worker_leaves_no_child_running_its_job(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/q.db"
    (tmp_path / "orphan_app.py").write_text(
        textwrap.dedent(
            f"""
            import conveyor
            from tests.executors import proc_jobs
            q = conveyor.Queue({url!r}, workers=0, mode="process")
            q.task(name="linger")(proc_jobs.write_pid_then_spin)
            """
        ),
        encoding="utf-8",
    )
    # given a job that announces its process's pid and then runs on and on
    q = conveyor.Queue(url, workers=0, mode="process")
    linger = q.task(name="linger")(proc_jobs.write_pid_then_spin)
    pid_file = tmp_path / "child.pid"
    job = linger.enqueue(str(pid_file))
    # and a process-mode worker running it in a child process
    command = ["worker", "orphan_app:q", "--workers", "1", "--mode", "process"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "conveyor", *command],
        cwd=tmp_path,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
            "CONVEYOR_LEASE": str(LEASE),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    child = None
    try:
        assert wait_until(lambda: read_pid(pid_file) is not None, 60), "the job never started"
        child = read_pid(pid_file)
        assert child is not None and child != worker.pid
        assert not process_gone(child)
        assert job.status is conveyor.Status.RUNNING
        # when the worker is killed with SIGKILL (and not reaped yet: a zombie)
        worker.send_signal(signal.SIGKILL)
        # then the child running the job dies with it, well before the lease ends
        assert wait_until(lambda: process_gone(child), GONE_WITHIN), (
            f"the child {child} outlived its killed worker {worker.pid}"
        )
        assert job.status is conveyor.Status.RUNNING  # its lease has not expired
    finally:
        if child is not None:
            kill_quietly(child)
        worker.kill()
        worker.wait(10)
        q.close()


WATCHED = textwrap.dedent(
    """
    import sys, time
    from conveyor.executors.process import die_with
    die_with(int(sys.argv[1]))
    print("watching", flush=True)
    time.sleep(60)
    """
)


def test_a_worker_process_watching_a_pid_other_than_its_parent_exits_when_it_ends() -> None:
    from conveyor.executors.process import EXIT_ORPHANED

    # given a process watching another one that is not its parent (as a forkserver's child
    # watches the worker), so that no parent-death signal can end it
    watched = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    watcher = subprocess.Popen(
        [sys.executable, "-c", WATCHED, str(watched.pid)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline().strip() == "watching"
        assert watcher.poll() is None
        # when the watched process is killed (and left a zombie: this test does not reap it)
        watched.send_signal(signal.SIGKILL)
        # then the watcher exits on its own within a second or so
        assert watcher.wait(GONE_WITHIN) == EXIT_ORPHANED
    finally:
        watcher.kill()
        watcher.wait(10)
        if watcher.stdout is not None:
            watcher.stdout.close()
        watched.kill()
        watched.wait(10)
