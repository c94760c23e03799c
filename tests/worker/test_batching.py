"""Batching on durable backends (``Worker(prefetch=N)``): claim jobs ahead while jobs are short,
hold reports back until the next backend call (a claim, a beat, a stop), put back the jobs
claimed ahead when stopping.

Most tests drive a worker that was never started from the test thread, as its slots would
(``claim(1)``, then ``finished(job, result, claim_next=1)``), on a real SQLite file, and read
what the file holds through a producer queue; the queue's clock is a ManualClock, so recorded
times are exact. The last tests run real embedded and standalone workers end to end.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import conveyor
from conveyor import JobRecord, Status
from conveyor.backends.sqlite import backend as sqlite_rules
from conveyor.executors import build
from conveyor.records import RunnableJob
from conveyor.runner import run_worker
from conveyor.settings import DEFAULT_PREFETCH
from conveyor.testing import ManualClock
from conveyor.worker import PREFETCH_BELOW, Worker
from tests import jobs

#: what the durable queues here run: the shared jobs and this module's own
ALLOW = [jobs.__name__, __name__]

PREFETCH = 4
WAIT = 30  # seconds an end-to-end test waits for its jobs at most


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/queue.db"


@pytest.fixture
def queue(url: str, clock: ManualClock) -> Iterator[conveyor.Queue]:
    """A producer queue on a fresh file: the jobs' store, and how the test reads it."""
    q = conveyor.Queue(url, allow_modules=ALLOW, workers=0, clock=clock)
    yield q
    q.close()


@pytest.fixture
def make_worker(queue: conveyor.Queue) -> Callable[..., Worker]:
    """A batching worker on the queue's backend with one thread slot, never started."""

    def make(**kwargs: Any) -> Worker:
        kwargs.setdefault("prefetch", PREFETCH)
        return Worker(
            queue.backend, build("thread", 1), clock=queue.clock, codec=queue.codec, **kwargs
        )

    return make


def put(queue: conveyor.Queue, count: int) -> list[str]:
    """``count`` jobs ``double(n)`` with ids j0, j1, ... (claimed in that order)."""
    return [queue.put(jobs.double, args=(n,), id=f"j{n}").id for n in range(count)]


def run(job: RunnableJob) -> Any:
    assert job.fn is not None
    return job.fn(*job.args, **job.kwargs)


def ids(claimed: list[RunnableJob] | Any) -> list[str]:
    return [job.id for job in claimed]


def statuses(queue: conveyor.Queue, *job_ids: str) -> list[str]:
    return [str(queue.status(job_id)) for job_id in job_ids]


def warmed_up(worker: Worker) -> RunnableJob:
    """Run the first job (nothing known of runtimes: no extra claimed), then claim the next
    with the extra ones, as a slot does; return the job the slot got."""
    (first,) = worker.claim(1)
    (job,) = worker.finished(first, run(first), claim_next=1)
    return job


# --------------------------------------------------------------------- claiming ahead
def test_the_first_claim_takes_one_job_as_no_runtime_is_known(queue, make_worker):
    put(queue, 10)
    worker = make_worker()

    claimed = worker.claim(1)

    assert ids(claimed) == ["j0"]
    assert list(worker._claims.at_hand) == []
    assert list(worker.running) == ["j0"]
    assert queue.size("running") == 1 and queue.size("waiting") == 9


def test_after_a_short_job_a_claim_takes_prefetch_more(queue, make_worker):
    put(queue, 10)
    worker = make_worker()
    (first,) = worker.claim(1)

    claimed = worker.finished(first, run(first), claim_next=1)

    assert ids(claimed) == ["j1"]
    assert ids(worker._claims.at_hand) == ["j2", "j3", "j4", "j5"]
    assert sorted(worker.running) == ["j1", "j2", "j3", "j4", "j5"]
    assert queue.result("j0", timeout=0) == 0  # the report went with that claim
    assert statuses(queue, *[f"j{n}" for n in range(1, 6)]) == ["running"] * 5
    assert queue.size("waiting") == 4
    # every job claimed ahead is this worker's: its recorded worker names the worker
    assert all(queue.job(f"j{n}").worker.startswith(worker.id + "/") for n in range(1, 6))


def test_long_recent_jobs_claim_nothing_ahead(queue, make_worker):
    put(queue, 10)
    worker = make_worker()
    (first,) = worker.claim(1)
    threading.Event().wait(PREFETCH_BELOW * 2)  # the slot is busy past PREFETCH_BELOW

    claimed = worker.finished(first, run(first), claim_next=1)

    assert ids(claimed) == ["j1"]
    assert list(worker._claims.at_hand) == []
    assert queue.size("running") == 1
    assert queue.result("j0", timeout=0) == 0


def test_a_long_moving_average_claims_nothing_ahead(queue, make_worker):
    put(queue, 10)
    worker = make_worker()
    (first,) = worker.claim(1)
    worker._claims.recent_runtime = 1.0  # the jobs before it were long

    (second,) = worker.finished(first, run(first), claim_next=1)  # a short one: 0.8 s average
    (third,) = worker.finished(second, run(second), claim_next=1)

    assert (second.id, third.id) == ("j1", "j2")
    assert list(worker._claims.at_hand) == []
    assert queue.size("running") == 1
    assert statuses(queue, "j0", "j1") == ["finished", "finished"]  # each written at once


def test_max_jobs_turns_prefetch_off(queue, make_worker):
    put(queue, 10)
    worker = make_worker(max_jobs=5)
    (first,) = worker.claim(1)

    (second,) = worker.finished(first, run(first), claim_next=1)
    (third,) = worker.finished(second, run(second), claim_next=1)

    assert (second.id, third.id) == ("j1", "j2")
    assert (worker._claims.prefetch, worker._claims.holds_back) == (0, False)  # none at hand
    assert statuses(queue, "j0", "j1", "j2") == ["finished", "finished", "running"]
    assert queue.size("running") == 1


def test_prefetch_must_not_be_negative(queue):
    with pytest.raises(ValueError, match="prefetch"):
        Worker(queue.backend, build("thread", 1), prefetch=-1)


# ------------------------------------------------------------------- held-back reports
def test_jobs_at_hand_are_given_in_order_and_their_reports_go_with_the_next_claim(
    queue, make_worker
):
    put(queue, 12)
    worker = make_worker()
    job = warmed_up(worker)
    given = [job.id]

    # when the slot runs the jobs at hand one after the other
    while worker._claims.at_hand:
        (job,) = worker.finished(job, run(job), claim_next=1)
        given.append(job.id)
        # then no report is written while the jobs come from at hand
        assert statuses(queue, "j1", "j2", "j3", "j4") == ["running"] * 4

    assert given == ["j1", "j2", "j3", "j4", "j5"]
    assert sorted(worker.running) == ["j1", "j2", "j3", "j4", "j5"]

    # when the last one at hand ends: one call writes every report and claims ahead again
    (job,) = worker.finished(job, run(job), claim_next=1)

    assert job.id == "j6"
    assert [queue.result(f"j{n}", timeout=0) for n in range(6)] == [0, 2, 4, 6, 8, 10]
    assert ids(worker._claims.at_hand) == ["j7", "j8", "j9", "j10"]
    assert sorted(worker.running) == ["j10", "j6", "j7", "j8", "j9"]
    assert queue.size("running") == 5 and queue.size("waiting") == 1


def test_beat_writes_the_reports_held_back(queue, make_worker):
    put(queue, 10)
    worker = make_worker()
    job = warmed_up(worker)
    (next_job,) = worker.finished(job, run(job), claim_next=1)
    assert next_job.id == "j2"
    assert queue.status("j1") == "running"

    worker.beat()

    assert queue.result("j1", timeout=0) == 2
    # the jobs at hand stay claimed: the beat renewed their leases, it did not drop them
    assert ids(worker._claims.at_hand) == ["j3", "j4", "j5"]
    assert sorted(worker.running) == ["j2", "j3", "j4", "j5"]
    assert statuses(queue, "j2", "j3", "j4", "j5") == ["running"] * 4


def test_the_recorded_start_is_when_the_slot_took_the_job_not_the_claim(queue, make_worker, clock):
    put(queue, 10)
    worker = make_worker()
    claim_time = clock.now()
    job = warmed_up(worker)  # j1 given, j2..j5 claimed ahead, all at claim_time

    clock.advance(1)
    (job,) = worker.finished(job, run(job), claim_next=1)  # j2 given at +1
    clock.advance(1)
    (job,) = worker.finished(job, run(job), claim_next=1)  # j3 given at +2
    clock.advance(1)
    worker.beat()

    j1, j2 = queue.job("j1"), queue.job("j2")
    assert j1.started == JobRecord.timestamp(claim_time)
    assert j2.started == JobRecord.timestamp(claim_time + 1)
    assert j1.started <= j1.ended and j2.started <= j2.ended


def test_a_job_taken_from_at_hand_that_fails_records_when_the_slot_took_it(
    queue, make_worker, clock
):
    put(queue, 10)
    worker = make_worker()
    claim_time = clock.now()
    job = warmed_up(worker)
    clock.advance(1)
    (job,) = worker.finished(job, run(job), claim_next=1)  # j2 given at +1
    clock.advance(1)

    worker.failed(job, ValueError("on purpose"))

    record = queue.job("j2")
    assert record.status == Status.FAILED
    assert record.started == JobRecord.timestamp(claim_time + 1)


def test_no_start_time_is_kept_for_jobs_that_failed_or_were_stopped(queue, make_worker):
    put(queue, 10)
    worker = make_worker()
    job = warmed_up(worker)
    (second,) = worker.finished(job, run(job), claim_next=1)
    assert sorted(worker._claims.given) == ["j2"]

    worker.failed(second, ValueError("on purpose"))
    (third,) = worker.claim(1)
    queue.cancel(third.id)
    worker.stop_job(third.id, "cancelled")

    assert (second.id, third.id) == ("j2", "j3")
    assert worker._claims.given == {}
    assert statuses(queue, "j2", "j3") == ["failed", "cancelled"]


def test_a_held_back_report_records_when_the_job_ended(queue, make_worker, clock):
    put(queue, 10)
    worker = make_worker()
    start = clock.now()
    job = warmed_up(worker)  # j1 given at start
    clock.advance(1)
    (job,) = worker.finished(job, run(job), claim_next=1)  # j1 ends at +1, j2 given
    clock.advance(1)
    worker.beat()  # the report of j1 is written at +2

    j1 = queue.job("j1")
    assert j1.ended == JobRecord.timestamp(start + 1)
    assert j1.runtime == pytest.approx(1)
    # one slot ran j1 then j2: once both are reported, their records do not overlap (while
    # j2 runs, its record shows the claim's time: its start is written with its report)
    worker.finished(job, run(job), claim_next=1)
    worker.beat()
    assert j1.ended <= queue.job("j2").started


def test_a_long_job_that_fails_stops_the_claims_ahead(queue, make_worker):
    put(queue, 12)
    worker = make_worker()
    job = warmed_up(worker)
    while worker._claims.at_hand:
        worker.failed(job, ValueError("quick failure"))
        (job,) = worker.claim(1)
    assert job.id == "j5"
    threading.Event().wait(PREFETCH_BELOW * 10)  # the last one runs long before it fails

    worker.failed(job, ValueError("slow failure"))
    claimed = worker.claim(1)

    assert ids(claimed) == ["j6"]
    assert list(worker._claims.at_hand) == []  # nothing claimed ahead after a long job


# ------------------------------------------------------------------------------ stopping
def test_stop_claiming_writes_the_reports_and_puts_the_jobs_at_hand_back(queue, make_worker):
    put(queue, 10)
    changes: list[str] = []
    worker = make_worker(on_change=lambda: changes.append("changed"))
    job = warmed_up(worker)
    (in_slot,) = worker.finished(job, run(job), claim_next=1)  # j1 held back, j2 in the slot
    assert in_slot.id == "j2"

    worker.stop_claiming()
    heard = len(changes)

    assert queue.result("j1", timeout=0) == 2
    for job_id in ("j3", "j4", "j5"):  # back to waiting, their attempt not counted
        record = queue.job(job_id)
        assert (record.status, record.attempts) == (Status.WAITING, 0)
    assert list(worker._claims.at_hand) == []
    assert list(worker.running) == ["j2"]  # the job in the slot runs on
    assert queue.status("j2") == "running"
    assert worker.ran == 3  # j0, j1, j2

    # the slot ends its job: reported at once, nothing more claimed, the worker is idle
    assert worker.finished(in_slot, run(in_slot), claim_next=1) == []
    assert queue.result("j2", timeout=0) == 4
    assert worker.running == {}
    assert worker.wait_idle(0)
    assert len(changes) > heard  # whoever waits for the stop hears that the last job ended
    assert queue.size("running") == 0 and queue.size("waiting") == 7

    # another worker gets the jobs put back first, as first attempts
    other = make_worker(prefetch=0)
    assert [(job.id, job.attempt) for job in other.claim(3)] == [("j3", 1), ("j4", 1), ("j5", 1)]


def test_requeue_running_writes_the_reports_and_puts_back_the_rest(queue, make_worker):
    put(queue, 10)
    worker = make_worker()
    job = warmed_up(worker)
    (in_slot,) = worker.finished(job, run(job), claim_next=1)

    requeued = worker.requeue_running()

    assert queue.result("j1", timeout=0) == 2
    assert sorted(requeued) == ["j2", "j3", "j4", "j5"]
    assert [queue.job(f"j{n}").attempts for n in range(2, 6)] == [0, 0, 0, 0]
    assert worker.running == {} and list(worker._claims.at_hand) == []
    assert queue.size("finished") == 2 and queue.size("waiting") == 8
    # the slot's late report of the job put back is dropped
    assert worker.finished(in_slot, run(in_slot)) == []
    assert queue.status("j2") == "waiting"


def test_stop_job_takes_a_job_off_hand_so_it_is_never_given(queue, make_worker):
    put(queue, 10)
    worker = make_worker()
    job = warmed_up(worker)
    assert queue.cancel("j3") is True  # the queue's own workers do not include this one

    worker.stop_job("j3", "cancelled")

    assert ids(worker._claims.at_hand) == ["j2", "j4", "j5"]
    assert "j3" not in worker.running
    given = [job.id]
    while worker._claims.at_hand:
        (job,) = worker.finished(job, run(job), claim_next=1)
        given.append(job.id)
    worker.finished(job, run(job))
    assert given == ["j1", "j2", "j4", "j5"]
    assert statuses(queue, "j1", "j2", "j3", "j4", "j5") == [
        "finished", "finished", "cancelled", "finished", "finished",
    ]  # fmt: skip


def test_a_job_at_hand_cancelled_elsewhere_is_dropped_at_the_next_beat(queue, make_worker):
    put(queue, 10)
    worker = make_worker()
    job = warmed_up(worker)
    other = conveyor.Queue(queue.url, allow_modules=ALLOW, workers=0)  # as another process would
    try:
        assert other.cancel("j4") is True
    finally:
        other.close()

    worker.beat()

    assert ids(worker._claims.at_hand) == ["j2", "j3", "j5"]
    assert "j4" not in worker.running
    given = [job.id]
    while worker._claims.at_hand:
        (job,) = worker.finished(job, run(job), claim_next=1)
        given.append(job.id)
    assert given == ["j1", "j2", "j3", "j5"]
    assert queue.status("j4") == "cancelled"


# ----------------------------------------------------------------------- who batches
def test_embedded_workers_batch_on_durable_backends_only(url):
    memory = conveyor.Queue("memory://", workers=1, prefetch=3)
    durable = conveyor.Queue(url, allow_modules=ALLOW, workers=1)
    durable_set = conveyor.Queue(url, allow_modules=ALLOW, workers=1, prefetch=3)
    try:
        assert memory.embedded.start()._claims.prefetch == 0
        assert durable.embedded.start()._claims.prefetch == DEFAULT_PREFETCH == 8
        assert durable_set.embedded.start()._claims.prefetch == 3
    finally:
        for q in (memory, durable, durable_set):
            q.close()


def test_standalone_workers_batch_on_durable_backends_only(url):
    from conveyor.runner import _Runner

    memory = conveyor.Queue("memory://", workers=0, prefetch=3)
    durable = conveyor.Queue(url, allow_modules=ALLOW, workers=0, prefetch=3)
    try:
        for queue, expected in ((memory, 0), (durable, 3)):
            runner = _Runner(queue, "thread", 1, None, False)
            try:
                assert runner.worker._claims.prefetch == expected
            finally:
                runner._wake_r.close()
                runner._wake_w.close()
    finally:
        memory.close()
        durable.close()


# ------------------------------------------------------------------------ end to end
def test_embedded_workers_run_300_tiny_jobs_with_right_results_and_times(url):
    with conveyor.Queue(url, allow_modules=ALLOW, workers=2) as q:
        handles = [q.put(jobs.double, args=(n,), id=f"job{n}") for n in range(300)]

        assert [h.result(timeout=WAIT) for h in handles] == [2 * n for n in range(300)]
        assert q.wait(timeout=WAIT) == 0
        records = {r.id: r for r in q.jobs()}

    assert len(records) == 300
    for n in range(300):
        record = records[f"job{n}"]
        assert (record.status, record.attempts, record.result) == (Status.FINISHED, 1, 2 * n)
        assert record.submitted <= record.started <= record.ended


def test_embedded_workers_keep_dependencies_and_lanes_while_batching(url):
    with conveyor.Queue(url, allow_modules=ALLOW, workers=2) as q:
        chain = [q.put(jobs.double, args=(0,), id="c0")]
        for n in range(1, 30):
            chain.append(q.put(jobs.double, args=(n,), id=f"c{n}", after=[f"c{n - 1}"]))
        lane = [q.put(jobs.double, args=(n,), id=f"l{n}", lane="one") for n in range(30)]
        free = [q.put(jobs.double, args=(n,), id=f"f{n}") for n in range(100)]

        for handles in (chain, lane, free):
            assert [h.result(timeout=WAIT) for h in handles] == [2 * n for n in range(len(handles))]
        records = {r.id: r for r in q.jobs()}

    for prefix in ("c", "l"):  # each started once the one before had ended
        for n in range(1, 30):
            before, after = records[f"{prefix}{n - 1}"], records[f"{prefix}{n}"]
            assert before.ended <= after.started, (before, after)


def test_a_burst_worker_drains_a_durable_queue_in_batches(url):
    q = conveyor.Queue(url, allow_modules=ALLOW, workers=0)
    try:
        handles = [q.put(jobs.double, args=(n,)) for n in range(200)]

        ran = run_worker(q, workers=2, burst=True, handle_signals=False)

        assert ran == 200
        assert [h.result(timeout=0) for h in handles] == [2 * n for n in range(200)]
        assert q.size("running") == 0 and q.size("waiting") == 0
    finally:
        q.close()


# -------------------------------------------------------- SQLite before RETURNING (3.35)
def test_reports_are_written_the_same_without_update_returning(
    queue, make_worker, clock, monkeypatch
):
    monkeypatch.setattr(sqlite_rules, "RETURNING", False)
    put(queue, 10)
    worker = make_worker()
    claim_time = clock.now()
    job = warmed_up(worker)  # j0 reported through the older path
    clock.advance(1)
    (job,) = worker.finished(job, run(job), claim_next=1)  # j2 given at +1
    queue.cancel("j3")
    worker.stop_job("j3", "cancelled")
    (job,) = worker.finished(job, run(job), claim_next=1)
    worker.beat()

    assert [queue.result(f"j{n}", timeout=0) for n in range(3)] == [0, 2, 4]
    assert queue.job("j2").started == JobRecord.timestamp(claim_time + 1)
    assert queue.status("j3") == "cancelled"
    assert job.id == "j4"


# ------------------------------------------------------- backend errors, callbacks, idle slots
def test_reports_survive_a_failed_write_and_go_with_the_next(queue, make_worker, monkeypatch):
    put(queue, 10)
    worker = make_worker()
    job = warmed_up(worker)
    worker.finished(job, run(job), claim_next=1)  # j1's report held back
    held = [report.job_id for report in worker._reports.finished]
    # another process holds the write lock longer than this backend waits for it
    monkeypatch.setattr("conveyor.backends.sqlite.storage.BUSY_TIMEOUT", 0.05)
    other = sqlite3.connect(queue.backend.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(conveyor.StorageError, match="database is locked"):
        worker._reports.write()
    other.execute("ROLLBACK")
    other.close()
    # the report is still pending, its job still the worker's; the next write records it
    assert [report.job_id for report in worker._reports.finished] == held == ["j1"]
    assert "j1" in worker.running
    worker.beat()
    assert statuses(queue, "j1") == ["finished"]
    assert "j1" not in worker.running


def test_a_callback_may_put_a_job_and_wait_for_it(url):
    # a done callback runs on the thread that writes the report: it must hold no worker lock,
    # or the other slot could not claim the job the callback waits for
    with conveyor.Queue(url, allow_modules=ALLOW, workers=2) as q:
        followed: list[Any] = []

        def follow(record: JobRecord) -> None:
            if record.id == "first9":
                followed.append(q.put(jobs.double, args=(100,)).result(timeout=WAIT))

        q.on("finished", follow)
        firsts = [q.put(jobs.double, args=(n,), id=f"first{n}") for n in range(20)]
        assert [job.result(timeout=WAIT) for job in firsts] == [2 * n for n in range(20)]
        q.wait()
    assert followed == [200]


GATE = threading.Event()


def gated(value: int) -> int:
    """A job that runs until the test opens the gate."""
    if not GATE.wait(WAIT):
        raise TimeoutError("the gate stayed shut")
    return value


def test_jobs_at_hand_go_to_an_idle_slot_while_a_long_job_runs(url):
    GATE.clear()
    with conveyor.Queue(url, allow_modules=ALLOW, workers=2) as q:
        warm = [q.put(jobs.double, args=(n,)) for n in range(10)]  # short: claims go ahead
        assert [job.result(timeout=WAIT) for job in warm] == [2 * n for n in range(10)]
        long = q.put(gated, args=(1,))
        shorts = [q.put(jobs.double, args=(n,)) for n in range(6)]
        # every short job ends while the long one still runs, whichever slot claimed them
        assert [job.result(timeout=WAIT) for job in shorts] == [2 * n for n in range(6)]
        assert q.status(long.id) == Status.RUNNING
        GATE.set()
        assert long.result(timeout=WAIT) == 1
