"""Fixtures of the security tests: modules planted on the path, and real worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.security import jobs

ROOT = Path(__file__).resolve().parents[2]
#: the module of the jobs the queues here allow
JOBS = jobs.__name__
#: seconds a worker process gets to drain what it can run
WORKER_TIMEOUT = 30
#: the default command: one slot, so that its burst ends only once nothing is left to run
BURST = ("worker", "secapp:q", "--burst", "--workers", "1")


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/queue.db"


class Plant:
    """Writes modules into a folder on ``sys.path`` (and on worker processes' PYTHONPATH).

    Module names get a unique suffix, so that no test finds a module another test imported.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.suffix = uuid.uuid4().hex[:8]

    def name(self, base: str) -> str:
        return f"{base}_{self.suffix}"

    def module(self, dotted: str, source: str) -> None:
        """Write module ``dotted`` (packages get an ``__init__.py`` if they have none)."""
        parts = dotted.split(".")
        folder = self.folder
        for package in parts[:-1]:
            folder = folder / package
            folder.mkdir(exist_ok=True)
            init = folder / "__init__.py"
            if not init.exists():
                init.write_text("", encoding="utf-8")
        (folder / f"{parts[-1]}.py").write_text(source, encoding="utf-8")

    def tripwire(self, base: str, mark: Path) -> str:
        """A module whose import writes ``mark``, with a function ``boom``; its name."""
        name = self.name(base)
        self.module(
            name,
            f"from pathlib import Path\nPath({str(mark)!r}).write_text('imported')\n\n"
            "def boom(*args):\n    return 'boom'\n",
        )
        return name


@pytest.fixture
def plant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Plant:
    folder = tmp_path / "planted"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return Plant(folder)


@pytest.fixture
def conveyor_command(
    tmp_path: Path, plant: Plant
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Write ``source`` as the module ``secapp`` and run ``python -m conveyor COMMAND`` to its
    end (default: :data:`BURST`) in another process; the planted modules and the
    repository are on its path, and no ``CONVEYOR_ALLOW_MODULES`` reaches it."""

    def run(source: str, *command: str) -> subprocess.CompletedProcess[str]:
        app = tmp_path / "app"
        app.mkdir(exist_ok=True)
        (app / "secapp.py").write_text(source, encoding="utf-8")
        path = [str(app), str(plant.folder), str(ROOT)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        env.pop("CONVEYOR_ALLOW_MODULES", None)
        done = subprocess.run(
            [sys.executable, "-m", "conveyor", *(command or BURST)],
            cwd=app,
            env=env,
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT,
        )
        return done

    return run
