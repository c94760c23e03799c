"""A real dashboard to drive: ``conveyor dashboard`` on an app written to a folder, and for a
durable queue a ``conveyor worker`` process running its jobs (the browser tests).

The app's tasks are gated by files in the folder, so a test decides when a job ends and when a
flaky job starts to succeed, and sees a job start by the mark it leaves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]
#: seconds to wait for something that should happen soon (a server starting, a job ending)
WAIT = 30.0

APP = '''
"""A conveyor app for the dashboard's browser tests."""

import time
from pathlib import Path

import conveyor

HERE = Path(__file__).resolve().parent
q = conveyor.Queue({url!r}, name={name!r}, workers={workers})


@q.task(name="add")
def add(a, b=0):
    return a + b


@q.task(name="gated")
def gated(name, seconds=30.0):
    """Mark HERE/<name>.started, then wait until HERE/<name>.go exists (the test's gate)."""
    (HERE / f"{{name}}.started").touch()
    deadline = time.monotonic() + seconds
    while not (HERE / f"{{name}}.go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return name


@q.task(name="reporting")
def reporting(name, seconds=30.0):
    """Report half way (conveyor.progress), mark HERE/<name>.started, wait for the gate."""
    conveyor.progress(0.5, "half way")
    return gated(name, seconds)


@q.task(name="flaky")
def flaky(name):
    """Fail until HERE/<name>.ok exists."""
    if not (HERE / f"{{name}}.ok").exists():
        raise RuntimeError(f"{{name}} is not ready")
    return name
'''


class Served:
    """A dashboard server (and its worker) on the app in ``folder``."""

    def __init__(self, folder: Path, url: str, *, token: str, durable: bool, name: str) -> None:
        self.folder = folder
        self.token = token
        self.durable = durable
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        workers = 0 if durable else 2
        (folder / "app.py").write_text(APP.format(url=url, name=name, workers=workers))
        self.env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> Served:
        """Start the server (and a worker), and wait until the API answers."""
        self._spawn("server", "dashboard", "app:q", "--port", str(self.port), "--token", self.token)
        if self.durable:
            self._spawn("worker", "worker", "app:q", "--workers", "2")
        deadline = time.monotonic() + WAIT
        while True:
            try:
                self.get("/api/counts")
                return self
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                    self.stop()  # no fixture teardown follows a setup that failed
                    raise RuntimeError(f"the dashboard did not start:\n{self.logs()}") from None
                time.sleep(0.05)

    def _spawn(self, label: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        with (self.folder / f"{label}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "conveyor", *args],
                cwd=self.folder,
                env={**self.env, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def worker(self, label: str, **env: str) -> subprocess.Popen[bytes]:
        """Another ``conveyor worker`` process of one slot (``env``: its settings)."""
        return self._spawn(label, "worker", "app:q", "--workers", "1", **env)

    def logs(self) -> str:
        """What the server and the worker printed."""
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')}"
            for path in sorted(self.folder.glob("*.log"))
        )

    def stop(self) -> None:
        """Stop the processes (SIGTERM, then SIGKILL if they linger)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=WAIT)

    # ------------------------------------------------------------------ the API
    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=WAIT) as response:
            return json.load(response)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body or {}).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return json.load(response)

    def submit(self, task: str, *args: Any) -> str:
        """Put a job through the API; its id."""
        job_id: str = self.post("/api/jobs", {"task": task, "args": list(args)})["id"]
        return job_id

    def status(self, job_id: str) -> str:
        status: str = self.get(f"/api/jobs/{job_id}")["status"]
        return status

    def record(self, job_id: str) -> dict[str, Any]:
        record: dict[str, Any] = self.get(f"/api/jobs/{job_id}")
        return record

    # ------------------------------------------------------------------ the gates
    def started(self, name: str) -> bool:
        return (self.folder / f"{name}.started").exists()

    def go(self, name: str) -> None:
        (self.folder / f"{name}.go").touch()

    def mend(self, name: str) -> None:
        (self.folder / f"{name}.ok").touch()

    def wait_for(self, predicate: Any, what: str) -> None:
        """Wait until ``predicate()`` holds (an AssertionError naming ``what`` if it never does)."""
        deadline = time.monotonic() + WAIT
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not happen\n{self.logs()}")
            time.sleep(0.02)
