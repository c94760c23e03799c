"""mode="process": persistent worker processes, cloudpickle, recycling, timeouts, dead children."""

from __future__ import annotations

import contextlib
import multiprocessing.connection
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import conveyor
from conveyor import JobCancelled, JobFailed, NotSerializable, Status, UnknownJob
from conveyor.executors.process import ProcessExecutor
from tests import jobs
from tests.executors import proc_jobs
from tests.faults import process_gone
from tests.polling import wait_until

WAIT = 10  # seconds a test waits for something that should happen soon (forks included)


@pytest.fixture
def make_process_queue(make_queue) -> Iterator[Callable[..., conveyor.Queue]]:
    """Process queues closed gracefully (``close(wait=True)``) after the test, so every test
    also ends through the graceful shutdown; close(wait=False) has a test of its own."""
    built: list[conveyor.Queue] = []

    def make(**kwargs) -> conveyor.Queue:
        queue = make_queue(mode="process", **kwargs)
        built.append(queue)
        return queue

    yield make
    for queue in built:
        if queue.wait(timeout=WAIT) == 0:
            queue.close(wait=True)


def test_jobs_run_in_a_few_persistent_processes(make_process_queue):
    # given a process queue with two workers
    q = make_process_queue(workers=2)
    # when 20 jobs report their pid
    pids = q.map(proc_jobs.pid_of, range(20))
    # then they ran in other processes, and in no more processes than workers
    assert len(pids) == 20
    assert os.getpid() not in pids
    assert 1 <= len(set(pids)) <= 2


def test_lambdas_and_closures_run_in_a_process(make_process_queue):
    # given a process queue
    q = make_process_queue(workers=1)
    offset = 100

    def add_offset(x: int) -> tuple[int, int]:
        return x + offset, os.getpid()

    # when a lambda and a closure are put
    squared = q.put(lambda x: x * x, args=(7,))
    closed = q.put(add_offset, args=(5,))
    # then they ran in the worker process with their captured values
    assert squared.result(timeout=WAIT) == 49
    value, child = closed.result(timeout=WAIT)
    assert value == 105
    assert child != os.getpid()
    assert q.map(lambda x: x - offset, [100, 101]) == [0, 1]


def test_an_unpicklable_argument_is_refused_at_put_and_changes_nothing(make_process_queue):
    # given a process queue holding one finished job
    q = make_process_queue(workers=1)
    assert q.put(jobs.double, args=(1,), id="before").result(timeout=WAIT) == 2
    before = [r.id for r in q.jobs()]
    # when a job's argument cannot be pickled
    with pytest.raises(NotSerializable):
        q.put(jobs.echo, args=(threading.Lock(),), id="locked")
    with pytest.raises(NotSerializable):
        q.put(jobs.echo, kwargs={"lock": threading.Lock()})
    # then nothing was stored
    assert [r.id for r in q.jobs()] == before
    assert q.size() == 1
    with pytest.raises(UnknownJob):
        q.status("locked")
    # and the id is still free for a good job
    assert q.put(jobs.double, args=(3,), id="locked").result(timeout=WAIT) == 6


def test_a_function_that_cannot_be_pickled_is_refused_at_put(make_process_queue):
    # given a closure over something that cannot be pickled
    q = make_process_queue(workers=1)
    lock = threading.Lock()
    # when it is put / then NotSerializable, and nothing was stored
    with pytest.raises(NotSerializable):
        q.put(lambda: lock.locked(), id="closure")
    assert q.size() == 0
    with pytest.raises(UnknownJob):
        q.status("closure")


def test_a_result_that_cannot_be_pickled_fails_the_job_and_the_process_lives_on(
    make_process_queue,
):
    # given one worker process that has run a job
    q = make_process_queue(workers=1)
    first = q.put(proc_jobs.pid_of).result(timeout=WAIT)
    # when a job returns something that cannot be sent back
    job = q.put(threading.Lock)
    # then the job failed, saying why
    with pytest.raises(JobFailed) as failure:
        job.result(timeout=WAIT)
    assert failure.value.error_type == "NotSerializable"
    assert "pickle" in failure.value.error
    # and the same process runs the next job
    assert q.put(proc_jobs.pid_of).result(timeout=WAIT) == first


def test_not_serializable_is_an_invalid_job():
    # given the error tree / then a user can catch NotSerializable as InvalidJob and ValueError
    assert issubclass(NotSerializable, conveyor.InvalidJob)
    assert issubclass(NotSerializable, ValueError)


def test_context_runs_once_per_process(make_process_queue):
    # given a process queue whose context function counts its calls in each process
    q = make_process_queue(workers=2, context=proc_jobs.counting_context)
    # when many jobs read the context
    reports = [q.put(proc_jobs.context_report).result(timeout=WAIT) for _ in range(6)]
    reports += q.map(lambda _x: proc_jobs.context_report(), range(10))
    # then in every process the context function ran exactly once, before the jobs
    for child, value, calls in reports:
        assert child != os.getpid()
        assert value["pid"] == child
        assert calls == 1
    # and all jobs of one process saw the same value
    tokens: dict[int, set[str]] = {}
    for child, value, _ in reports:
        tokens.setdefault(child, set()).add(value["token"])
    assert all(len(seen) == 1 for seen in tokens.values())
    assert len(tokens) <= 2


def test_max_jobs_per_process_recycles_the_worker_process(make_process_queue):
    # given one worker process replaced after 3 jobs
    q = make_process_queue(workers=1, max_jobs_per_process=3)
    # when 9 jobs run one after another
    pids = [q.put(proc_jobs.pid_of).result(timeout=WAIT) for _ in range(9)]
    # then they ran in exactly 3 processes, 3 jobs each, in turn
    assert len(set(pids)) == 3
    assert pids[0] == pids[1] == pids[2]
    assert pids[3] == pids[4] == pids[5]
    assert pids[6] == pids[7] == pids[8]


def test_max_jobs_per_process_can_come_from_the_settings(make_process_queue):
    # given the setting as a keyword
    q = make_process_queue(workers=1, max_jobs_per_process=2)
    # then it is a setting of the queue, and 4 jobs use 2 processes
    assert q.settings.max_jobs_per_process == 2
    assert len({q.put(proc_jobs.pid_of).result(timeout=WAIT) for _ in range(4)}) == 2


def test_a_job_past_its_timeout_is_killed_and_the_next_runs_in_a_fresh_process(make_process_queue):
    # given one worker process that has run a job
    q = make_process_queue(workers=1)
    first = q.put(proc_jobs.pid_of).result(timeout=WAIT)
    # when a job spins past its timeout
    spinner = q.put(jobs.spin_forever, timeout=0.5)
    with pytest.raises(JobFailed) as failure:
        spinner.result(timeout=WAIT)
    # then it failed with TimeoutError and its process was killed
    assert failure.value.error_type == "TimeoutError"
    assert spinner.status is Status.FAILED
    assert wait_until(lambda: process_gone(first))
    # and the next job runs in a fresh process
    after = q.put(proc_jobs.pid_of).result(timeout=WAIT)
    assert after not in (first, os.getpid())


@pytest.mark.parametrize(
    "dies", [proc_jobs.exit_hard, proc_jobs.kill_self], ids=["os._exit", "sigkill"]
)
def test_a_child_that_dies_fails_its_job_with_worker_died(make_process_queue, dies):
    # given one worker process
    q = make_process_queue(workers=1)
    first = q.put(proc_jobs.pid_of).result(timeout=WAIT)
    # when a job kills its own process
    doomed = q.put(dies)
    # then that job failed with WorkerDied
    with pytest.raises(JobFailed) as failure:
        doomed.result(timeout=WAIT)
    assert failure.value.error_type == "WorkerDied"
    assert doomed.status is Status.FAILED
    # and the next job runs, in a new process
    after = q.put(proc_jobs.pid_of).result(timeout=WAIT)
    assert after != first


def test_a_failing_job_carries_the_remote_traceback(make_process_queue):
    # given a process job that raises
    q = make_process_queue(workers=1)
    job = q.put(proc_jobs.raise_from_a_named_function, args=(7,))
    # when its result is asked
    with pytest.raises(JobFailed) as failure:
        job.result(timeout=WAIT)
    # then the error says what was raised and the traceback text names the function
    error = failure.value
    assert error.error_type == "RuntimeError"
    assert error.error == "RuntimeError: bad value 7"
    assert error.traceback is not None
    assert "raise_from_a_named_function" in error.traceback
    assert "raise_from_a_named_function" in str(error)
    assert job.record().traceback == error.traceback
    # and the worker process survived the exception
    assert q.put(jobs.double, args=(5,)).result(timeout=WAIT) == 10


def test_cancelling_a_running_process_job_kills_its_process(make_process_queue, tmp_path):
    # given a process job that announced its pid and spins
    q = make_process_queue(workers=1)
    marker = tmp_path / "pid"
    job = q.put(proc_jobs.write_pid_then_spin, args=(str(marker),))
    assert wait_until(marker.exists), "the job never started"
    child = int(marker.read_text())
    assert job.status is Status.RUNNING
    # when it is cancelled
    assert job.cancel() is True
    # then result() raises JobCancelled and its process is gone
    with pytest.raises(JobCancelled):
        job.result(timeout=WAIT)
    assert job.status is Status.CANCELLED
    assert wait_until(lambda: process_gone(child)), "the cancelled job's process still runs"
    # and the next job runs in a fresh process
    assert q.put(proc_jobs.pid_of).result(timeout=WAIT) not in (child, os.getpid())


def test_close_without_waiting_stops_every_worker_process(make_queue):
    # given a process queue whose workers have run jobs
    q = make_queue(workers=3, mode="process")
    pids = set(q.map(proc_jobs.pid_of, range(12)))
    # when it is closed without waiting / then no error, and its processes are gone
    q.close(wait=False)
    assert all(wait_until(lambda pid=pid: process_gone(pid)) for pid in pids)
    with pytest.raises(conveyor.QueueClosed):
        q.put(proc_jobs.pid_of)


def test_close_without_waiting_closes_each_pipe_once(make_queue, monkeypatch):
    # given a process queue whose idle slot thread holds a live child
    q = make_queue(workers=1, mode="process")
    assert q.put(proc_jobs.pid_of).result(timeout=WAIT) != os.getpid()
    # and the interleaving that made about half of all close(wait=False) calls fail (the slot
    # thread and stop() both killing the child and closing its pipe) made certain: the slot's
    # clean-up starts once stop() tears the same child down, and two closes of one pipe would
    # meet inside Connection.close
    stop_dropping = threading.Event()
    original_drop = ProcessExecutor._drop

    def drop(self, child, *, kill):
        if threading.current_thread().name.startswith("conveyor-process-slot"):
            stop_dropping.wait(1)
        else:
            stop_dropping.set()
        original_drop(self, child, kill=kill)

    meet = threading.Barrier(2, timeout=0.3)

    def close(self, _close=os.close):  # Connection._close, with a meeting point added
        handle = self._handle
        with contextlib.suppress(threading.BrokenBarrierError):  # alone: carry on
            meet.wait()
        _close(handle)

    errors: list[BaseException] = []
    monkeypatch.setattr(ProcessExecutor, "_drop", drop)
    monkeypatch.setattr(multiprocessing.connection.Connection, "_close", close)
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    slot_threads = list(q.embedded.start("process").executor._threads)
    # when the queue is closed without waiting
    try:
        q.close(wait=False)
    except OSError as exc:
        errors.append(exc)
    for thread in slot_threads:
        thread.join(WAIT)
    # then neither the caller nor the slot thread met an error closing the pipe
    if errors:
        raise errors[0]


def test_a_worker_process_that_died_while_idle_does_not_fail_the_next_job(make_process_queue):
    # given one worker process, idle after a job
    q = make_process_queue(workers=1)
    child = q.put(proc_jobs.pid_of).result(timeout=WAIT)
    # when it is killed from outside while it has no job
    os.kill(child, 9)
    # gone for good: reaped, not a zombie whose other threads still hold its pipe open
    assert wait_until(lambda: not Path(f"/proc/{child}").exists())
    # then the next job still runs, in a fresh process
    job = q.put(proc_jobs.pid_of)
    assert job.result(timeout=WAIT) not in (child, os.getpid())
    assert job.record().attempts == 1


def test_progress_reaches_the_worker_until_the_timeout_kills_the_process(make_process_queue):
    # given a worker process that has run a job of the module (imported: it starts at once)
    q = make_process_queue(workers=1)
    q.put(proc_jobs.pid_of).result(timeout=WAIT)
    # when a job reports progress, then sleeps past its timeout
    job = q.put(proc_jobs.progress_then_sleep, args=(0.3, "stuck here"), timeout=1.0)
    with pytest.raises(JobFailed) as failure:
        job.result(timeout=WAIT)
    # then it failed with TimeoutError, its record keeping where it got
    assert failure.value.error_type == "TimeoutError"
    record = job.record()
    assert (record.progress, record.progress_message) == (0.3, "stuck here")
    # and the next job, in a fresh process, reports its own progress
    after = q.put(proc_jobs.progress_then_return, args=(1.0, "done"))
    assert after.result(timeout=WAIT) == "done"
    assert (after.record().progress, after.record().progress_message) == (1.0, "done")
