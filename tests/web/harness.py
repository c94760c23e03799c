"""What the HTTP API tests run: an app module of tasks on a queue URL, real ``conveyor worker``
processes on it (durable queues), a uvicorn server of ``create_app`` in a thread of the test
process on a free port, and an event stream read in a thread.

The app module is written into the test's folder under a name of its own; the test imports it
(its queue is the server's), and worker processes import it by that name.
"""

from __future__ import annotations

import importlib
import json
import os
import queue as queues
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

import conveyor
from conveyor.web import create_app

ROOT = Path(__file__).resolve().parents[2]

TASKS = """
import time
from pathlib import Path

import conveyor

q = conveyor.Queue({url!r}, name={name!r}, workers={workers})


@q.task
def add(a, b):
    return a + b


@q.task
def unless_missing(path):
    # fails until the file at path exists
    if not Path(path).exists():
        raise FileNotFoundError(path)
    return "found"


@q.task
def hold(flag):
    # runs until the file at flag exists (at most 60 s): a job to cancel while it runs
    deadline = time.monotonic() + 60
    while not Path(flag).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return "released"


@q.task
def halfway(flag):
    # reports half its work done, then runs until the file at flag exists (at most 60 s)
    conveyor.progress(0.5, "half way")
    deadline = time.monotonic() + 60
    while not Path(flag).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return "done"
"""


class App:
    """The app module of a test: its queue (``module.q``) and its worker processes."""

    def __init__(self, folder: Path, url: str, workers: int) -> None:
        self.folder = folder
        self.name = f"webapp_{uuid.uuid4().hex[:12]}"
        source = textwrap.dedent(TASKS).format(url=url, name=self.name, workers=workers)
        (folder / f"{self.name}.py").write_text(source, encoding="utf-8")
        sys.path.insert(0, str(folder))
        try:
            self.module: ModuleType = importlib.import_module(self.name)
        finally:
            sys.path.remove(str(folder))
        self.queue: conveyor.Queue = self.module.q
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def spec(self) -> str:
        return f"{self.name}:q"

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": os.pathsep.join([str(self.folder), str(ROOT)])}

    def run(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        """Start ``python -m conveyor *args`` in the app's folder, output to ``log``."""
        with (self.folder / log).open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "conveyor", *args],
                cwd=self.folder,
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(proc)
        return proc

    def worker(self, slots: int = 2) -> subprocess.Popen[bytes]:
        """A ``conveyor worker`` process on the app's queue."""
        return self.run("worker", self.spec, "--workers", str(slots), log="worker.log")

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.queue.close(wait=False)
        sys.modules.pop(self.name, None)


@dataclass
class Served:
    """A running server: its base URL and its app."""

    base: str
    app: FastAPI


@contextmanager
def served(queue: conveyor.Queue, token: str | None = "secret") -> Iterator[Served]:
    """``create_app(queue)`` served by uvicorn in a thread on a free port."""
    web = create_app(queue, token=token, heartbeat=0.5)
    config = uvicorn.Config(web, host="127.0.0.1", port=0, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Served(f"http://127.0.0.1:{port}", web)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class Event:
    """One server-sent event: its name and the record it carries."""

    name: str
    record: dict[str, Any]


#: seconds Stream.close waits for its reading thread
CLOSE_WAIT = 1.0


class Stream:
    """``GET /api/events`` read in a thread; :meth:`next` waits for the next event of a job."""

    def __init__(self, base: str) -> None:
        self.events: queues.Queue[Event] = queues.Queue()
        self.comments: list[str] = []
        self._subscribed = threading.Event()
        self._client = httpx.Client(base_url=base, timeout=httpx.Timeout(5, read=None))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        if not self._subscribed.wait(30):
            raise RuntimeError("the event stream did not start")
        self.seen: list[Event] = []

    def _read(self) -> None:
        name, data = "message", []
        try:
            with self._client.stream("GET", "/api/events") as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                for line in response.iter_lines():
                    if line.startswith(":"):
                        self.comments.append(line[1:].strip())
                        self._subscribed.set()
                    elif line.startswith("event:"):
                        name = line.partition(":")[2].strip()
                    elif line.startswith("data:"):
                        data.append(line.partition(":")[2].strip())
                    elif not line and data:
                        self.events.put(Event(name, json.loads("\n".join(data))))
                        name, data = "message", []
        except (httpx.HTTPError, RuntimeError):
            pass  # closed by the test

    def until(self, job_id: str, name: str, timeout: float = 60) -> list[str]:
        """Wait for event ``name`` of ``job_id``; return the names of the job's events so far,
        in order."""
        deadline = time.monotonic() + timeout
        while not any(e.name == name and e.record["id"] == job_id for e in self.seen):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {name} event for {job_id} within {timeout} s: {self.names(job_id)}"
                )
            try:
                self.seen.append(self.events.get(timeout=remaining))
            except queues.Empty:
                continue
        return self.names(job_id)

    def names(self, job_id: str) -> list[str]:
        return [e.name for e in self.seen if e.record["id"] == job_id]

    def close(self) -> None:
        """Close the client. A read blocked on the socket ends at the server's next ping (its
        heartbeat) or when the server stops: the thread (a daemon) is not waited for longer
        than CLOSE_WAIT seconds."""
        self._client.close()
        self._thread.join(timeout=CLOSE_WAIT)
