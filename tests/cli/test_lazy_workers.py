"""The command line and an app whose queue has workers of its own (``workers=2``).

A queue starts its own workers only when a call needs them (a put, a wait for jobs), so
importing the app starts none; the command line uses its queue as a producer: no job runs in
the command's process except those ``conveyor worker`` claims itself. An app that put jobs
when imported has its workers stopped, with a note.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import conveyor
from conveyor import Status
from conveyor.cli import main

WAIT = 30  # seconds a command may take
REPO = Path(__file__).resolve().parents[2]

CHAIN_APP = '''
"""An app whose first job puts the second through the app's queue."""

from pathlib import Path

import conveyor

HERE = Path(__file__).resolve().parent
q = conveyor.Queue("sqlite:///" + str(HERE / "jobs.db"), workers=2)


@q.task(name="first")
def first():
    second.enqueue()
    return "first"


@q.task(name="second")
def second():
    return "second"
'''

PUTS_AT_IMPORT_APP = '''
"""An app that puts a job (for an hour from now) each time it is imported."""

from pathlib import Path

import conveyor

HERE = Path(__file__).resolve().parent
q = conveyor.Queue("sqlite:///" + str(HERE / "jobs.db"), workers=2)


@q.task(name="later")
def later():
    return "later"


later.put(delay=3600)
'''


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh current directory on a copy of ``sys.path``; the app modules it held are
    forgotten (their queues closed) after the test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        module = sys.modules.pop(name)
        queue = getattr(module, "q", None)
        if isinstance(queue, conveyor.Queue):
            queue.close(wait=False)


def look(folder: Path) -> conveyor.Queue:
    """A producer queue on the app's file, to look at what the commands did."""
    return conveyor.Queue("sqlite:///" + str(folder / "jobs.db"), workers=0)


def run(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m conveyor ARGS`` in ``folder``, to its end."""
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def test_enqueue_starts_none_of_the_app_queues_workers(folder: Path) -> None:
    # given an app whose queue has 2 worker slots of its own
    (folder / "chain.py").write_text(CHAIN_APP)
    # when a job is put from the command line
    result = CliRunner().invoke(main, ["enqueue", "chain:q", "second"])
    # then it was put and nothing ran it: the command's process started no worker
    assert result.exit_code == 0, result.output
    queue = sys.modules["chain"].q
    assert (queue.runs_workers, queue.embedded.modes) == (False, ())
    with look(folder) as q:
        assert q.status(result.output.strip()) is Status.WAITING
        assert q.backend.workers(include_lost=True) == []


def test_a_job_that_puts_another_starts_no_workers_in_the_worker_process(folder: Path) -> None:
    # given an app whose queue has 2 worker slots of its own, and its first job put
    (folder / "chain.py").write_text(CHAIN_APP)
    put = run(folder, "enqueue", "chain:q", "first")
    assert put.returncode == 0, put.stderr
    # when one burst worker with one slot runs it, and the job puts the second through the
    # app's queue (in the worker's process)
    done = run(folder, "worker", "chain:q", "--burst", "-w", "1")
    # then the worker ran both jobs itself: the put started none of the queue's own workers
    assert done.returncode == 0, done.stderr
    assert "2 finished, 0 failed" in done.stdout, done.stderr
    with look(folder) as q:
        records = q.jobs()
    assert [(r.task, r.status) for r in records] == [
        ("first", Status.FINISHED),
        ("second", Status.FINISHED),
    ]
    ran_by = {(r.worker or "").rpartition("/")[0] for r in records}
    assert len(ran_by) == 1, ran_by


def test_an_app_that_puts_at_import_has_its_workers_stopped_with_a_note(folder: Path) -> None:
    # given an app that puts a job when imported, which starts its queue's workers
    (folder / "eager.py").write_text(PUTS_AT_IMPORT_APP)
    # when the command line imports it
    result = CliRunner().invoke(main, ["status", "eager:q"])
    # then the command says so and stops them (no worker stays registered)
    assert result.exit_code == 0, result.output
    assert "note: eager:q started 2 worker slot(s) of its own" in result.output
    queue = sys.modules["eager"].q
    assert (queue.runs_workers, queue.embedded.modes) == (False, ())
    with look(folder) as q:
        assert q.size(Status.SCHEDULED) == 1
        assert q.backend.workers(include_lost=True) == []
