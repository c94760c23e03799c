"""How the Redis backend wakes its waiters: a job made ready wakes one idle claimer (a marker
popped with BZPOPMIN), and the message of a job's end carries the job to a process that waits
for it. Against a real ``redis-server`` (the ``redis_url`` fixture)."""

from __future__ import annotations

import threading
import time

import pytest

redis = pytest.importorskip("redis")

import conveyor  # noqa: E402
from conveyor.backends.redis import keys  # noqa: E402
from conveyor.records import Finished  # noqa: E402
from tests.backends import sqlite_jobs  # noqa: E402
from tests.polling import wait_until  # noqa: E402

ALLOW = [sqlite_jobs.__name__]
#: the database of the test server these tests use, emptied before each (conftest.py)
DB = 3
WAIT = 10.0
MARKERS = keys.prefix("default") + "k:thread"


def blocked(client: redis.Redis, count: int) -> None:
    """Wait until ``count`` clients of the server are blocked (in BZPOPMIN)."""
    reached = wait_until(lambda: client.info("clients")["blocked_clients"] == count, WAIT, 0.005)
    assert reached, f"not {count} blocked clients"


def test_a_job_made_ready_wakes_one_idle_claimer(url: str, client: redis.Redis) -> None:
    """Two claimers wait for a job of their mode; one job put wakes one of them (the marker
    goes to one client), and a claim that finds nothing more leaves no marker behind."""
    with conveyor.Queue(url, allow_modules=ALLOW, workers=0) as q:
        backend = q.backend
        assert backend.claim("w/1", "thread", 1) == []
        since = backend.version("thread")
        returned: list[str] = []

        def claimer(name: str) -> None:
            backend.wait(since, WAIT, mode="thread")
            returned.append(name)

        threads = [threading.Thread(target=claimer, args=(f"c{i}",)) for i in range(2)]
        for t in threads:
            t.start()
        blocked(client, 2)
        job = q.put(sqlite_jobs.identity, args=(1,))
        wait_until(lambda: returned, WAIT, 0.005)
        assert len(returned) == 1
        blocked(client, 1)  # the other claimer still waits: nothing woke it
        assert client.zcard(MARKERS) == 0  # the one marker was taken
        (claimed,) = backend.claim("w/1", "thread", 1)
        assert claimed.id == job.id
        backend.wake()  # a wake reaches every claimer blocked in this backend
        for t in threads:
            t.join(WAIT)
        assert sorted(returned) == ["c0", "c1"]
        q.put(sqlite_jobs.identity, args=(2,))
        q.put(sqlite_jobs.identity, args=(3,))
        assert client.zcard(MARKERS) == 2  # a marker per job made ready
        assert len(backend.claim("w/1", "thread", 5)) == 2
        assert client.zcard(MARKERS) == 0  # nothing more may start: no marker left


def test_a_wake_before_the_claimer_blocks_is_not_lost(url: str, client: redis.Redis) -> None:
    """A claimer woken between reading the version and blocking returns at once."""
    with conveyor.Queue(url, allow_modules=ALLOW, workers=0) as q:
        backend = q.backend
        since = backend.version("thread")
        backend.wake()
        started = time.monotonic()
        assert backend.wait(since, WAIT, mode="thread") != since
        assert time.monotonic() - started < WAIT


def test_the_end_message_carries_a_waited_job_with_its_bytes(url: str) -> None:
    """A process that read a job not ended (a ``result()`` waiting) gets the job's hash in the
    message of its end, every byte as stored, and reads it from there."""
    raw = bytes(range(256)) + 'é\n"\\/'.encode()
    with (
        conveyor.Queue(url, allow_modules=ALLOW, workers=0) as here,
        conveyor.Queue(url, allow_modules=ALLOW, workers=0) as there,
    ):
        job = here.put(sqlite_jobs.identity, args=(1,))
        (record,) = here.backend.query(ids=[job.id])  # a waiter's look: marks the job
        assert record.status is conveyor.Status.WAITING
        since = here.backend.version()
        (claimed,) = there.backend.claim("w/1", "thread", 1)
        there.backend.report([Finished(job.id, claimed.attempt, raw)], worker="w/1", mode="thread")
        deadline = time.monotonic() + WAIT
        while here.backend._ended([job.id]) is None:
            assert time.monotonic() < deadline, "the end message did not come"
            since = here.backend.wait(since, WAIT)
        (h,) = here.backend._ended([job.id])
        assert h["result"] == raw
        assert h["status"] == b"finished"
        here.backend.forget([job.id])  # a change since: the message no longer stands for it
        assert here.backend._ended([job.id]) is None


def publishes(client: redis.Redis) -> int:
    """PUBLISH calls the server has run."""
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_publish", {}).get("calls", 0))


def test_a_result_waits_for_a_note_and_no_message_is_published(
    url: str, client: redis.Redis
) -> None:
    """A thread waiting for one job's result gets a note of its end on its own key: no change
    of the round trip is published, since no process asked for them (keys ``ends``, ``all``)."""
    with (
        conveyor.Queue(url, allow_modules=ALLOW, workers=0) as here,
        conveyor.Queue(url, allow_modules=ALLOW, workers=0) as there,
    ):
        before = publishes(client)
        job = here.put(sqlite_jobs.identity, args=(7,))
        results: list[object] = []
        waiter = threading.Thread(target=lambda: results.append(job.result(timeout=WAIT)))
        waiter.start()
        asked = wait_until(lambda: client.exists(keys.prefix("default") + "w:" + job.id), WAIT)
        assert asked, "the waiter did not ask for a note"
        (claimed,) = there.backend.claim("w/1", "thread", 1)
        encoded = there.backend.serializer.dumps(7)
        there.backend.report([Finished(job.id, claimed.attempt, encoded)], worker="w/1",
                             mode="thread")  # fmt: skip
        waiter.join(WAIT)
        assert results == [7]
        assert publishes(client) == before
        prefix = keys.prefix("default")
        assert client.exists(prefix + "ends", prefix + "all", prefix + "w:" + job.id) == 0


def test_a_wait_for_a_result_ends_at_the_timeout_and_a_late_note_misleads_no_one(
    url: str,
) -> None:
    """The wait gives up at its timeout; the note its job's end leaves later is not taken
    for the end of the next job waited for on the same thread."""
    with (
        conveyor.Queue(url, allow_modules=ALLOW, workers=0) as here,
        conveyor.Queue(url, allow_modules=ALLOW, workers=0) as there,
    ):
        first = here.put(sqlite_jobs.identity, args=(1,))
        with pytest.raises(TimeoutError):
            first.result(timeout=0.05)
        second = here.put(sqlite_jobs.identity, args=(2,))
        with pytest.raises(TimeoutError):
            second.result(timeout=0.05)
        for _ in range(2):
            (claimed,) = there.backend.claim("w/1", "thread", 1)
            if claimed.id == first.id:
                encoded = there.backend.serializer.dumps(1)
                there.backend.report([Finished(first.id, claimed.attempt, encoded)],
                                     worker="w/1", mode="thread")  # fmt: skip
        # the first job's note waits on this thread's key; the second has not ended
        with pytest.raises(TimeoutError):
            second.result(timeout=0.2)
        assert first.result(timeout=WAIT) == 1


def test_a_job_that_expires_while_its_result_is_awaited_ends_the_wait(url: str) -> None:
    """No worker runs: the wait wakes at the job's expiry (the next timer, read with the job)
    and sees it cancelled."""
    with conveyor.Queue(url, allow_modules=ALLOW, workers=0) as q:
        job = q.put(sqlite_jobs.identity, args=(1,), expires=0.2)
        started = time.monotonic()
        with pytest.raises(conveyor.JobCancelled):
            job.result(timeout=WAIT)
        assert time.monotonic() - started < WAIT


def test_a_close_ends_a_wait_for_a_result(url: str) -> None:
    """A queue closed from another thread wakes a thread waiting for a result."""
    q = conveyor.Queue(url, allow_modules=ALLOW, workers=0)
    job = q.put(sqlite_jobs.identity, args=(1,))
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            job.result(timeout=WAIT)
        except BaseException as exc:  # what ended it is the point
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.2)
    q.close(wait=False)
    waiter.join(WAIT)
    assert not waiter.is_alive()
    assert errors and isinstance(errors[0], conveyor.QueueClosed)
