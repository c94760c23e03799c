"""What only the Redis backend has: its key schema and hash tag, its Lua scripts (called by
SHA, loaded again after SCRIPT FLUSH), its errors naming the server, the memory a waiting job
takes, and a corrupt stored job failing alone. Against a real ``redis-server`` (the
``redis_url`` fixture); the rules themselves are the conformance suite's (variants ``redis``
and ``redis-process``)."""

from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path

import pytest

redis = pytest.importorskip("redis")

import conveyor  # noqa: E402
from conveyor.backends.redis import keys  # noqa: E402
from conveyor.backends.redis.scripts import ENTRIES, library, source  # noqa: E402
from conveyor.clock import ManualClock  # noqa: E402
from tests.backends import sqlite_jobs  # noqa: E402

ALLOW = [sqlite_jobs.__name__]
#: the database of the test server these tests use, emptied before each (conftest.py)
DB = 2
#: the most a waiting job without arguments may take in Redis, all its keys counted
MAX_BYTES_PER_JOB = 1024


def test_every_key_of_a_queue_shares_its_hash_tag(url: str, client: redis.Redis) -> None:
    from redis.crc import key_slot

    for name in ("default", "other"):
        with conveyor.Queue(url, name=name, allow_modules=ALLOW, workers=1) as q:
            a = q.put(sqlite_jobs.identity, args=(1,), lane="l", exclusive="g", delay=0.01)
            q.put(sqlite_jobs.identity, args=(2,), after=[a], retries=1)
            q.wait(timeout=10)
    found = [key.decode() for key in client.scan_iter("*")]
    assert found
    for name in ("default", "other"):
        mine = [key for key in found if key.startswith(keys.prefix(name))]
        assert len({key_slot(key.encode()) for key in mine}) == 1
        assert keys.prefix(name) == "{conveyor:" + name + "}:"
    assert all(key.startswith(("{conveyor:default}:", "{conveyor:other}:")) for key in found)


def test_a_rank_sorts_as_its_priority() -> None:
    priorities = [-(2**63), -5, -1, 0, 1, 7, 2**53 + 1, 2**63 - 1]
    ranks = [keys.rank(p) for p in priorities]
    assert sorted(ranks) == ranks
    assert {len(r) for r in ranks} == {16}


def test_a_refused_connection_names_the_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nothing listens on it once closed
    url = f"redis://:secret@127.0.0.1:{port}/0"
    with pytest.raises(conveyor.ConveyorError, match=f"127.0.0.1:{port}") as caught:
        conveyor.Queue(url, workers=0)
    assert "secret" not in str(caught.value)


def test_the_engine_is_loaded_once_and_comes_back_after_function_flush(
    url: str, client: redis.Redis
) -> None:
    """The library is loaded once per server and its functions called by name; a server that
    lost it (FUNCTION FLUSH, a restart without persistence) gets it again at the next call."""
    version, _ = library()
    with conveyor.Queue(url, allow_modules=ALLOW, workers=1) as q:
        assert q.put(sqlite_jobs.identity, args=(1,)).result(timeout=10) == 1
        assert f"conveyor_{version}" in _libraries(client)
        with conveyor.Queue(url, allow_modules=ALLOW, workers=0) as other:  # loads nothing new
            assert other.backend.scripts.version == version
        assert _libraries(client).count(f"conveyor_{version}") == 1
        client.function_flush()
        assert f"conveyor_{version}" not in _libraries(client)
        assert q.put(sqlite_jobs.identity, args=(2,)).result(timeout=10) == 2
        assert f"conveyor_{version}" in _libraries(client)


def _libraries(client: redis.Redis) -> list[str]:
    """The names of the server's function libraries (FUNCTION LIST: a flat list per one)."""
    return [dict(zip(e[::2], e[1::2], strict=True))[b"library_name"].decode()
            for e in client.function_list()]  # fmt: skip


def test_the_library_registers_every_entry_after_the_engine() -> None:
    version, body = library()
    assert body.startswith(f"#!lua name=conveyor_{version}\n-- The Redis engine")
    for name in ENTRIES:
        assert f"redis.register_function('conveyor_{version}_{name}'," in body
        assert "return finish(" in source(name)


def test_memory_per_waiting_job_without_arguments(url: str, client: redis.Redis) -> None:
    """Stated: a waiting job without arguments takes at most MAX_BYTES_PER_JOB in Redis, every
    key it touches counted (its hash, its place in the ready index and its status set)."""
    with conveyor.Queue(url, allow_modules=["time"], workers=0) as q:
        q.put(time.time)  # the queue's own keys exist before the measure

        def used() -> int:
            return sum(client.memory_usage(key, samples=0) or 0 for key in client.scan_iter("*"))

        before = used()
        n = 2000
        for _ in range(n):
            q.put(time.time)
        per_job = (used() - before) / n
        assert q.backend.counts()[conveyor.Status.WAITING] == n + 1
    assert per_job <= MAX_BYTES_PER_JOB, f"{per_job:.0f} bytes per waiting job"


def test_a_corrupt_payload_fails_that_job_only_and_the_worker_lives(
    url: str, client: redis.Redis
) -> None:
    with conveyor.Queue(url, allow_modules=ALLOW, workers=0) as q:
        q.put(sqlite_jobs.identity, args=(1,), id="corrupt", priority=0)
        q.put(sqlite_jobs.identity, args=(2,), id="fine", priority=1)
    client.hset(keys.prefix("default") + "j:corrupt", "payload", b"\x00garbage")
    with conveyor.Queue(url, allow_modules=ALLOW, workers=1) as q:
        assert q.result("fine", timeout=10) == 2
        with pytest.raises(conveyor.JobFailed, match="PayloadRefused"):
            q.result("corrupt", timeout=10)


def test_a_claim_reads_no_backlog(url: str, client: redis.Redis) -> None:
    """A job blocked by a key waits parked on it, out of the ready index: with 200 jobs of one
    exclusive group waiting behind a running one, the ready index is empty after a claim."""
    with conveyor.Queue(url, allow_modules=ALLOW, workers=0) as q:
        for i in range(200):
            q.put(sqlite_jobs.identity, args=(i,), exclusive="g")
        backend = q.backend
        assert len(backend.claim("w/1", "thread", 1)) == 1
        assert backend.claim("w/1", "thread", 1) == []
        prefix = keys.prefix("default")
        assert client.zcard(prefix + "r:thread") == 0
        assert client.zcard(prefix + "p:thread:group:g") == 199


def test_a_cancel_elsewhere_reaches_the_workers_process_over_pub_sub(url: str) -> None:
    """Two backends stand for two processes: a cancel made by one is heard by the other at
    once, whose worker's heartbeat then beats (Seam.stop_pending) and stops the job."""
    from conveyor.records import WorkerInfo

    with (
        conveyor.Queue(url, allow_modules=ALLOW, workers=0) as here,
        conveyor.Queue(url, allow_modules=ALLOW, workers=0) as there,
    ):
        job = here.put(sqlite_jobs.identity, args=(1,))
        worker = here.backend
        now = time.time()
        worker.register_worker(WorkerInfo("w", socket.gethostname(), os.getpid(), "thread", 1,
                                          now, now, 60.0))  # fmt: skip
        (claimed,) = worker.claim("w/1", "thread", 1)
        assert claimed.id == job.id and not worker.stops_pending("w")
        since = worker.version()
        assert there.backend.cancel(job.id) == (True, "w/1")
        deadline = time.monotonic() + 10
        while not worker.stops_pending("w") and time.monotonic() < deadline:
            since = worker.wait(since, max(0.0, deadline - time.monotonic()))
        assert worker.stops_pending("w")
        assert worker.heartbeat("w", [job.id]) == {job.id}
        assert not worker.stops_pending("w")


@pytest.mark.slow
def test_a_server_restart_loses_nothing_and_a_put_meanwhile_fails_clearly(redis_server) -> None:
    """Append-only on: the server is killed and started again on the same port mid-run; the
    queue's clients reconnect and carry on, its worker logs and retries. While the server is
    down, a put raises a StorageError naming the server after about RETRY_WAIT seconds."""
    from conveyor.backends.redis import RETRY_WAIT

    url = redis_server.url + "/0"
    with conveyor.Queue(url, allow_modules=ALLOW, workers=2) as q:
        before = [q.put(sqlite_jobs.identity, args=(i,)) for i in range(20)]
        assert [job.result(timeout=10) for job in before] == list(range(20))
        waiting = q.put(sqlite_jobs.identity, args=("kept",), delay=0.5)
        redis_server.stop(kill=True)
        started = time.monotonic()
        with pytest.raises(conveyor.StorageError, match=f"127.0.0.1:{redis_server.port}"):
            q.put(sqlite_jobs.identity, args=("lost",))
        assert time.monotonic() - started < RETRY_WAIT + 10
        redis_server.restart()
        after = [q.put(sqlite_jobs.identity, args=(i,)) for i in range(20, 40)]
        assert [job.result(timeout=20) for job in after] == list(range(20, 40))
        assert waiting.result(timeout=20) == "kept"
        assert all(job.status == "finished" for job in before)


def test_queues_of_one_name_in_two_databases_do_not_hear_each_other(
    redis_url: str, client: redis.Redis
) -> None:
    """Pub/sub channels are shared by every database of a server: each database's queue has
    its own channel."""
    with (
        conveyor.Queue(f"{redis_url}/{DB}", workers=0) as one,
        conveyor.Queue(f"{redis_url}/{DB + 1}", workers=0) as other,
    ):
        channels = [one.backend.channel, other.backend.channel]
        assert channels[0] != channels[1]
        assert dict(client.pubsub_numsub(*channels)) == {c.encode(): 1 for c in channels}


def test_a_queue_on_a_unix_socket(tmp_path: Path) -> None:
    from tests.servers import RedisServer

    socket_path = tmp_path / "redis.sock"
    url = f"unix://{socket_path}?db=3"
    with (
        RedisServer(extra=["--unixsocket", str(socket_path)]),
        conveyor.Queue(url, allow_modules=ALLOW, workers=1) as q,
    ):
        assert q.put(sqlite_jobs.identity, args=(7,)).result(timeout=10) == 7
        assert q.backend.channel.endswith(":channel:3")


def test_a_big_bulk_submit_goes_in_bounded_engine_calls_in_order(
    url: str, client: redis.Redis
) -> None:
    """A bulk submit without max_size is cut into engine calls of SUBMIT_BATCH jobs, so no one
    Lua call holds the server for long; the ids come back in input order, every job stored."""
    from conveyor.backends.redis.backend import SUBMIT_BATCH

    n = 2 * SUBMIT_BATCH + 7
    with conveyor.Queue(url, allow_modules=["math"], workers=0) as q:
        q.put(math.sqrt, args=(1,))  # the library is loaded and the queue's keys exist
        client.config_resetstat()
        jobs = q.put_many(math.sqrt, range(n))
        calls = client.info("commandstats")["cmdstat_fcall"]["calls"]
        assert calls == 3, f"{calls} engine calls for {n} jobs"
        assert q.backend.counts()[conveyor.Status.WAITING] == n + 1
        listed = [record.id for record in q.jobs("waiting")][1:]
        assert listed == [job.id for job in jobs]


def test_a_step_sent_before_a_delayed_job_fell_due_starts_it_no_earlier(url: str) -> None:
    """A step's time is its caller's clock when it sent the step. A claim sent before a
    delayed job's time, which runs after another step made the job due, starts it with the
    job's time as its start, not its own earlier time."""
    clock = ManualClock()
    with conveyor.Queue(url, allow_modules=ALLOW, workers=0, clock=clock) as q:
        job = q.put(sqlite_jobs.identity, args=(1,), delay=10)
        due = clock.now() + 10
        backend = q.backend
        backend.run("read", "counts", now=due + 1)  # another step, later: the job is due
        (claimed,) = backend.report((), worker="w/1", mode="thread", claim=1).claimed
        assert claimed.id == job.id  # (this claim ran at the clock's time, before `due`)
        record = job.record()
        assert record.started is not None
        assert record.started.timestamp() == pytest.approx(due, abs=1e-5)  # (microseconds)
