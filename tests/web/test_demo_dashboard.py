"""Item 8: ``conveyor demo`` ends with the timeline PNG and the command that serves its queue
with ``conveyor dashboard``; that command, run as printed (another port), serves the run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.api.test_first_hour import clean_env, make_source
from tests.web.test_dashboard_command import free_port, up
from tests.worker.real_workers import wait_until

pytestmark = pytest.mark.slow


def test_the_demo_prints_a_dashboard_command_that_works(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src")
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "demo", "--dir", "run", "--source", str(source),
         "--workers", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=clean_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[-2] == "timeline: run/timeline.png" and (tmp_path / "run/timeline.png").exists()
    found = re.fullmatch(
        r"dashboard: (.*) --port 8000, then open http://127.0.0.1:8000/ .*", lines[-1]
    )
    assert found, lines[-1]
    cd, _, command = found.group(1).partition(" && ")
    assert cd == "cd run" and command == "conveyor dashboard demo_app:queue"
    port = free_port()
    with (tmp_path / "dashboard.log").open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "conveyor", *shlex.split(command)[1:], "--port", str(port)],
            cwd=tmp_path / "run", env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: up(base) or server.poll() is not None, what="the dashboard to answer")
        assert server.poll() is None, (tmp_path / "dashboard.log").read_text()
        total = int(re.search(r"Run 1: (\d+) jobs put", done.stdout).group(1))  # type: ignore[union-attr]
        assert httpx.get(f"{base}/api/counts").json()["finished"] == total
        page = httpx.get(f"{base}/api/jobs", params={"task": "summarise"}).json()
        assert [job["id"] for job in page["jobs"]] == ["run1-summarise"]
    finally:
        server.terminate()
        server.wait(timeout=30)
