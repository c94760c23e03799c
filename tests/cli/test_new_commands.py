"""The commands users reach for, end to end: ``python -m conveyor show | retry | purge |
forget | enqueue OPTIONS | jobs | status --json`` against a SQLite app run by a real
``python -m conveyor worker`` process, checked through a queue on the same file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import conveyor
from conveyor import Status

WAIT = 10
REPO = Path(__file__).resolve().parents[2]

APP = '''
"""A shop: charges fail until the file "fixed" exists beside this module."""

from pathlib import Path
import time

import conveyor

HERE = Path(__file__).resolve().parent
q = conveyor.Queue("sqlite:///" + str(HERE / "jobs.db"), workers=0)


@q.task(name="add")
def add(a, b=0):
    return a + b


@q.task(name="charge")
def charge(order):
    if not (HERE / "fixed").exists():
        raise ValueError(f"card declined for order {order}")
    return f"charged {order}"


@q.task(name="gated")
def gated(name):
    (HERE / f"{name}.started").touch()
    deadline = time.monotonic() + 20
    while not (HERE / f"{name}.go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return name
'''


def wait_for(predicate: Callable[[], object], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class Shop:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.q = conveyor.Queue("sqlite:///" + str(folder / "jobs.db"), workers=0)
        self.env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.procs: list[subprocess.Popen[str]] = []

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conveyor", *args],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=WAIT * 3,
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        return result.stdout

    def enqueue(self, *args: str) -> str:
        return self.ok("enqueue", "shop:q", *args).strip()

    def start_worker(self) -> subprocess.Popen[str]:
        log = (self.folder / "worker.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "worker", "shop:q", "-w", "1"],
            cwd=self.folder,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def status_is(self, job_id: str, status: str) -> bool:
        return self.q.status(job_id) == status


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    (tmp_path / "shop.py").write_text(APP)
    made = Shop(tmp_path)
    yield made
    for proc in made.procs:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    made.q.close(wait=False)


def test_show_a_failed_job_then_retry_it_on_a_running_worker(shop):
    shop.start_worker()
    job_id = shop.enqueue("charge", "--args", "[42]", "--id", "order-42", "--retries", "1")
    assert job_id == "order-42"
    assert wait_for(lambda: shop.status_is("order-42", "failed"))

    shown = shop.ok("show", "shop:q", "order-42")
    lines = shown.splitlines()
    assert "status     failed" in lines
    assert "task       charge" in lines
    assert "args       [42]" in lines
    assert "attempts   2" in lines
    assert "error      ValueError: card declined for order 42" in lines
    assert "Traceback (most recent call last):" in lines
    assert any("raise ValueError" in line for line in lines)
    assert any(line.startswith("worker ") and "/" in line for line in lines)

    (shop.folder / "fixed").touch()
    assert shop.ok("retry", "shop:q", "order-42") == "retried order-42\n"
    assert wait_for(lambda: shop.status_is("order-42", "finished"))

    data = json.loads(shop.ok("show", "shop:q", "order-42", "--json"))
    assert (data["status"], data["attempts"], data["result"], data["error"]) == (
        "finished",
        1,
        "charged 42",
        None,
    )
    for key in ("submitted", "started", "ended"):
        assert data[key].endswith("+00:00")  # ISO 8601, UTC
    (earlier,) = data["history"]
    assert (earlier["status"], earlier["attempts"]) == ("failed", 2)
    assert earlier["error"] == "ValueError: card declined for order 42"
    assert "raise ValueError" in earlier["traceback"]
    assert "earlier end 1: failed after 2 attempt(s)" in shop.ok("show", "shop:q", "order-42")

    missing = shop.run("show", "shop:q", "ghost")
    assert missing.returncode == 1
    assert "no job 'ghost' in the queue" in missing.stderr


def test_retry_failed_jobs_of_a_task_and_refusals(shop):
    for n in (1, 2):
        shop.enqueue("charge", "--args", f"[{n}]", "--id", f"c{n}")
    shop.enqueue("add", "--args", '["x", 1]', "--id", "bad-add")  # TypeError
    shop.enqueue("add", "--args", "[1]", "--id", "after-c1", "--after", "c1")
    shop.ok("worker", "shop:q", "--burst", "-w", "1")
    assert [shop.q.status(i) for i in ("c1", "c2", "bad-add", "after-c1")] == [
        "failed",
        "failed",
        "failed",
        "cancelled",
    ]

    refused = shop.run("retry", "shop:q", "after-c1", "ghost")
    assert refused.returncode == 1
    assert "depends on 'c1', which failed; retry 'c1' first" in refused.stderr
    assert "cannot retry ghost: no such job" in refused.stderr
    assert shop.run("retry", "shop:q").returncode == 2  # neither ids nor --failed
    assert shop.run("retry", "shop:q", "c1", "--task", "charge").returncode == 2

    (shop.folder / "fixed").touch()
    out = shop.ok("retry", "shop:q", "--failed", "--task", "charge")
    assert out.splitlines() == ["retried c1", "retried c2", "retried 2 failed job(s)"]
    assert shop.ok("retry", "shop:q", "after-c1") == "retried after-c1\n"  # waits for c1
    assert shop.q.status("bad-add") == "failed"  # another task: left alone
    shop.ok("worker", "shop:q", "--burst", "-w", "1")
    assert [shop.q.status(i) for i in ("c1", "c2", "after-c1")] == ["finished"] * 3
    assert shop.q.job("after-c1").started >= shop.q.job("c1").ended


def test_purge_and_forget(shop):
    shop.enqueue("add", "--args", "[1]", "--id", "done")
    shop.enqueue("charge", "--args", "[1]", "--id", "declined")
    shop.ok("worker", "shop:q", "--burst", "-w", "1")
    shop.enqueue("add", "--args", "[2]", "--id", "later", "--delay", "3600")
    shop.enqueue("add", "--args", "[3]", "--id", "cancelled")
    shop.ok("cancel", "shop:q", "cancelled")

    running = shop.run("purge", "shop:q", "--status", "running")
    assert running.returncode == 2
    assert shop.run("purge", "shop:q", "--older-than", "soon").returncode == 2
    assert shop.ok("purge", "shop:q", "--older-than", "1h") == "purged 0 job(s)\n"
    assert shop.ok("purge", "shop:q", "--task", "charge") == "purged 1 job(s)\n"
    assert {r.id for r in shop.q.jobs()} == {"done", "later", "cancelled"}

    active = shop.run("forget", "shop:q", "later")
    assert active.returncode == 1
    assert "cancel it first" in active.stderr
    assert shop.run("forget", "shop:q", "ghost").returncode == 1
    assert shop.ok("forget", "shop:q", "done") == "forgot done\n"
    assert shop.ok("purge", "shop:q") == "purged 1 job(s)\n"  # the cancelled one
    assert [r.id for r in shop.q.jobs()] == ["later"]
    assert shop.ok("purge", "shop:q", "--status", "scheduled") == "purged 1 job(s)\n"
    assert shop.q.jobs() == []


def test_enqueue_takes_the_put_options(shop):
    shop.enqueue("gated", "--args", '["first"]', "--id", "first")
    job_id = shop.enqueue(
        "add", "--args", "[1, 2]", "--id", "full", "--after", "first", "--lane", "disk",
        "--priority", "-3", "--timeout", "30", "--retries", "2", "--retry-delay", "0.5",
        "--backoff", "2", "--expires", "600", "--unique", "the-key", "--exclusive", "db",
        "--exclusive", "net", "--incompatible", "first", "--meta", '{"by": "cli"}',
    )  # fmt: skip
    assert job_id == "full"
    record = shop.q.job("full")
    assert (record.priority, record.lane, record.after) == (-3, "disk", ("first",))
    assert (record.exclusive, record.incompatible) == (("db", "net"), ("first",))
    assert record.meta == {"by": "cli"}
    # the unique key is held: the same key gives the holder back
    assert shop.enqueue("add", "--args", "[9]", "--unique", "the-key") == "full"
    shop.enqueue("add", "--args", "[5]", "--id", "delayed", "--delay", "3600")
    shop.enqueue("add", "--args", "[6]", "--id", "at", "--at", "2099-01-01T00:00:00+00:00")
    assert [shop.q.status(i) for i in ("delayed", "at")] == ["scheduled", "scheduled"]

    for bad, message in [
        (["--delay", "-1"], "invalid job: delay must be >= 0"),
        (["--retries", "-1"], "invalid job: retries must be between 0 and"),
        (["--backoff", "0.5"], "invalid job: backoff must be >= 1"),
        (["--after", "ghost"], "invalid job: unknown dependency 'ghost'"),
        (["--id", ""], "invalid job: a job id must be a non-empty string"),
        (["--delay", "1", "--at", "2099-01-01"], "invalid job: give delay= or at=, not both"),
        (["--at", "tomorrow"], "is neither an ISO 8601 time"),
        (["--priority", "high"], "'high' is not a valid integer"),
    ]:
        result = shop.run("enqueue", "shop:q", "add", "--args", "[1]", *bad)
        assert result.returncode == 2, (bad, result.stderr)
        assert message in result.stderr, (bad, result.stderr)
        assert "Traceback" not in result.stderr
    assert len(shop.q.jobs()) == 4  # nothing refused was put

    (shop.folder / "first.go").touch()
    shop.ok("worker", "shop:q", "--burst", "-w", "1")
    assert shop.q.result("full", timeout=WAIT) == 3


def test_enqueue_refuses_a_memory_queue(shop):
    (shop.folder / "mem.py").write_text(
        "import conveyor\nq = conveyor.Queue(workers=0)\n\n@q.task(name='add')\n"
        "def add(a):\n    return a\n"
    )
    result = shop.run("enqueue", "mem:q", "add", "--args", "[1]")
    assert result.returncode == 2
    assert "is memory://" in result.stderr
    assert "would vanish when this command exits" in result.stderr


def test_jobs_shows_errors_and_keeps_odd_ids_on_one_line(shop):
    odd = "two\nlines\x1b[31m"
    long = "x" * 10_000
    shop.enqueue("add", "--args", "[1]", "--id", odd)
    shop.enqueue("add", "--args", "[1]", "--id", long)
    shop.enqueue("charge", "--args", "[7]", "--id", "declined")
    shop.ok("worker", "shop:q", "--burst", "-w", "1")

    lines = shop.ok("jobs", "shop:q").splitlines()
    assert len(lines) == 4  # the header and one line per job
    assert lines[0].split()[-1] == "error"
    assert max(len(line) for line in lines) < 400
    assert "\x1b" not in "".join(lines)
    assert lines[1].startswith("two\\nlines\\x1b[31m ")
    assert lines[2].startswith("x" * 39 + "\u2026 ")
    assert lines[3].split()[:3] == ["declined", "charge", "failed"]
    assert lines[3].endswith("ValueError: card declined for order 7")

    data = json.loads(shop.ok("jobs", "shop:q", "--json"))
    assert [d["id"] for d in data] == [odd, long, "declined"]
    assert data[2]["error"] == "ValueError: card declined for order 7"
    assert {"id", "task", "status", "attempts", "worker", "submitted", "error"} <= set(data[0])


def test_status_json_shows_counts_running_jobs_and_the_worker(shop):
    proc = shop.start_worker()
    shop.enqueue("gated", "--args", '["slow"]', "--id", "slow")
    shop.enqueue("add", "--args", "[1]", "--id", "queued", "--delay", "3600")
    assert wait_for(lambda: (shop.folder / "slow.started").exists())

    data = json.loads(shop.ok("status", "shop:q", "--json"))
    assert data["url"].startswith("sqlite:///")
    assert data["counts"] == {
        "waiting": 0, "scheduled": 1, "running": 1, "finished": 0, "failed": 0, "cancelled": 0,
    }  # fmt: skip
    assert [r["id"] for r in data["running"]] == ["slow"]
    assert [w["pid"] for w in data["workers"]] == [proc.pid]
    assert data["workers"][0]["last_seen"].endswith("+00:00")
    (shop.folder / "slow.go").touch()
    assert shop.q.result("slow", timeout=WAIT) == "slow"
    assert shop.q.status("queued") == Status.SCHEDULED
