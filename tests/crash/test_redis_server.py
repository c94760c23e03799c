"""The Redis server itself fails: it dies mid-run and comes back (append-only on, fsync on every
write), it is down when a job is put, it is not there when a queue opens.

Workers are ``python -m conveyor worker APP`` processes logging to a file; the server is the
test's own (``redis_server``), killed with SIGKILL and started again on the same port.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import conveyor
from tests.crash import crash_jobs
from tests.crash.conftest import Store
from tests.crash.test_kill import ROOT, SLOW, _runs, _stop
from tests.polling import wait_until
from tests.servers import RedisServer, free_port

pytestmark = pytest.mark.timeout(240)


def _worker(tmp_path: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "conveyor", "worker", "crash_app:q", "--workers", "2"],
            cwd=tmp_path,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
                "CONVEYOR_LEASE": "2",
                "CONVEYOR_GRACEFUL_TIMEOUT": "1",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_a_server_restarted_mid_run_loses_nothing_and_workers_carry_on(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    store = Store("redis", redis_server.url, f"restart-{uuid.uuid4().hex[:12]}")
    (tmp_path / "crash_app.py").write_text(store.app_source(), encoding="utf-8")
    marks = tmp_path / "marks"
    marks.mkdir()
    q = store.queue()
    ids = [
        q.put(crash_jobs.mark, args=(str(marks), f"job{n:03d}", 0.01), id=f"job{n:03d}").id
        for n in range(300)
    ]
    logs = [tmp_path / f"worker{n}.log" for n in range(2)]
    workers = [_worker(tmp_path, log) for log in logs]
    try:
        # both workers are running jobs (a worker still starting when the server dies would
        # rightly refuse to start), and some jobs ended
        assert wait_until(
            lambda: (
                {pid for runs in _runs(marks).values() for pid, _ in runs}
                >= {w.pid for w in workers}
                and q.size("finished") >= 60
            ),
            SLOW,
        )
        before = [log.stat().st_size for log in logs]
        redis_server.stop(kill=True)  # a crash: what was acknowledged is in the append-only file

        # while it is down: a put fails at once with an error naming the server
        with pytest.raises(
            conveyor.StorageError, match=re.escape(f"127.0.0.1:{redis_server.port}")
        ):
            q.put(crash_jobs.mark, args=(str(marks), "while-down"), id="while-down")
        # the workers notice, say so in their log, and live on
        assert wait_until(
            lambda: all(log.stat().st_size > n for log, n in zip(logs, before, strict=True)), SLOW
        )
        assert [w.poll() for w in workers] == [None, None], [log.read_text() for log in logs]

        redis_server.start()  # same port, same data
        assert wait_until(lambda: q.size("finished") == 300, 180)
        assert [w.poll() for w in workers] == [None, None], [log.read_text() for log in logs]
        # and they still take new work
        assert q.put(crash_jobs.mark, args=(str(marks), "after")).result(timeout=60) == "after"
    finally:
        codes = _stop(workers)
    records = {r.id: r for r in q.jobs()}
    q.close()

    assert codes == [0, 0], [log.read_text() for log in logs]
    assert "while-down" not in records  # the refused put left nothing behind
    assert len(records) == 301  # the 300 and the one put after the restart
    assert set(ids) <= set(records)
    assert all(r.status == "finished" for r in records.values())
    assert sorted(set(_runs(marks)) - {"after"}) == ids  # every job ran, none was lost
    for log in logs:
        text = log.read_text(errors="replace").lower()
        assert "connect" in text or "redis" in text, text


def test_a_queue_on_a_server_that_is_not_there_says_which_url() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(conveyor.StorageError, match=re.escape(url)):
        conveyor.Queue(url, workers=0)


def test_a_worker_on_a_server_that_is_not_there_exits_naming_the_url(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    store = Store("redis", url, "absent")
    (tmp_path / "crash_app.py").write_text(store.app_source(), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "worker", "crash_app:q", "--burst"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert url in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
