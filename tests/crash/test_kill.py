"""Crash tests, for real: worker processes killed with SIGKILL, a producer killed mid-map.

Workers run as ``python -m conveyor worker APP`` processes on one store (a SQLite file, a Redis
server: the ``store`` fixture), with a short lease so that a dead worker's jobs come back
quickly. A job may run twice only if the worker running it was killed: every run leaves
start/end marks naming its process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

from tests.crash import crash_jobs
from tests.crash.conftest import Store
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]
#: seconds a step of these tests may take on a loaded machine (workers start, jobs run)
SLOW = 120.0
pytestmark = pytest.mark.timeout(240)


def _app(tmp_path: Path, store: Store) -> str:
    (tmp_path / "crash_app.py").write_text(store.app_source(), encoding="utf-8")
    return "crash_app:q"


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "CONVEYOR_LEASE": "1",
        "CONVEYOR_GRACEFUL_TIMEOUT": "1",
    }


def _worker(tmp_path: Path, app: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", "worker", app, "--workers", "2", *extra],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(workers: list[subprocess.Popen[bytes]]) -> list[int | None]:
    """SIGTERM each worker; their exit codes (None for one that had to be killed)."""
    codes: list[int | None] = []
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            codes.append(worker.wait(timeout=20))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
            codes.append(None)
    return codes


def _runs(marks: Path) -> dict[str, list[tuple[int, bool]]]:
    """job -> [(pid, ended)] for every run that started."""
    runs: dict[str, list[tuple[int, bool]]] = defaultdict(list)
    for start in marks.glob("*.start"):
        job, pid, _ = start.name.split(".")
        runs[job].append((int(pid), (marks / f"{job}.{pid}.end").exists()))
    return runs


def test_sigkilled_workers_lose_no_job_and_repeat_only_killed_runs(
    tmp_path: Path, store: Store
) -> None:
    app = _app(tmp_path, store)
    marks = tmp_path / "marks"
    marks.mkdir()
    q = store.queue()
    # 25 job-seconds: the steady worker alone (2 slots) cannot drain the queue while a new
    # victim starts, even on a busy machine (with 10 ms jobs on SQLite, under the full suite,
    # it did: no job was left to kill the victim over)
    duration = 0.05
    ids = [
        q.put(crash_jobs.mark, args=(str(marks), f"job{n:03d}", duration), id=f"job{n:03d}").id
        for n in range(500)
    ]
    steady = _worker(tmp_path, app)
    victim = _worker(tmp_path, app)
    killed: set[int] = set()
    try:
        for round_ in range(3):
            # kill the victim while it is running jobs, then start a new one in its place
            assert wait_until(lambda r=round_: q.size("finished") >= 100 * (r + 1), SLOW)
            assert wait_until(
                lambda v=victim: any(
                    pid == v.pid for r in _runs(marks).values() for pid, ended in r if not ended
                ),
                SLOW,
            )
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            killed.add(victim.pid)
            victim = _worker(tmp_path, app)
        assert wait_until(lambda: q.size("finished") == 500, 180)
    finally:
        _stop([steady, victim])
    records = {r.id: r for r in q.jobs()}
    q.close()

    assert sorted(records) == ids
    assert all(r.status == "finished" for r in records.values())
    runs = _runs(marks)
    assert sorted(runs) == ids  # every job ran
    repeated = {job: r for job, r in runs.items() if len(r) > 1}
    assert repeated, "the kills hit no running job; the test proved nothing"
    for job, job_runs in repeated.items():
        # the run that counted is the recorded worker's; every other run was in a killed process
        final_pid = int((records[job].worker or "").split(":")[1])
        others = [pid for pid, _ended in job_runs if pid != final_pid]
        assert len(others) == len(job_runs) - 1, (job, job_runs, final_pid)
        assert set(others) <= killed, (job, job_runs, killed)
        # no attempt without a run (a job claimed ahead counts only once a slot started it;
        # a run the killed worker had not yet told the backend about is not counted)
        assert 1 <= records[job].attempts <= len(job_runs)


def test_jobs_put_right_after_an_idle_worker_is_killed_each_run_once(
    tmp_path: Path, store: Store
) -> None:
    """Both workers idle (on Redis their slots are registered to be handed the next jobs), one
    is killed with SIGKILL, and jobs are put at once: each runs exactly once, in the live
    worker (on Redis a job handed to a dead slot comes back after the lease, that attempt not
    counted)."""
    app = _app(tmp_path, store)
    marks = tmp_path / "marks"
    marks.mkdir()
    q = store.queue()
    live, victim = _worker(tmp_path, app), _worker(tmp_path, app)
    try:
        warm = [q.put(crash_jobs.mark, args=(str(marks), f"warm{n}")) for n in range(20)]
        for job in warm:
            job.result(timeout=60)
        if store.kind == "redis":  # every slot idles, registered
            import redis

            idle = "{conveyor:" + store.name + "}:i:thread"
            with redis.Redis.from_url(store.url) as client:
                assert wait_until(lambda: client.zcard(idle) == 4, 60)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        jobs = [
            q.put(crash_jobs.mark, args=(str(marks), f"job{n}"), id=f"job{n}") for n in range(8)
        ]
        assert [job.result(timeout=60) for job in jobs] == [f"job{n}" for n in range(8)]
    finally:
        _stop([live, victim])
    records = {r.id: r for r in q.jobs() if r.id.startswith("job")}
    q.close()
    runs = _runs(marks)
    for n in range(8):
        assert [pid for pid, _ in runs[f"job{n}"]] == [live.pid]
        assert records[f"job{n}"].attempts == 1


PRODUCER = textwrap.dedent(
    """
    import sys
    import conveyor
    from tests.crash import crash_jobs
    q = conveyor.Queue(
        sys.argv[1], name=sys.argv[2], workers=0, allow_modules=[crash_jobs.__name__]
    )
    print("mapping", flush=True)
    q.map(crash_jobs.mark_item, [[sys.argv[3], f"job{n}"] for n in range(300)])  # waits
    """
)


def test_a_producer_killed_mid_map_loses_nothing_it_submitted(tmp_path: Path, store: Store) -> None:
    app = _app(tmp_path, store)
    marks = tmp_path / "marks"
    marks.mkdir()
    q = store.queue()
    producer = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, store.url, store.name, str(marks)],
        cwd=ROOT,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
    )
    try:
        assert producer.stdout is not None
        assert producer.stdout.readline().strip() == b"mapping"
        assert wait_until(lambda: q.size() > 0, SLOW)
        producer.send_signal(signal.SIGKILL)
        producer.wait(timeout=10)
    finally:
        producer.kill()
        producer.wait()
        if producer.stdout is not None:
            producer.stdout.close()
    submitted = q.size()
    if store.kind == "sqlite":
        assert submitted == 300  # map submits its jobs in one transaction: all of them
    else:
        assert 0 < submitted <= 300  # whole batches: what was stored must all run
    worker = _worker(tmp_path, app, "--burst")
    try:
        assert worker.wait(timeout=120) == 0
    finally:
        worker.kill()
    assert q.size("finished") == submitted
    q.close()
    assert len(list(marks.glob("*.end"))) == submitted
