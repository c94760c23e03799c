"""A payload changed in the store fails that job only: the worker process lives on and runs
the other jobs, before and after it."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

import conveyor
from tests.crash import crash_jobs
from tests.crash.conftest import Store
from tests.crash.test_kill import _app, _worker

pytestmark = pytest.mark.timeout(120)


def test_a_corrupt_payload_fails_that_job_only_and_the_worker_lives(
    tmp_path: Path, store: Store
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    q = store.queue()
    q.put(crash_jobs.mark, args=(str(marks), "corrupt"), id="corrupt", priority=0)
    q.put(crash_jobs.mark, args=(str(marks), "fine"), id="fine", priority=1)
    store.corrupt_payload("corrupt")
    worker = _worker(tmp_path, _app(tmp_path, store))
    try:
        assert q.result("fine", timeout=60) == "fine"
        with pytest.raises(conveyor.JobFailed) as failed:
            q.result("corrupt", timeout=60)
        assert failed.value.error_type == "PayloadRefused"
        assert worker.poll() is None  # the worker lives on
        assert q.put(crash_jobs.mark, args=(str(marks), "after")).result(timeout=60) == "after"
        assert q.status("corrupt") == "failed"
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            code = worker.wait()
        q.close()
    assert code == 0
    assert not list(marks.glob("corrupt.*"))  # it never ran
