"""What ``conveyor worker`` says on standard error: a banner at start, a line per job that
failed, was retried, refused, stopped by its timeout, cancelled or recovered, and the counts
by outcome at stop; as readable lines or one JSON object per line. Real ``python -m conveyor
worker`` processes on a SQLite file, their standard error captured."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import Status
from tests.worker.real_workers import App, app, runs, wait_until

WAIT = 30.0

TASKS = """
@q.task(name="ok")
def ok(x):
    return x


@q.task(name="flaky", retries=1)
def flaky(folder):
    # the first run fails, the second returns
    first = not list(Path(folder).glob("flaky.*.start"))
    mark(folder, "flaky", "start")
    if first:
        raise ValueError("first try fails")
    return "second try"


@q.task(name="bad")
def bad():
    raise ValueError("line one\\nline two")


@q.task(name="sleepy")
def sleepy(folder, seconds):
    mark(folder, "sleepy", "start")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)
    return "woke"


@q.task(name="slow_process", mode="process")
def slow_process(seconds):
    time.sleep(seconds)
"""


@pytest.fixture
def made(tmp_path: Path) -> Iterator[App]:
    with app(tmp_path, TASKS) as made:
        yield made


def tasks(made: App) -> Any:
    return made.module


def put_mix(made: App) -> dict[str, str]:
    """One job of each kind; the ``refused`` one names os:system in the file."""
    t = tasks(made)
    ids = {
        "ok": t.ok.enqueue(1).id,
        "flaky": t.flaky.enqueue(str(made.marks)).id,
        "bad": t.bad.enqueue().id,
        "sleepy": t.sleepy.put(args=(str(made.marks), 20), timeout=0.5).id,
        "refused": t.ok.enqueue(2).id,
    }
    with sqlite3.connect(made.folder / "queue.db") as raw:
        raw.execute("UPDATE jobs SET ref = 'os:system' WHERE id = ?", (ids["refused"],))
    return ids


def burst(made: App, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", "worker", made.spec, "--burst", "-w", "2", *args],
        cwd=made.folder,
        env=made.env(),
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
        check=False,
    )


def one(lines: list[str], *parts: str) -> str:
    """The single line holding every one of ``parts``."""
    found = [line for line in lines if all(part in line for part in parts)]
    assert len(found) == 1, (parts, lines)
    return found[0]


def test_the_text_log_says_what_happened_to_each_job_and_how_they_ended(made: App) -> None:
    ids = put_mix(made)
    done = burst(made)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    # a banner: the queue, the mode and slots, the code it runs
    url = tasks(made).q.url
    banner = one(lines, "INFO conveyor.runner", "started")
    assert f"2 thread slot(s) on {url}" in banner
    assert "tasks: bad, flaky, ok, sleepy, slow_process (process mode: not run here);" in banner
    assert "allowed modules: none" in banner
    # a failure that was retried: its attempt, the error, the attempt next
    retried = one(lines, f"job {ids['flaky']} ", "attempt 1 failed")
    assert "INFO conveyor.worker" in retried
    assert "(task flaky) attempt 1 failed: ValueError: first try fails; attempt 2" in retried
    # a failure for good: the error's first line only
    failed = one(lines, f"job {ids['bad']} ")
    assert "WARNING conveyor.worker" in failed
    assert failed.endswith("(task bad) failed (attempt 1, no retry left): ValueError: line one")
    assert "line two" not in done.stderr
    # a timeout: how the job was stopped, then its failure
    stopped = one(lines, f"job {ids['sleepy']} ", "passed its timeout of 0.5 s")
    assert "a new thread takes its slot" in stopped
    one(lines, f"job {ids['sleepy']} ", "no retry left", "TimeoutError: job exceeded")
    # a refusal: the reason, from the backend's check
    refused = one(lines, f"job {ids['refused']} ")
    assert "(task ok) refused: UntrustedFunction: refused to run 'os:system'" in refused
    # nothing per finished job at INFO, and the counts by outcome at stop
    assert not [line for line in lines if f"job {ids['ok']} " in line]
    summary = "2 finished, 3 failed, 1 retried, 0 cancelled, 0 put back"
    assert one(lines, "INFO conveyor.runner", "stopped").endswith(f"stopped: {summary}")
    assert done.stdout.strip() == summary
    assert tasks(made).q.status(ids["flaky"]) == Status.FINISHED


def test_the_json_log_is_one_object_per_line_with_the_jobs_fields(made: App) -> None:
    ids = put_mix(made)
    done = burst(made, "--log-format", "json")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert records
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys()
    by_outcome: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_outcome.setdefault(record.get("outcome", ""), []).append(record)
    (retried,) = by_outcome["retried"]
    assert retried["level"] == "INFO" and retried["logger"] == "conveyor.worker"
    assert (retried["job_id"], retried["task"], retried["attempt"]) == (ids["flaky"], "flaky", 1)
    assert retried["next_attempt"] == 2 and isinstance(retried["retry_at"], float)
    assert retried["error"] == "ValueError: first try fails"
    failed = {record["job_id"]: record for record in by_outcome["failed"]}
    assert set(failed) == {ids["bad"], ids["sleepy"]}
    assert failed[ids["bad"]]["error_type"] == "ValueError"
    assert failed[ids["sleepy"]]["error_type"] == "TimeoutError"
    (refused,) = by_outcome["refused"]
    assert (refused["job_id"], refused["error_type"]) == (ids["refused"], "UntrustedFunction")
    (banner,) = [r for r in records if r["message"].startswith("worker ") and "slots" in r]
    assert banner["slots"] == 2 and banner["mode"] == "thread"
    assert "flaky" in banner["tasks"] and banner["url"] == tasks(made).q.url
    (stop,) = [r for r in records if "outcomes" in r]
    assert stop["outcomes"] == {
        "finished": 2,
        "failed": 3,
        "retried": 1,
        "cancelled": 0,
        "put back": 0,
    }


def test_log_levels(made: App) -> None:
    t = tasks(made)
    t.ok.enqueue(
        1,
    )
    t.bad.enqueue()
    quiet = burst(made, "--log-level", "warning")
    assert quiet.returncode == 0, quiet.stderr
    assert " INFO " not in quiet.stderr
    assert "(task bad) failed (attempt 1, no retry left)" in quiet.stderr
    ok = t.ok.enqueue(2)
    t.bad.enqueue()
    loud = burst(made, "--log-level", "DEBUG")
    assert loud.returncode == 0, loud.stderr
    assert f"job {ok.id} (task ok, attempt 1) finished" in loud.stderr
    assert "line two" in loud.stderr, loud.stderr  # the failed job's traceback


def test_a_cancelled_job_and_a_process_timeout_are_said(made: App) -> None:
    # given a worker running a long job, and a process-mode job with a timeout
    t = tasks(made)
    long = t.sleepy.enqueue(str(made.marks), 20)
    worker = made.worker("-w", "1")
    process = made.worker("-w", "1", "--mode", "process")
    timed = t.slow_process.put(args=(20,), timeout=0.5)
    wait_until(lambda: runs(made.marks, "sleepy"), WAIT, "the long job started")
    # when the long job is cancelled, and the other passes its timeout
    assert t.q.cancel(long.id)
    wait_until(lambda: "stopped:" in made.log(0), WAIT, "the worker said it stopped the job")
    wait_until(lambda: t.q.status(timed.id) == Status.FAILED, WAIT, "the timeout")
    for proc in (worker, process):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0
    # then each worker said what it did, and counted it
    log = made.log(0).splitlines()
    one(log, f"job {long.id} (task sleepy, attempt 1) stopped: it is no longer this worker's")
    assert one(log, "INFO conveyor.runner", "stopped: ").endswith(
        "0 finished, 0 failed, 0 retried, 1 cancelled, 0 put back"
    )
    other = made.log(1).splitlines()
    killed = one(other, f"job {timed.id} ", "passed its timeout of 0.5 s")
    assert "its worker process" in killed and "is killed and replaced" in killed
    one(other, f"job {timed.id} ", "no retry left", "TimeoutError")
