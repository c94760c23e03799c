"""``conveyor dashboard APP``: a real server process on a SQLite queue whose jobs a real
``conveyor worker`` runs; what it says on start; a host others can reach refused without a
token."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.web.harness import App, Stream
from tests.worker.real_workers import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    made = App(tmp_path, f"sqlite:///{tmp_path / 'queue.db'}", workers=0)
    try:
        yield made
    finally:
        made.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/api/counts", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_serves_the_api_with_a_token_from_the_environment(app: App, tmp_path: Path) -> None:
    port = free_port()
    env = {**app.env(), "CONVEYOR_TOKEN": "from-env"}
    with (tmp_path / "dashboard.log").open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "dashboard", app.spec, "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    app.processes.append(server)
    app.worker(slots=1)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: up(base) or server.poll() is not None, what="the server to answer")
    assert server.poll() is None, (tmp_path / "dashboard.log").read_text()
    said = (tmp_path / "dashboard.log").read_text()
    assert f"at {base}/" in said and "changes (POST) need the bearer token" in said
    stream = Stream(base)
    try:
        body = {"task": "add", "args": [20, 22], "id": "answer"}
        assert httpx.post(f"{base}/api/jobs", json=body).status_code == 401
        auth = {"Authorization": "Bearer from-env"}
        assert httpx.post(f"{base}/api/jobs", json=body, headers=auth).status_code == 201
        assert stream.until("answer", "finished") == ["queued", "started", "finished"]
    finally:
        stream.close()
    assert httpx.get(f"{base}/api/jobs/answer/result").json()["result"] == 42
    assert app.queue.result("answer") == 42  # the same queue, read from the file


def run(app: App, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", "dashboard", app.spec, *args],
        cwd=app.folder,
        env=app.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "example.org", "::"])
def test_a_reachable_host_without_a_token_is_refused(app: App, host: str) -> None:
    done = run(app, "--host", host, "--port", str(free_port()))
    assert done.returncode == 2
    assert f"no token: the API would let anyone who reaches {host} change the queue" in (
        done.stderr
    )
    assert "--token" in done.stderr


def test_no_token_binds_to_loopback_and_says_so(app: App, tmp_path: Path) -> None:
    port = free_port()
    with (tmp_path / "dashboard.log").open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "dashboard", app.spec, "--port", str(port)],
            cwd=tmp_path,
            env=app.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    app.processes.append(server)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: up(base) or server.poll() is not None, what="the server to answer")
    assert "no token: bound to loopback only" in (tmp_path / "dashboard.log").read_text()
    response = httpx.post(f"{base}/api/purge", json={})  # no token configured: allowed
    assert response.status_code == 200 and response.json() == {"purged": 0}


def test_an_empty_token_is_refused(app: App) -> None:
    done = run(app, "--token", "")
    assert done.returncode == 2 and "the token must not be empty" in done.stderr
