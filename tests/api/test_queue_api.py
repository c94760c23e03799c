"""The Queue facade: submitting, waiting, popping, looking, handles, tasks, events, settings."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Iterator

import pytest

import conveyor
from conveyor import (
    InvalidJob,
    JobCancelled,
    JobFailed,
    JobRecord,
    QueueClosed,
    QueueFull,
    Status,
    UnknownJob,
)
from tests import jobs
from tests.polling import wait_until

WAIT = 5  # seconds a test waits for something that should happen at once


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event that blocking jobs wait on; always opened at teardown."""
    event = threading.Event()
    yield event
    event.set()


def block_worker(q: conveyor.Queue, gate: threading.Event) -> conveyor.Job:
    """Occupy one worker slot until ``gate`` opens; return once the job runs."""
    started = threading.Event()

    def hold() -> str:
        started.set()
        gate.wait(WAIT)
        return "held"

    job = q.put(hold, id="blocker")
    assert started.wait(WAIT), "the blocking job never started"
    return job


def maybe_fail(x: int) -> int:
    if x < 0:
        raise ArithmeticError(f"negative {x}")
    return x * 10


# ------------------------------------------------------------------------ put, submit, map


def test_put_and_submit_run_jobs_and_return_handles(make_queue):
    # given a queue
    q = make_queue(workers=2)
    # when jobs are put and submitted
    a = q.put(jobs.add, args=(1, 2))
    b = q.put(jobs.add, args=[1], kwargs={"b": 5}, id="b")
    c = q.submit(jobs.echo, 1, 2, key="v")
    # then the handles give their results, ids and records
    assert a.result(timeout=WAIT) == 3
    assert b.result(timeout=WAIT) == 6
    assert c.result(timeout=WAIT) == ((1, 2), {"key": "v"})
    assert b.id == "b"
    assert isinstance(a.id, str) and a.id
    assert len({a.id, b.id, c.id}) == 3
    assert q.status("b") is Status.FINISHED
    assert q.result("b") == 6
    record = q.job("b")
    assert isinstance(record, JobRecord)
    assert (record.args, record.kwargs) == ((1,), {"b": 5})
    assert record.task == "add"


def test_map_returns_results_in_input_order_even_when_they_end_in_reverse(make_queue):
    # given 4 workers and 4 jobs that end last-first: each waits for the next one to end
    q = make_queue(workers=4)
    ended = [threading.Event() for _ in range(4)]

    def step(i: int) -> int:
        if i < 3:
            assert ended[i + 1].wait(WAIT)
        ended[i].set()
        return i * 100

    # when mapped
    results = q.map(step, range(4))
    # then the results are in input order
    assert results == [0, 100, 200, 300]
    # and the map's jobs do not linger in the queue
    assert q.size() == 0
    assert q.collect() == []


def test_map_with_return_exceptions_puts_job_failed_in_place(make_queue):
    # given a function failing for negative items
    q = make_queue(workers=2)
    # when mapped with return_exceptions
    results = q.map(maybe_fail, [1, -2, 3, -4], return_exceptions=True)
    # then the failures are JobFailed objects at their inputs' places
    assert results[0] == 10 and results[2] == 30
    assert isinstance(results[1], JobFailed) and isinstance(results[3], JobFailed)
    assert results[1].error_type == "ArithmeticError"
    assert results[1].error == "ArithmeticError: negative -2"
    assert results[3].error == "ArithmeticError: negative -4"


def test_map_without_return_exceptions_raises_the_failure(make_queue):
    # given a function failing for one item
    q = make_queue(workers=2)
    # when mapped / then JobFailed is raised for that item
    with pytest.raises(JobFailed) as failure:
        q.map(maybe_fail, [1, 2, -3, 4])
    assert failure.value.error == "ArithmeticError: negative -3"
    # and nothing of the map is left behind once everything ended
    assert q.wait(timeout=WAIT) == 0
    assert q.collect() == []


def test_an_in_process_failure_is_chained_to_what_the_job_raised(make_queue):
    # given an in-process queue and a job that raises, retried once
    q = make_queue(workers=1)
    job = q.put(maybe_fail, args=(-1,), retries=1)
    # when its result is asked for / then JobFailed is raised from the exception itself
    with pytest.raises(JobFailed) as failure:
        job.result(timeout=WAIT)
    cause = failure.value.__cause__
    assert isinstance(cause, ArithmeticError) and str(cause) == "negative -1"
    # and so is the failure a map returns in place
    (failed,) = q.map(maybe_fail, [-2], return_exceptions=True)
    assert isinstance(failed.__cause__, ArithmeticError) and str(failed.__cause__) == "negative -2"


def test_map_of_nothing_is_an_empty_list(make_queue):
    q = make_queue(workers=1)
    assert q.map(jobs.double, []) == []


def test_map_passes_options_to_every_job(make_queue, gate):
    # given one busy worker
    q = make_queue(workers=1)
    block_worker(q, gate)
    seen: list[str] = []
    q.on("queued", lambda record: seen.append(f"{record.priority}/{record.lane}"))
    # when mapping with options
    done = threading.Thread(target=lambda: q.map(jobs.double, range(3), priority=7, lane="m"))
    done.start()
    assert wait_until(lambda: len(seen) == 3)
    gate.set()
    done.join(WAIT)
    # then each job carried them
    assert seen == ["7/m"] * 3
    assert not done.is_alive()


# ------------------------------------------------------------------ wait, get, collect, size


def test_wait_returns_zero_once_drained(make_queue):
    # given a few jobs
    q = make_queue(workers=2)
    handles = [q.put(jobs.double, args=(i,)) for i in range(10)]
    # when waiting / then nothing is left and every job finished
    assert q.wait(timeout=WAIT) == 0
    assert all(h.status is Status.FINISHED for h in handles)
    assert q.wait() == 0  # an idle queue returns at once


def test_wait_returns_how_many_are_left_on_timeout(make_queue, gate):
    # given one worker blocked and two jobs behind it
    q = make_queue(workers=1)
    block_worker(q, gate)
    q.put(jobs.double, args=(1,))
    q.put(jobs.double, args=(2,))
    # when waiting briefly / then the three unfinished jobs are counted
    assert q.wait(timeout=0.05) == 3
    # and once released, waiting drains the queue
    gate.set()
    assert q.wait(timeout=WAIT) == 0


def test_get_pops_one_ended_job_and_can_wait_for_one(make_queue, gate):
    # given a blocked job
    q = make_queue(workers=1)
    blocker = block_worker(q, gate)
    # when nothing has ended / then get returns None, at once or after its timeout
    assert q.get() is None
    assert q.get(wait=True, timeout=0.05) is None
    # when the job ends while get waits for it
    threading.Timer(0.05, gate.set).start()
    record = q.get(wait=True, timeout=WAIT)
    # then get returns its record and pops it from the queue
    assert record is not None
    assert record.id == blocker.id
    assert record.status is Status.FINISHED
    assert record.result == "held"
    assert q.size() == 0
    with pytest.raises(UnknownJob):
        q.status(blocker.id)
    assert q.get() is None


def test_collect_pops_every_ended_job_in_the_order_they_ended(make_queue):
    # given one worker and jobs that succeed and fail
    q = make_queue(workers=1)
    ids = [q.put(maybe_fail, args=(x,)).id for x in (1, -1, 2)]
    assert q.wait(timeout=WAIT) == 0
    # when collecting
    records = q.collect()
    # then every ended job comes back once, in the order they ended, and leaves the queue
    assert [r.id for r in records] == ids
    assert [r.status for r in records] == [Status.FINISHED, Status.FAILED, Status.FINISHED]
    assert records[0].result == 10
    assert records[1].error == "ArithmeticError: negative -1"
    assert q.size() == 0
    assert q.collect() == []


def test_size_counts_all_or_by_status(make_queue, gate):
    # given one running and two waiting jobs
    q = make_queue(workers=1)
    block_worker(q, gate)
    q.put(jobs.double, args=(1,))
    q.put(jobs.double, args=(2,))
    # then size counts them all, or by the statuses given (enum or string)
    assert q.size() == 3
    assert q.size("running") == 1
    assert q.size(Status.WAITING) == 2
    assert q.size("waiting", Status.RUNNING) == 3
    assert q.size("finished", "failed", "cancelled", "scheduled") == 0
    gate.set()
    assert q.wait(timeout=WAIT) == 0
    assert q.size("finished") == 3
    assert q.size() == 3


def test_jobs_lists_records_in_submission_order_and_filters_by_status(make_queue, gate):
    # given one running and two waiting jobs
    q = make_queue(workers=1)
    block_worker(q, gate)
    q.put(jobs.double, args=(1,), id="one")
    q.put(jobs.double, args=(2,), id="two", priority=-1)
    # then jobs() lists them in submission order, and filters by status
    assert [r.id for r in q.jobs()] == ["blocker", "one", "two"]
    assert [r.id for r in q.jobs(status="waiting")] == ["one", "two"]
    assert [r.id for r in q.jobs(status=Status.RUNNING)] == ["blocker"]
    assert q.jobs(status="failed") == []


def test_unknown_ids_raise_unknown_job(make_queue):
    q = make_queue(workers=1)
    for ask in (q.status, q.result, q.job, q.cancel):
        with pytest.raises(UnknownJob):
            ask("nope")


def test_result_by_id_times_out_on_a_running_job(make_queue, gate):
    q = make_queue(workers=1)
    blocker = block_worker(q, gate)
    with pytest.raises(TimeoutError):
        q.result(blocker.id, timeout=0.05)
    with pytest.raises(TimeoutError):
        blocker.result(timeout=0.05)


# ------------------------------------------------------------------------------ Job handle


def test_job_handle_status_done_wait_result_record(make_queue, gate):
    # given a running job
    q = make_queue(workers=1)
    job = block_worker(q, gate)
    # then the handle sees it running
    assert job.status is Status.RUNNING
    assert job.done() is False
    assert job.wait(timeout=0.05) is False
    # when it ends
    gate.set()
    assert job.wait(timeout=WAIT) is True
    # then the handle sees it finished
    assert job.done() is True
    assert job.status is Status.FINISHED
    assert job.result() == "held"
    record = job.record()
    assert record.id == job.id
    assert record.status is Status.FINISHED
    assert record.result == "held"
    assert record.attempts == 1
    assert record.started is not None and record.ended is not None
    assert record.submitted <= record.started <= record.ended
    assert record.runtime is not None and record.runtime >= 0
    assert record.worker


def test_job_handle_cancel(make_queue, gate):
    # given a waiting job behind a blocked worker
    q = make_queue(workers=1)
    block_worker(q, gate)
    waiting = q.put(jobs.double, args=(1,))
    assert waiting.status is Status.WAITING
    # when it is cancelled
    assert waiting.cancel() is True
    # then it is cancelled for good, and result() raises JobCancelled
    assert waiting.status is Status.CANCELLED
    assert waiting.done()
    with pytest.raises(JobCancelled) as cancelled:
        waiting.result(timeout=WAIT)
    assert cancelled.value.job_id == waiting.id
    # and it never runs once the worker is free
    gate.set()
    assert q.wait(timeout=WAIT) == 0
    assert waiting.status is Status.CANCELLED
    # and cancelling an ended job returns False
    finished = q.put(jobs.double, args=(2,))
    assert finished.result(timeout=WAIT) == 4
    assert finished.cancel() is False
    assert finished.status is Status.FINISHED


def test_add_done_callback_receives_the_job(make_queue, gate):
    # given a running job
    q = make_queue(workers=1)
    job = block_worker(q, gate)
    received: list[conveyor.Job] = []
    called = threading.Event()

    def callback(handle: conveyor.Job) -> None:
        received.append(handle)
        called.set()

    job.add_done_callback(callback)
    assert received == []
    # when it ends / then the callback got the Job handle, with the job done
    gate.set()
    assert called.wait(WAIT)
    assert received == [job]
    assert isinstance(received[0], conveyor.Job)
    assert received[0].done()
    # and a callback added after the end is called at once
    late: list[conveyor.Job] = []
    job.add_done_callback(late.append)
    assert late == [job]


def test_job_record_as_dict(make_queue):
    # given a finished job with metadata
    q = make_queue(workers=1)
    job = q.put(jobs.add, args=(1, 2), id="r", priority=2, lane="L", meta={"k": "v"})
    assert job.result(timeout=WAIT) == 3
    # when turned into a dict
    data = job.record().as_dict()
    # then it has every documented field, plain values
    assert set(data) == {
        "id",
        "task",
        "status",
        "args",
        "kwargs",
        "priority",
        "lane",
        "after",
        "exclusive",
        "incompatible",
        "attempts",
        "worker",
        "submitted",
        "started",
        "ended",
        "runtime",
        "result",
        "error",
        "traceback",
        "meta",
        "progress",
        "progress_message",
    }
    assert data["status"] == "finished"
    assert type(data["status"]) is str
    assert (data["id"], data["task"], data["result"]) == ("r", "add", 3)
    assert (data["priority"], data["lane"], data["meta"]) == (2, "L", {"k": "v"})
    assert data["args"] == (1, 2)
    assert data["error"] is None


# ------------------------------------------------------------------------------- max_size


def test_put_waits_for_room_under_max_size(make_queue, gate):
    # given max_size=1, a blocked worker and one job waiting
    q = make_queue(workers=1, max_size=1)
    block_worker(q, gate)
    q.put(jobs.double, args=(1,), id="second")
    # when a third job is put from another thread
    third: list[conveyor.Job] = []
    putter = threading.Thread(target=lambda: third.append(q.put(jobs.double, args=(3,))))
    putter.start()
    # then that put waits: the queue has no room
    putter.join(0.1)
    assert putter.is_alive()
    assert q.size() == 2
    # when the worker is free and takes the waiting job
    gate.set()
    # then the put goes through and its job runs
    putter.join(WAIT)
    assert not putter.is_alive()
    assert third[0].result(timeout=WAIT) == 6


def test_put_without_blocking_on_a_full_queue_raises_and_changes_nothing(make_queue, gate):
    # given max_size=1, a blocked worker and one job waiting
    q = make_queue(workers=1, max_size=1)
    block_worker(q, gate)
    q.put(jobs.double, args=(1,), id="second")
    before = [(r.id, r.status) for r in q.jobs()]
    # when a put may not wait
    with pytest.raises(QueueFull):
        q.put(jobs.double, args=(2,), id="third", block=False)
    # then the queue is unchanged
    assert [(r.id, r.status) for r in q.jobs()] == before
    with pytest.raises(UnknownJob):
        q.status("third")
    # and once there is room the same put succeeds
    gate.set()
    assert q.wait(timeout=WAIT) == 0
    assert q.put(jobs.double, args=(2,), id="third", block=False).result(timeout=WAIT) == 4


# ----------------------------------------------------------------------------------- tasks


def test_task_decorator_without_options(make_queue):
    # given a task
    q = make_queue(workers=2)

    @q.task
    def where(x: int) -> tuple[int, int]:
        return x * 3, threading.get_ident()

    here = threading.get_ident()
    # when called directly / then it runs here, now
    assert where(2) == (6, here)
    # when enqueued, put or mapped / then it runs in a worker
    value, ident = where.enqueue(2).result(timeout=WAIT)
    assert value == 6 and ident != here
    value, ident = where.put(args=(3,)).result(timeout=WAIT)
    assert value == 9 and ident != here
    assert [v for v, _ in where.map([1, 2, 3])] == [3, 6, 9]
    # and its jobs carry the function's qualified name as task name
    job = where.enqueue(1)
    job.wait(WAIT)
    assert job.record().task == where.__qualname__
    assert where.__name__ == "where"


def test_task_decorator_with_options(make_queue):
    # given a task with retries and a priority, failing its first attempt
    q = make_queue(workers=1)
    attempts: list[int] = []

    @q.task(retries=1, priority=3)
    def flaky(x: int) -> int:
        attempts.append(x)
        if len(attempts) == 1:
            raise OSError("first attempt fails")
        return x + 1

    # when enqueued / then the retry makes it succeed, and the defaults are on the job
    job = flaky.enqueue(41)
    assert job.result(timeout=WAIT) == 42
    record = job.record()
    assert record.attempts == 2
    assert record.priority == 3
    # and put options override the task's defaults
    other = flaky.put(args=(1,), priority=0)
    assert other.result(timeout=WAIT) == 2
    assert other.record().priority == 0


def test_task_name_option(make_queue):
    q = make_queue(workers=1)

    @q.task(name="reports.build")
    def build() -> str:
        return "ok"

    job = build.enqueue()
    assert job.result(timeout=WAIT) == "ok"
    assert job.record().task == "reports.build"


def test_a_task_may_override_the_queue_mode(make_queue):
    # given a thread queue with tasks in other modes
    q = make_queue(workers=1)

    @q.task(mode="async")
    async def on_loop(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    @q.task(mode="inline")
    def right_here() -> int:
        return threading.get_ident()

    @q.task(mode="process")
    def elsewhere() -> int:
        return os.getpid()

    # when enqueued / then each runs in its own mode
    assert on_loop.enqueue(1).result(timeout=WAIT) == 2
    inline = right_here.enqueue()
    assert inline.status is Status.FINISHED  # ran during the put
    assert inline.result() == threading.get_ident()
    assert elsewhere.enqueue().result(timeout=WAIT) != os.getpid()


@pytest.mark.parametrize(
    "options",
    [
        {"retries": -1},
        {"priority": "high"},
        {"bogus": 1},
        {"mode": "fibre"},
        {"max_concurrency": 0},
        {"timeout": -5},
    ],
    ids=["retries", "priority", "unknown", "mode", "max_concurrency", "timeout"],
)
def test_a_bad_task_option_raises_invalid_job_at_decoration(make_queue, options):
    # given a queue
    q = make_queue(workers=0)
    decorate = q.task(**options)
    # when the function is decorated / then InvalidJob is raised there, not at enqueue
    with pytest.raises(InvalidJob):

        @decorate
        def job() -> None: ...


# ---------------------------------------------------------------------------------- events


class Events:
    """Collects (event, job id, status) from callbacks in any thread."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Status]] = []
        self._cond = threading.Condition()

    def listen(self, q: conveyor.Queue, *names: str) -> None:
        for name in names:
            q.on(name, lambda record, name=name: self.add(name, record))

    def add(self, name: str, record: JobRecord) -> None:
        with self._cond:
            self.seen.append((name, record.id, record.status))
            self._cond.notify_all()

    def of(self, job_id: str) -> list[str]:
        with self._cond:
            return [name for name, seen_id, _ in self.seen if seen_id == job_id]

    def wait_for(self, job_id: str, count: int) -> list[str]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.of(job_id)) >= count, WAIT)
        return self.of(job_id)


def test_event_callbacks(make_queue, gate):
    # given listeners on every event, and a worker blocked so the jobs queue up first
    q = make_queue(workers=1)
    events = Events()
    events.listen(q, "queued", "started", "finished", "failed", "retrying", "cancelled")
    block_worker(q, gate)
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("once")
        return "ok"

    ok = q.put(jobs.double, args=(1,))
    bad = q.put(jobs.boom)
    retried = q.put(flaky, retries=1)
    dropped = q.put(jobs.double, args=(2,))
    # when one is cancelled while waiting and the others run
    dropped.cancel()
    gate.set()
    # then each job's events came in its life's order
    assert events.wait_for(ok.id, 3) == ["queued", "started", "finished"]
    assert events.wait_for(bad.id, 3) == ["queued", "started", "failed"]
    assert events.wait_for(retried.id, 5) == [
        "queued",
        "started",
        "retrying",
        "started",
        "finished",
    ]
    assert events.wait_for(dropped.id, 2) == ["queued", "cancelled"]
    # and the records handed over show the status of that moment
    statuses = {(name, job_id): status for name, job_id, status in events.seen}
    assert statuses[("finished", ok.id)] is Status.FINISHED
    assert statuses[("failed", bad.id)] is Status.FAILED
    assert statuses[("cancelled", dropped.id)] is Status.CANCELLED
    assert statuses[("queued", ok.id)] is Status.WAITING


def test_an_unknown_event_name_is_refused(make_queue):
    q = make_queue(workers=0)
    with pytest.raises(ValueError):
        q.on("exploded", lambda record: None)


def test_a_raising_callback_is_logged_and_the_job_still_finishes(make_queue, caplog):
    # given callbacks that raise on start and on finish
    q = make_queue(workers=1)
    calls: list[str] = []

    def broken(record: JobRecord) -> None:
        calls.append(record.id)
        raise RuntimeError("callback broke")

    q.on("started", broken)
    q.on("finished", broken)
    after: list[str] = []
    q.on("finished", lambda record: after.append(record.id))
    # when a job runs
    with caplog.at_level(logging.ERROR, logger="conveyor"):
        job = q.put(jobs.double, args=(21,))
        # then it still finishes, and later callbacks still run
        assert job.result(timeout=WAIT) == 42
        assert wait_until(lambda: after == [job.id])
    assert calls == [job.id, job.id]
    # and each failure was logged with its exception
    logged = [r for r in caplog.records if r.exc_info and "callback broke" in str(r.exc_info[1])]
    assert len(logged) == 2
    assert all(job.id in r.getMessage() for r in logged)
    assert q.wait(timeout=WAIT) == 0
    assert q.put(jobs.double, args=(1,)).result(timeout=WAIT) == 2


# --------------------------------------------------------------------------------- closing


def test_put_after_close_raises_queue_closed(make_queue):
    # given a closed queue
    q = make_queue(workers=1)
    assert q.put(jobs.double, args=(1,)).result(timeout=WAIT) == 2
    q.close()

    @q.task
    def task() -> None: ...

    # when anything is submitted / then QueueClosed
    with pytest.raises(QueueClosed):
        q.put(jobs.double, args=(1,))
    with pytest.raises(QueueClosed):
        q.submit(jobs.double, 1)
    with pytest.raises(QueueClosed):
        q.map(jobs.double, [1])
    with pytest.raises(QueueClosed):
        task.enqueue()
    q.close()  # closing twice is harmless


def test_close_waits_for_queued_jobs(make_queue):
    # given queued jobs
    q = make_queue(workers=2)
    handles = [q.put(jobs.sleep_then, args=(0.001, i)) for i in range(10)]
    # when closed (waiting by default) / then they all ended first
    q.close()
    assert [h.status for h in handles] == [Status.FINISHED] * 10


def test_with_block_closes_the_queue():
    with conveyor.Queue(workers=1) as q:
        job = q.put(jobs.double, args=(5,))
    assert job.status is Status.FINISHED
    with pytest.raises(QueueClosed):
        q.put(jobs.double, args=(1,))


# -------------------------------------------------------------------------------- progress


def test_map_with_progress_shows_a_tqdm_bar(make_queue, capsys):
    q = make_queue(workers=2)
    assert q.map(jobs.double, range(5), progress=True) == [0, 2, 4, 6, 8]
    err = capsys.readouterr().err
    assert "map double" in err
    assert "5/5" in err
    assert "100%" in err


def test_wait_with_progress_shows_a_tqdm_bar(make_queue, capsys):
    q = make_queue(workers=2, name="bars")
    for i in range(4):
        q.put(jobs.double, args=(i,))
    assert q.wait(timeout=WAIT, progress=True) == 0
    err = capsys.readouterr().err
    assert "queue bars" in err
    assert "4/4" in err


# -------------------------------------------------------------------------------- settings


def test_settings_from_the_environment(make_queue, monkeypatch):
    # given CONVEYOR_MAX_SIZE
    monkeypatch.setenv("CONVEYOR_MAX_SIZE", "1")
    # then a queue reads it
    assert make_queue(workers=0).settings.max_size == 1
    # and a named queue's own variable overrides it
    monkeypatch.setenv("REPORTS_MAX_SIZE", "5")
    assert make_queue(workers=0, name="reports").settings.max_size == 5
    assert make_queue(workers=0, name="other").settings.max_size == 1
    # and a keyword overrides both
    assert make_queue(workers=0, name="reports", max_size=9).settings.max_size == 9


def test_a_setting_from_the_environment_takes_effect(make_queue, monkeypatch, gate):
    # given max_size=1 from the environment, a blocked worker and one waiting job
    monkeypatch.setenv("CONVEYOR_MAX_SIZE", "1")
    q = make_queue(workers=1)
    block_worker(q, gate)
    q.put(jobs.double, args=(1,))
    # when another put may not wait / then the queue is full
    with pytest.raises(QueueFull):
        q.put(jobs.double, args=(2,), block=False)


def test_an_unknown_setting_keyword_raises_type_error():
    with pytest.raises(TypeError, match="bogus"):
        conveyor.Queue(workers=0, bogus=1)


def test_settings_defaults(make_queue):
    settings = make_queue(workers=0).settings
    assert settings.max_size is None
    assert settings.max_jobs_per_process is None
