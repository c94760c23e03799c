"""A job made ready while a worker slot idles is handed over to that slot: the step that made it
ready starts it for the slot and puts it on the slot's own key, where the slot blocks, so the
slot makes no claim of its own. Registrations as idle end with the slot's next claim, lapse
after IDLE_TTL seconds, and a job handed to a slot that never took it comes back. Against a
real ``redis-server`` (the ``url`` fixture)."""

from __future__ import annotations

import threading

import pytest

redis = pytest.importorskip("redis")

import conveyor  # noqa: E402
from conveyor.backends.redis import keys, markers  # noqa: E402
from conveyor.testing import ManualClock  # noqa: E402
from tests.backends import sqlite_jobs  # noqa: E402
from tests.polling import wait_until  # noqa: E402

ALLOW = [sqlite_jobs.__name__]
#: the database of the test server these tests use, emptied before each (conftest.py)
DB = 4
WAIT = 10.0
PREFIX = keys.prefix("default")
IDLE = PREFIX + "i:thread"
MARKERS = PREFIX + "k:thread"
#: the leases of the workers of registered slots
LEASES = PREFIX + "il"


def hand(slot: str) -> str:
    return PREFIX + "h:" + slot


def fcalls(client: redis.Redis) -> int:
    """FCALLs the server has run (every client's)."""
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_fcall", {}).get("calls", 0))


def test_a_job_put_while_a_slot_blocks_is_handed_to_it(url: str, client: redis.Redis) -> None:
    """The slot blocked in its wait gets the job started for it, and takes it with no script
    of its own; nothing is left on its key, no marker and no registration."""
    with conveyor.Queue(url, allow_modules=ALLOW, workers=0) as q:
        backend = q.backend
        got: list[object] = []
        blocking = threading.Event()

        def slot() -> None:
            assert backend.claim("w/1", "thread", 1) == []  # the slot of this thread
            since = backend.version("thread")
            blocking.set()
            backend.wait(since, WAIT, mode="thread")
            before = fcalls(client)
            got.extend(backend.claim("w/1", "thread", 1))
            got.append(fcalls(client) - before)

        t = threading.Thread(target=slot)
        t.start()
        blocking.wait(WAIT)
        registered = wait_until(lambda: client.zscore(IDLE, "w/1") is not None, WAIT, 0.005)
        assert registered, "the slot did not register as idle"
        job = q.put(sqlite_jobs.identity, args=(1,))
        t.join(WAIT)
        assert [c.id for c in got[:-1]] == [job.id]  # type: ignore[attr-defined]
        assert got[-1] == 0  # taken without a script
        record = q.job(job.id)
        assert record.status is conveyor.Status.RUNNING
        assert record.worker == "w/1"
        assert record.attempts == 1
        assert client.exists(hand("w/1"), MARKERS) == 0
        assert client.zscore(IDLE, "w/1") is None
        assert client.hlen(LEASES) == 0  # nothing kept of a registration that ended


def test_a_hand_over_is_the_slots_next_claim_or_goes_back(url: str, client: redis.Redis) -> None:
    """A job handed to a slot that did not block for it is its next claim's first job; a
    claim of nothing puts it back to waiting, its attempt not counted."""
    with conveyor.Queue(url, allow_modules=ALLOW, workers=0) as q:
        backend = q.backend
        backend.run("idle", "w/1", "thread", markers.IDLE_TTL)
        first = q.put(sqlite_jobs.identity, args=(1,))
        assert client.zcard(hand("w/1")) == 1
        assert q.job(first.id).status is conveyor.Status.RUNNING
        second = q.put(sqlite_jobs.identity, args=(2,))  # no slot idles: a marker
        assert q.job(second.id).status is conveyor.Status.WAITING
        assert client.zcard(MARKERS) == 1
        claimed = backend.claim("w/1", "thread", 2)
        assert [c.id for c in claimed] == [first.id, second.id]
        assert [c.attempt for c in claimed] == [1, 1]

        backend.run("idle", "w/2", "thread", markers.IDLE_TTL)
        third = q.put(sqlite_jobs.identity, args=(3,))
        assert q.job(third.id).worker == "w/2"
        backend.report((), worker="w/2", mode="thread", claim=0)
        record = q.job(third.id)
        assert record.status is conveyor.Status.WAITING
        assert record.attempts == 0
        assert client.exists(hand("w/2")) == 0
        assert client.zscore(IDLE, "w/2") is None
        assert client.hlen(LEASES) == 0


def test_a_lapsed_registration_gets_nothing(url: str, client: redis.Redis) -> None:
    """A slot that did not renew its registration (its process died) is dropped, not handed a
    job: the job waits with a marker for the claimers."""
    with conveyor.Queue(url, allow_modules=ALLOW, workers=0) as q:
        q.backend.run("idle", "w/1", "thread", -1)  # lapsed a second ago
        job = q.put(sqlite_jobs.identity, args=(1,))
        assert q.job(job.id).status is conveyor.Status.WAITING
        assert client.zcard(MARKERS) == 1
        assert client.exists(IDLE, hand("w/1"), LEASES) == 0


def test_a_job_handed_to_a_dead_slot_comes_back_after_the_lease(
    url: str, client: redis.Redis
) -> None:
    """The slot registered, then its process died before it took the job: once the lease of
    the slot's worker (not the producer's) runs out the job waits again, that attempt not
    counted, and the hand-over is gone."""
    clock = ManualClock()
    with (
        conveyor.Queue(url, allow_modules=ALLOW, workers=0, clock=clock, lease=600) as q,
        conveyor.Queue(url, allow_modules=ALLOW, workers=0, clock=clock, lease=5) as worker,
    ):
        worker.backend.run("idle", "gone/1", "thread", markers.IDLE_TTL)
        job = q.put(sqlite_jobs.identity, args=(1,))
        assert q.job(job.id).worker == "gone/1"
        clock.advance(6)
        assert q.backend.recover_expired() == 1
        record = q.job(job.id)
        assert record.status is conveyor.Status.WAITING
        assert record.attempts == 0
        assert "never started: attempt not counted" in (record.error or "")
        assert client.exists(hand("gone/1")) == 0


def test_a_worker_that_stops_idling_leaves_no_registration(url: str, client: redis.Redis) -> None:
    """A worker's idle slots register while they block; once it stops, none is left, and a job
    put afterwards waits for the next worker."""
    with conveyor.Queue(url, allow_modules=ALLOW, workers=2) as q:
        assert q.put(sqlite_jobs.identity, args=(1,)).result(timeout=WAIT) == 1
        registered = wait_until(lambda: client.zcard(IDLE) >= 2, WAIT, 0.005)
        assert registered, "the slots did not register as idle"
    with conveyor.Queue(url, allow_modules=ALLOW, workers=0) as q:
        assert client.zcard(IDLE) == 0
        assert client.hlen(LEASES) == 0
        job = q.put(sqlite_jobs.identity, args=(2,))
        assert q.job(job.id).status is conveyor.Status.WAITING
