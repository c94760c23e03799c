"""Helpers for tests that run real ``python -m conveyor worker`` processes on one SQLite file.

An app is a module written into the test's folder: a producer-only queue on the file and the
tasks of the test, registered with ``@q.task``. The test imports the same module (under a name
of its own, so that apps of different tests never mix) to put jobs and read the file; worker
processes import it by that name too. Every worker logs into its own file.

Jobs leave marks in a folder: ``<job>.<pid>.start`` when a run starts, ``<job>.<pid>.end``
when it ends, so a test knows which process ran what, and how often.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

HEADER = """
import os
import time
from pathlib import Path

import conveyor

q = conveyor.Queue({url!r}, workers=0{settings})


def mark(folder, job, stage):
    Path(folder, f"{{job}}.{{os.getpid()}}.{{stage}}").touch()
"""


def wait_until(condition: Callable[[], Any], timeout: float = 60.0, what: str = "") -> None:
    """Poll ``condition`` until it holds; AssertionError (saying ``what``) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s: {what or condition}")
        time.sleep(0.02)


def runs(marks: Path, job: str) -> list[tuple[int, bool]]:
    """Every run of ``job`` that started: (pid, whether it ended), by pid."""
    found = []
    for start in sorted(marks.glob(f"{job}.*.start")):
        pid = int(start.name.split(".")[-2])
        found.append((pid, (marks / f"{job}.{pid}.end").exists()))
    return found


class App:
    """An app module in ``folder`` with a queue on ``db`` (default ``folder/queue.db``) built
    with ``settings`` (which its worker processes then share)."""

    def __init__(self, folder: Path, tasks: str, db: Path | None = None, **settings: Any) -> None:
        self.folder = folder
        self.marks = folder / "marks"
        self.marks.mkdir()
        self.name = f"app_{uuid.uuid4().hex[:12]}"
        url = f"sqlite:///{db or folder / 'queue.db'}"
        given = "".join(f", {name}={value!r}" for name, value in settings.items())
        source = textwrap.dedent(HEADER).format(url=url, settings=given) + textwrap.dedent(tasks)
        (folder / f"{self.name}.py").write_text(source, encoding="utf-8")
        self.module: ModuleType | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    @property
    def spec(self) -> str:
        return f"{self.name}:q"

    def load(self) -> ModuleType:
        """Import the app in this process (its queue puts jobs and reads the file)."""
        sys.path.insert(0, str(self.folder))
        try:
            self.module = importlib.import_module(self.name)
        finally:
            sys.path.remove(str(self.folder))
        return self.module

    def env(self, **settings: str) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(self.folder), str(ROOT)]),
            **{f"CONVEYOR_{name.upper()}": value for name, value in settings.items()},
        }

    def worker(self, *args: str, **settings: str) -> subprocess.Popen[bytes]:
        """Start ``python -m conveyor worker APP *args``; it logs into ``worker-<n>.log``."""
        log = self.log_path(len(self.workers))
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "worker", self.spec, *args],
                cwd=self.folder,
                env=self.env(**settings),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.workers.append(proc)
        return proc

    def log_path(self, n: int) -> Path:
        return self.folder / f"worker-{n}.log"

    def log(self, n: int) -> str:
        return self.log_path(n).read_text(encoding="utf-8", errors="replace")

    def status(self) -> str:
        """What ``conveyor status APP`` prints."""
        done = subprocess.run(
            [sys.executable, "-m", "conveyor", "status", self.spec],
            cwd=self.folder,
            env=self.env(),
            capture_output=True,
            check=True,
            timeout=60,
        )
        return done.stdout.decode()

    def close(self) -> None:
        """Stop every worker still running (SIGTERM, then SIGKILL) and close the queue."""
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.module is not None:
            self.module.q.close()
            sys.modules.pop(self.name, None)


@contextmanager
def app(folder: Path, tasks: str, db: Path | None = None, **settings: Any) -> Iterator[App]:
    """An :class:`App`, loaded; its workers stopped and its queue closed at the end."""
    made = App(folder, tasks, db, **settings)
    made.load()
    try:
        yield made
    finally:
        made.close()
