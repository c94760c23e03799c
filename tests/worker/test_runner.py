"""run_worker on the memory backend, in this process: max_jobs, burst, graceful and immediate
stops on real signals, the heartbeat, the worker registry."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import conveyor
from conveyor import Status
from conveyor.runner import run_worker
from tests import jobs
from tests.worker import proc_jobs

WAIT = 5  # seconds a test waits for something that should happen at once


def wait_for(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Set at teardown, so no job blocked on it outlives its test."""
    event = threading.Event()
    yield event
    event.set()


class Blocker:
    """A job that blocks on ``gate`` the first time it runs and returns at once afterwards."""

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls == 1:
            self.gate.wait(WAIT * 2)
        return "done"


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``fn`` in a thread; its return value lands in the list."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def signal_when(
    condition: Callable[[], bool], *signums: signal.Signals, between: Callable[[], bool] | None
) -> threading.Thread:
    """From a helper thread: once ``condition()`` holds, send ``signums`` to this process
    (waiting for ``between()`` before each one after the first). Sends nothing if the
    condition never holds, so a broken worker fails its test rather than killing pytest."""

    def send() -> None:
        if not wait_for(condition):
            return
        for n, signum in enumerate(signums):
            if n and between is not None and not wait_for(between):
                return
            os.kill(os.getpid(), signum)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


# ---------------------------------------------------------------------- max_jobs
def test_max_jobs_runs_that_many_then_returns(make_queue):
    # given five jobs and a worker with more slots than it may run jobs
    q = make_queue(workers=0)
    handles = [q.submit(jobs.double, n) for n in range(5)]
    # when it runs with max_jobs=3
    ran = run_worker(q, workers=4, max_jobs=3, handle_signals=False)
    # then exactly three ran and two still wait
    assert ran == 3
    assert sorted(h.status for h in handles).count(Status.FINISHED) == 3
    assert q.size(Status.WAITING) == 2


def test_max_jobs_waits_for_its_jobs_to_end_even_past_graceful_timeout(make_queue):
    # given a job longer than the queue's graceful_timeout
    q = make_queue(workers=0, graceful_timeout=0.01)
    job = q.submit(jobs.sleep_then, 0.2, "slow")
    # when a worker runs its one job
    ran = run_worker(q, workers=1, max_jobs=1, handle_signals=False)
    # then that job was let finish: graceful_timeout is for stops asked from outside
    assert ran == 1
    assert job.result(timeout=0) == "slow"


# ------------------------------------------------------------------------- burst
def test_burst_drains_the_queue_then_returns(make_queue):
    # given a chain a -> b -> c (each unblocked by one this worker runs) and independent jobs
    q = make_queue(workers=0)
    a = q.put(jobs.sleep_then, args=(0.05, "a"), id="a")
    b = q.put(jobs.sleep_then, args=(0.0, "b"), id="b", after=["a"])
    c = q.put(jobs.sleep_then, args=(0.0, "c"), id="c", after=["b"])
    others = [q.submit(jobs.double, n) for n in range(5)]
    # when a burst worker with spare slots runs
    started = time.monotonic()
    ran = run_worker(q, workers=3, burst=True, handle_signals=False)
    # then everything ran, the chain included, and it returned soon after
    assert ran == 8
    assert [h.result(timeout=0) for h in (a, b, c)] == ["a", "b", "c"]
    assert [h.result(timeout=0) for h in others] == [0, 2, 4, 6, 8]
    assert time.monotonic() - started < WAIT


def test_burst_returns_at_once_when_nothing_may_start(make_queue):
    # given only a job scheduled for later
    q = make_queue(workers=0)
    later = q.put(jobs.double, args=(1,), delay=60)
    # when a burst worker runs
    started = time.monotonic()
    ran = run_worker(q, workers=2, burst=True, handle_signals=False)
    # then it ran nothing, left the job scheduled, and did not wait for it
    assert ran == 0
    assert later.status is Status.SCHEDULED
    assert time.monotonic() - started < 1


def test_burst_only_runs_jobs_of_its_mode(make_queue):
    # given a thread job and an async job
    q = make_queue(workers=0)
    threaded = q.submit(jobs.double, 2)
    coroutine = q.task(mode="async")(jobs.async_double).enqueue(3)
    # when an async burst worker runs, then a thread one
    assert run_worker(q, workers=1, mode="async", burst=True, handle_signals=False) == 1
    assert threaded.status is Status.WAITING
    assert run_worker(q, workers=1, mode="thread", burst=True, handle_signals=False) == 1
    # then each ran the job of its mode
    assert coroutine.result(timeout=0) == 6
    assert threaded.result(timeout=0) == 4


# ---------------------------------------------------------------------- stopping
def test_sigterm_requeues_a_job_past_graceful_timeout_and_a_new_worker_finishes_it(
    make_queue, gate
):
    # given a job that blocks (the first time it runs) and a short graceful_timeout
    q = make_queue(workers=0, graceful_timeout=0.2)
    blocker = Blocker(gate)
    job = q.put(blocker, id="blocker")
    # when SIGTERM arrives while it runs
    signal_when(lambda: job.status is Status.RUNNING, signal.SIGTERM, between=None)
    ran = run_worker(q, workers=2)
    # then the worker gave up on it: back to waiting, its attempt not counted
    assert ran == 0
    record = q.job("blocker")
    assert (record.status, record.attempts) == (Status.WAITING, 0)
    # and a new worker runs it to completion
    assert run_worker(q, workers=1, burst=True, handle_signals=False) == 1
    assert job.result(timeout=0) == "done"
    assert q.job("blocker").attempts == 1


def test_sigterm_lets_a_job_that_ends_in_time_finish_and_claims_no_more(make_queue, gate, caplog):
    # given a running job, another waiting, and a generous graceful_timeout
    q = make_queue(workers=0, graceful_timeout=WAIT)
    first = q.put(gate.wait, args=(WAIT,), id="first")
    second = q.put(jobs.double, args=(1,), id="second")
    caplog.set_level(logging.INFO, logger="conveyor.runner")
    # when SIGTERM arrives while the first runs, and the first ends once it was handled
    signal_when(lambda: first.status is Status.RUNNING, signal.SIGTERM, between=None)

    def release_once_stopping() -> None:
        if wait_for(lambda: "stopping;" in caplog.text):
            gate.set()

    threading.Thread(target=release_once_stopping, daemon=True).start()
    ran = run_worker(q, workers=1)
    # then the running job finished, and the waiting one was not started
    assert ran == 1
    assert first.result(timeout=0) is True
    assert second.status is Status.WAITING


def test_a_second_sigint_requeues_at_once(make_queue, gate, caplog):
    # given a blocking job and a graceful_timeout far longer than the test
    q = make_queue(workers=0, graceful_timeout=60)
    job = q.put(Blocker(gate), id="blocker")
    caplog.set_level(logging.INFO, logger="conveyor.runner")
    # when SIGINT arrives twice while it runs (the second after the first was handled)
    signal_when(
        lambda: job.status is Status.RUNNING,
        signal.SIGINT,
        signal.SIGINT,
        between=lambda: "stopping;" in caplog.text,
    )
    started = time.monotonic()
    ran = run_worker(q, workers=1)
    # then it stopped long before graceful_timeout, and the job waits again
    assert time.monotonic() - started < WAIT
    assert ran == 0
    record = q.job("blocker")
    assert (record.status, record.attempts) == (Status.WAITING, 0)


def test_sigint_handlers_are_restored(make_queue):
    # given the handlers installed before
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    q = make_queue(workers=0)
    # when a worker with signal handling runs and returns
    run_worker(q, workers=1, burst=True)
    # then the previous handlers are back
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_stop_requeues_a_process_job_and_kills_its_process(make_queue, tmp_path):
    # given a process job that records its pid, then sleeps
    q = make_queue(workers=0, mode="process", graceful_timeout=0.2)
    pid_file = tmp_path / "pid"
    job = q.put(proc_jobs.write_pid_then_sleep, args=(str(pid_file), 60), id="sleeper")
    # when SIGTERM arrives while it runs
    signal_when(pid_file.exists, signal.SIGTERM, between=None)
    ran = run_worker(q, workers=1)
    # then the job waits again, and the process that ran it is gone
    assert ran == 0
    assert (job.status, q.job("sleeper").attempts) == (Status.WAITING, 0)
    pid = int(pid_file.read_text())
    assert wait_for(lambda: not _alive(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --------------------------------------------------------------------- heartbeat
def test_heartbeat_stops_a_job_cancelled_elsewhere(make_queue, gate):
    # given a worker (short lease: frequent heartbeats) running a job that loops until stopped
    q = make_queue(workers=0, lease=0.3)
    started, exited = threading.Event(), threading.Event()

    def loop() -> None:
        started.set()
        try:
            while not gate.is_set():
                time.sleep(0.005)
        finally:
            exited.set()

    job = q.put(loop)
    runner, out = in_thread(lambda: run_worker(q, workers=1, burst=True))
    assert started.wait(WAIT)
    # when the job is cancelled through the queue (the worker is not told directly)
    assert job.cancel()
    # then the heartbeat finds it is no longer the worker's and stops it
    assert exited.wait(WAIT)
    runner.join(WAIT)
    assert out == [1]
    assert job.status is Status.CANCELLED


@pytest.mark.parametrize("prefetch", [0, 8])
def test_a_heartbeat_crossing_a_report_does_not_stop_the_job_that_ended(
    make_queue, caplog, prefetch
):
    # given a worker whose heartbeat beats while a job's report is being written: the
    # backend answers that the job is no longer the worker's (it has ended)
    q = make_queue(workers=0)
    worker = conveyor.worker.Worker(
        q.backend, conveyor.runner.build_executor(q, "thread", 1), prefetch=prefetch
    )
    beaten: list[str] = []

    def beat_now(record: conveyor.JobRecord) -> None:  # in the report's step
        beaten.append(record.id)
        worker.beat()

    q.on("finished", beat_now)
    caplog.set_level(logging.INFO, logger="conveyor.worker")
    worker.start()
    try:
        # when a job runs and its report is written
        job = q.put(jobs.double, args=(2,))
        assert job.result(timeout=WAIT) == 4
    finally:
        worker.stop()
    # then the beat crossed the report, and the job was not said to be stopped nor counted
    # cancelled: it finished
    assert beaten == [job.id]
    assert "stopped:" not in caplog.text
    assert worker.ran == 1


def test_heartbeat_keeps_a_job_longer_than_its_lease_claimed_on_sqlite(make_queue, tmp_path):
    # given a durable queue whose lease is a fraction of a job's run time
    q = make_queue(
        "sqlite:///" + str(tmp_path / "q.db"), workers=0, lease=0.3, allow_modules=[jobs.__name__]
    )
    job = q.submit(jobs.sleep_then, 1.0, "late")
    # when a worker runs it while lease recovery runs all along, as another process would
    runner, out = in_thread(lambda: run_worker(q, workers=1, burst=True))
    recovered = 0
    while runner.is_alive():
        recovered += q.backend.recover_expired()
        runner.join(0.05)
    # then the heartbeat renewed the lease: the job was never taken back, and ran once
    assert recovered == 0
    assert out == [1]
    assert job.result(timeout=0) == "late"
    assert q.job(job.id).attempts == 1


def test_worker_is_registered_while_it_runs(make_queue, gate):
    # given a worker running a blocking job
    q = make_queue(workers=0)
    job = q.put(gate.wait, args=(WAIT,))
    runner, out = in_thread(lambda: run_worker(q, workers=2, burst=True))
    assert wait_for(lambda: job.status is Status.RUNNING)
    # then the backend lists it, and the job names it as its worker
    (info,) = q.backend.workers()
    assert (info.pid, info.mode, info.slots) == (os.getpid(), "thread", 2)
    assert (q.job(job.id).worker or "").startswith(info.id + "/")
    # and once it returns it is gone
    gate.set()
    runner.join(WAIT)
    assert out == [1]
    assert q.backend.workers() == []


# -------------------------------------------------------------- the Worker alone
def test_worker_stop_zero_requeues_running_jobs(make_queue, gate):
    # given a worker running a blocking job
    q = make_queue(workers=0)
    worker = conveyor.worker.Worker(q.backend, conveyor.runner.build_executor(q, "thread", 1))
    worker.start()
    job = q.put(Blocker(gate))
    assert wait_for(lambda: job.status is Status.RUNNING)
    # when it stops with no grace
    requeued = worker.stop(0)
    # then the job waits again, uncounted, and the worker runs nothing
    assert requeued == [job.id]
    assert (job.status, q.job(job.id).attempts) == (Status.WAITING, 0)
    assert worker.running == {}
    assert worker.ran == 0


def test_bad_arguments_are_refused(make_queue):
    q = make_queue(workers=0)
    with pytest.raises(ValueError, match="mode"):
        run_worker(q, mode="inline")
    with pytest.raises(ValueError, match="max_jobs"):
        run_worker(q, max_jobs=0)
    with pytest.raises(ValueError, match="workers"):
        run_worker(q, workers=0)
