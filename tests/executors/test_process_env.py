"""Process workers see the environment: a queue's worker processes see this process's
environment variables and working directory as of when the queue started them, whichever
process queue came first in the program (the forkserver keeps its own)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import conveyor

WAIT = 10  # seconds a test waits for something that should happen soon (forks included)
KEY = "CONVEYOR_TEST_PROCESS_ENV"


def where_am_i() -> tuple[str | None, str]:
    """The job: what it sees of the environment variable KEY, and its working directory."""
    return os.environ.get(KEY), os.getcwd()


def run_where_am_i(**settings: object) -> list[tuple[str | None, str]]:
    """Start a process queue, run ``where_am_i`` twice in it, and close it."""
    q = conveyor.Queue(mode="process", workers=1, **settings)  # type: ignore[arg-type]
    try:
        return [q.submit(where_am_i).result(timeout=WAIT) for _ in range(2)]
    finally:
        q.close(wait=True)


def test_each_new_process_queue_sees_the_environment_and_directory_of_its_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    # given a process queue started with KEY=a in the directory "first"
    monkeypatch.setenv(KEY, "a")
    monkeypatch.chdir(first)
    assert run_where_am_i() == [("a", str(first))] * 2
    # when the program then sets KEY=b, moves to "second" and starts a new process queue
    monkeypatch.setenv(KEY, "b")
    monkeypatch.chdir(second)
    # then that queue's jobs see b and "second"
    assert run_where_am_i() == [("b", str(second))] * 2
    # and a variable removed meanwhile is gone for the next queue's jobs
    monkeypatch.delenv(KEY)
    assert run_where_am_i() == [(None, str(second))] * 2


def test_a_replacement_worker_process_sees_what_the_first_one_saw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a process queue started with KEY=c, whose worker process is replaced after each job
    monkeypatch.setenv(KEY, "c")
    monkeypatch.chdir(tmp_path)
    q = conveyor.Queue(mode="process", workers=1, max_jobs_per_process=1)
    try:
        first = q.submit(where_am_i).result(timeout=WAIT)
        # when the program changes its environment and directory after the queue started
        monkeypatch.setenv(KEY, "changed later")
        monkeypatch.chdir(Path(tmp_path).parent)
        # then the replacement process still sees the queue's start: c, in tmp_path
        second = q.submit(where_am_i).result(timeout=WAIT)
    finally:
        q.close(wait=True)
    assert first == second == ("c", str(tmp_path))
