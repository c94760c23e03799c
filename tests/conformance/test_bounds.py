"""Bounds at put (issue: safe by default): every numeric option finite and within what the
backend and the clock can hold, names that every backend can store, meta that every backend
keeps as it is. A bad value raises InvalidJob naming the limit, identically on every backend,
and changes nothing; values at the edge of a bound are taken and cannot upset a worker."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

import pytest

import conveyor
from tests.conformance import jobs

CENTURIES = 300 * 365 * 86400
#: the bound conveyor documents for durations and for how far ahead ``at`` may lie
MAX_SECONDS = 100 * 365.25 * 86400

#: case -> (put options, words the message must hold)
BAD_OPTIONS: dict[str, tuple[dict[str, object], str]] = {
    "timeout-inf": ({"timeout": math.inf}, "finite"),
    "timeout-nan": ({"timeout": math.nan}, "finite"),
    "timeout-centuries": ({"timeout": CENTURIES}, "100 years"),
    "timeout-huge-int": ({"timeout": 10**400}, "finite"),
    "delay-inf": ({"delay": math.inf}, "finite"),
    "delay-centuries": ({"delay": CENTURIES}, "100 years"),
    "at-year-9999": ({"at": datetime(9999, 1, 1, tzinfo=UTC)}, "100 years"),
    "at-inf": ({"at": math.inf}, "finite"),
    "at-huge": ({"at": 1e300}, "100 years"),
    "at-negative": ({"at": -5.0}, ">= 0"),
    "expires-inf": ({"expires": math.inf}, "finite"),
    "expires-centuries": ({"expires": CENTURIES}, "100 years"),
    "retry-delay-inf": ({"retry_delay": math.inf, "retries": 1}, "finite"),
    "retry-delay-nan": ({"retry_delay": math.nan, "retries": 1}, "finite"),
    "backoff-inf": ({"backoff": math.inf, "retries": 1}, "finite"),
    "backoff-nan": ({"backoff": math.nan, "retries": 1}, "finite"),
    "unique-for-inf": ({"unique": "k", "unique_for": math.inf}, "finite"),
    "priority-over-64-bits": ({"priority": 2**63}, "between"),
    "priority-under-64-bits": ({"priority": -(2**63) - 1}, "between"),
    "retries-too-many": ({"retries": 10**9}, "between"),
    "lane-int-over-64-bits": ({"lane": 2**64}, "between"),
    "lane-lone-surrogate": ({"lane": "disk\ud800"}, "surrogate"),
    "lane-nul": ({"lane": "a\x00b"}, "NUL"),
    "after-lone-surrogate": ({"after": ["\udc80"]}, "surrogate"),
    "exclusive-lone-surrogate": ({"exclusive": ["db\ud800"]}, "surrogate"),
    "exclusive-empty": ({"exclusive": [""]}, "non-empty"),
    "incompatible-lone-surrogate": ({"incompatible": ["\udfff"]}, "surrogate"),
    "unique-lone-surrogate": ({"unique": "key\ud800"}, "surrogate"),
    "meta-not-a-dict": ({"meta": []}, "dict"),
    "meta-nan": ({"meta": {"score": math.nan}}, "JSON"),
    "meta-int-key": ({"meta": {1: "one"}}, "JSON"),
    "meta-set": ({"meta": {"tags": {"a", "b"}}}, "JSON"),
    "meta-object": ({"meta": {"lock": object()}}, "JSON"),
    "meta-tuple": ({"meta": {"pair": (1, 2)}}, "JSON"),
    "meta-lone-surrogate": ({"meta": {"note": "x\ud800"}}, "JSON"),
    "meta-nested-int-key": ({"meta": {"a": [{"b": {2: 3}}]}}, "JSON"),
}

BAD_IDS = {
    "lone-surrogate": "job\ud800",
    "nul": "a\x00b",
    "not-a-string": 42,
}


@pytest.fixture
def queue(queue_factory):
    q = queue_factory(workers=0)
    q.put(jobs.identity, args=(1,), id="taken")
    return q


def _snapshot(q):
    return q.size(), [r.as_dict() for r in q.jobs()]


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_an_out_of_bounds_option_is_refused_naming_the_limit(queue, case):
    options, words = BAD_OPTIONS[case]
    before = _snapshot(queue)

    with pytest.raises(conveyor.InvalidJob) as caught:
        queue.put(jobs.identity, args=(3,), **options)

    assert words in str(caught.value)
    assert _snapshot(queue) == before


@pytest.mark.parametrize("case", list(BAD_IDS))
def test_an_id_no_backend_can_store_is_refused(queue, case):
    before = _snapshot(queue)

    with pytest.raises(conveyor.InvalidJob, match="job id"):
        queue.put(jobs.identity, args=(3,), id=BAD_IDS[case])

    assert _snapshot(queue) == before


def test_a_task_name_no_backend_can_store_is_refused(queue):
    with pytest.raises(conveyor.InvalidJob, match="surrogate"):
        queue.task(name="resize\ud800")(jobs.identity)


def test_values_at_the_edge_of_the_bounds_are_taken_as_given(queue):
    from conveyor.job import MAX_SECONDS as documented

    assert documented == MAX_SECONDS
    now = time.time()
    job = queue.put(
        jobs.identity,
        args=(3,),
        id="edge",
        priority=2**63 - 1,
        retries=1_000_000,
        timeout=30 * 86400,
        at=now + MAX_SECONDS - 3600,
        expires=MAX_SECONDS,
        lane=-(2**63),
        meta={"nested": {"list": [1, 2.5, None, True, "é"]}},
    )

    record = job.record()
    assert record.status == "scheduled"
    assert record.priority == 2**63 - 1
    assert record.lane == -(2**63)
    assert record.meta == {"nested": {"list": [1, 2.5, None, True, "é"]}}


def test_an_odd_but_valid_id_round_trips(queue):
    odd = "line one\nline two\t" + "é" * 3 + "😀" + "x" * 10_000

    job = queue.put(jobs.identity, args=(3,), id=odd)

    assert job.id == odd
    assert queue.job(odd).id == odd


@pytest.mark.timeout(30)
def test_a_job_a_century_ahead_does_not_stop_idle_workers(queue_factory, board):
    q = queue_factory(workers=2)
    far = q.put(jobs.identity, args=(1,), delay=99 * 365 * 86400)

    assert q.put(jobs.record, args=(board.key, "now")).result(timeout=10) == "now"
    assert far.status == "scheduled"
    assert q.put(jobs.record, args=(board.key, "again")).result(timeout=10) == "again"


@pytest.mark.timeout(30)
def test_a_huge_backoff_caps_the_retry_delay_and_the_workers_go_on(queue_factory, board):
    q = queue_factory(workers=2)
    job = q.put(jobs.fail, args=(board.key, "doomed"), retries=2, retry_delay=0.01, backoff=1e200)
    deadline = time.monotonic() + 10
    while job.record().attempts < 2 or job.status != "scheduled":
        assert time.monotonic() < deadline, f"second failure never recorded: {job.record()}"
        time.sleep(0.01)

    # the next retry waits the longest delay a job may have, not 1e198 seconds
    assert q.put(jobs.record, args=(board.key, "after")).result(timeout=10) == "after"
    assert job.status == "scheduled"


@pytest.mark.needs_local_clock
@pytest.mark.timeout(30)
def test_a_backoff_past_float_range_still_retries_and_fails_cleanly(queue_factory, board, clock):
    q = queue_factory(workers=1, clock=clock)
    job = q.put(jobs.fail, args=(board.key, "doomed"), retries=3, retry_delay=1, backoff=1e200)

    for attempt in (1, 2, 3):
        board.wait_for(lambda a=attempt: job.record().attempts == a and job.status == "scheduled")
        clock.advance(MAX_SECONDS)

    with pytest.raises(conveyor.JobFailed, match="failed on purpose"):
        job.result(timeout=10)
    assert job.record().attempts == 4
