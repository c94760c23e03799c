"""Every event of ``q.on`` reaches a process that did not cause it: jobs run by a ``conveyor
worker`` process, watched from the test process. The quiet ones (``started``, ``progress``)
are published only because this process asked for them (``q.on`` of such an event sets the
key ``all``). Against a real ``redis-server`` (the ``url`` fixture)."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

redis = pytest.importorskip("redis")

import conveyor  # noqa: E402
from conveyor.backends.redis import keys  # noqa: E402
from conveyor.events import EVENTS  # noqa: E402

#: the database of the test server these tests use, emptied before each (conftest.py)
DB = 5
WAIT = 30.0

APP = """
import conveyor

def ok(x):
    return x

def boom():
    raise ValueError("boom on purpose")

def halfway():
    conveyor.progress(0.5, "half")
    return "done"

q = conveyor.Queue({url!r}, allow_modules=["events_app"])
"""


def test_every_event_of_a_job_run_in_another_process_reaches_q_on(
    tmp_path: Path, url: str, client: redis.Redis
) -> None:
    (tmp_path / "events_app.py").write_text(APP.format(url=url), encoding="utf-8")
    sys.path.insert(0, str(tmp_path))
    try:
        import events_app  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    seen: dict[str, set[str]] = collections.defaultdict(set)
    cond = threading.Condition()

    def note(name: str) -> conveyor.events.Callback:
        def callback(record: conveyor.JobRecord) -> None:
            with cond:
                seen[name].add(record.id)
                cond.notify_all()

        return callback

    worker = None
    with conveyor.Queue(url, workers=0, allow_modules=["events_app"]) as q:
        for name in sorted(EVENTS):
            q.on(name, note(name))
        assert client.exists(keys.prefix("default") + "all") == 1
        worker = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "worker", "events_app:q", "--workers", "1"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(tmp_path)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            ok = q.put(events_app.ok, args=(1,))
            bad = q.put(events_app.boom, retries=1)
            half = q.put(events_app.halfway)
            later = q.put(events_app.ok, args=(2,), delay=3600)
            assert q.cancel(later.id)
            assert ok.result(timeout=WAIT) == 1
            assert half.result(timeout=WAIT) == "done"
            assert not bad.wait(timeout=WAIT) or q.status(bad.id) is conveyor.Status.FAILED
            expected = {
                "queued": {ok.id, bad.id, half.id, later.id},
                "started": {ok.id, bad.id, half.id},
                "progress": {half.id},
                "retrying": {bad.id},
                "finished": {ok.id, half.id},
                "failed": {bad.id},
                "cancelled": {later.id},
            }
            deadline = time.monotonic() + WAIT
            with cond:
                while any(not ids <= seen[name] for name, ids in expected.items()):
                    remaining = deadline - time.monotonic()
                    assert remaining > 0, f"missing: {dict(seen)}"
                    cond.wait(remaining)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
