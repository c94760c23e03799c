"""Idle claimers block on wake-up markers, so that a job made ready wakes one of them.

Every step that makes jobs of a mode ready adds one marker per job (its id; at most a few
dozen kept) to the mode's marker key ``k:<mode>`` (``finish`` in ``lua/engine_end.lua``); a claimer
with nothing to do blocks on it with BZPOPMIN, as BullMQ's workers block on their marker: Redis
hands each marker to one blocked claimer, which then claims. A claim that finds nothing
deletes the markers left (they would wake claimers for nothing).

A slot that blocks registers first as idle of its mode for IDLE_TTL seconds (``lua/idle.lua``,
sent in the same write as its BZPOPMIN, renewed every IDLE_RENEW seconds while it blocks) and
blocks on its own hand-over key ``h:<slot>`` too: a job made ready while it idles is started for
it by the step that made it ready and handed over there, so the slot needs no claim of its own
(``hand_over`` in ``lua/engine_end.lua``). Its next claim ends the registration, and claims a job
handed over meanwhile first.

The other reasons a claimer looks again — a change that may let several of its mode start (a
key released, a new timer), a wake (a worker that stops, a clock moved), the backend closed —
come to this process over pub/sub or from its own steps (:mod:`.waiting`); they wake the
claimers blocked here by adding one element per blocked claimer to this backend's own wake key
of the mode (``x:<origin>:<mode>``), which they block on too.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack  # type: ignore[import-untyped]
import redis

from conveyor.clock import MAX_WAIT
from conveyor.records import ClaimedJob

if TYPE_CHECKING:
    from conveyor.backends.redis.connection import Connection

log = logging.getLogger("conveyor.backends.redis")

#: the longest one BZPOPMIN blocks (well below the client's socket timeout); a longer wait
#: blocks again
BLOCK_MAX = 10.0
#: the shortest block worth sending (BZPOPMIN's timeout 0 would block for ever)
BLOCK_MIN = 0.001
#: milliseconds a wake key outlives its last wake (a process that died leaves none for long)
WAKE_TTL_MS = 60_000
#: seconds a slot's registration as idle holds (a slot whose process died gets jobs handed over
#: for at most that long: they come back after its lease), and how often a blocked slot renews it
IDLE_TTL, IDLE_RENEW = 3, 1.0


def marker_key(conn: Connection, mode: str) -> str:
    """The key whose markers wake the claimers of ``mode``."""
    return conn.key("k:" + mode)


def wake_key(conn: Connection, mode: str) -> str:
    """The key that wakes the claimers of ``mode`` blocked in this backend."""
    return conn.key(f"x:{conn.origin}:{mode}")


def hand_key(conn: Connection, slot: str) -> str:
    """The key where a job started for the idle slot ``slot`` is handed over."""
    return conn.key("h:" + slot)


def handed(member: bytes) -> ClaimedJob:
    """A job as ``hand_over`` packed it (MessagePack: the fields of a claim)."""
    job_id, attempt, task, mode, ref, payload, timeout, mac = msgpack.unpackb(member, raw=True)
    return ClaimedJob(
        job_id.decode(), int(attempt), task.decode(), mode.decode(), ref.decode(), payload,
        float(timeout) if timeout else None, mac or None,
    )  # fmt: skip


class Markers:
    """The blocking side (:meth:`block`) and the waking side (:meth:`unblock`) of one
    backend's claimers."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._members = itertools.count()
        #: a slot's registration as idle, packed once: (slot, mode) -> the command's bytes
        self._idle: dict[tuple[str, str], list[bytes]] = {}

    def _pool(self, key: str) -> redis.ConnectionPool:
        client: Any = self._conn.redis
        pool = getattr(client, "connection_pool", None)
        if pool is None:  # a cluster client: the pool of the node that holds the queue's slot
            pool = client.get_redis_connection(client.get_node_from_key(key)).connection_pool
        return pool  # type: ignore[no-any-return]

    def block(
        self,
        mode: str,
        seconds: float | None,
        moved: Callable[[], bool],
        slot: str | None = None,
        *,
        note: str | None = None,
    ) -> tuple[str, bytes] | None:
        """Block until a marker of ``mode`` or a wake of this backend comes, or ``seconds``
        pass; return ``('marker', member)`` or ``('wake', member)``, else None. With ``slot``,
        registered as idle meanwhile: a job handed over to it returns ``('hand', member)``.
        With ``note`` (a waiter's key of notes, see ``Waiting.wait_job``), a note there, and
        no marker, returns ``('note', member)``. ``moved()`` is looked at every BLOCK_MAX
        seconds (a wake that could not be sent). A connection that fails returns None too:
        the claim or read that follows reports it."""
        conn = self._conn
        keys = [wake_key(conn, mode)]  # wakes first
        names = {keys[0].encode(): "wake"}
        if slot is not None:
            keys.append(hand_key(conn, slot))
            names[keys[-1].encode()] = "hand"
        keys.append(marker_key(conn, mode) if note is None else note)
        names[keys[-1].encode()] = "marker" if note is None else "note"
        until = time.monotonic() + (MAX_WAIT if seconds is None else seconds)
        connection: Any = conn.scripts.connection()  # this thread's, between its calls
        pool = None
        if connection is None:  # a cluster client: one of the pool of the queue's node
            pool = self._pool(keys[-1])
            connection = pool.get_connection()
        try:
            while not moved():
                block = min(until - time.monotonic(), BLOCK_MAX if slot is None else IDLE_RENEW)
                if block < BLOCK_MIN:
                    return None
                # the connection straight (no retries): a failure, or a close, ends the wait
                pop = ("BZPOPMIN", *keys, f"{block:.3f}")
                if slot is None:
                    connection.send_command(*pop)
                else:  # registered as idle first, in the same write
                    idle = self._idle.get((slot, mode))
                    if idle is None:  # (lua/idle.lua reads no argument of the header's)
                        idle = self._idle[slot, mode] = connection.pack_command(
                            "FCALL", conn.scripts.names["idle"], 1, conn.key("v"),
                            *conn.header(), slot, mode, IDLE_TTL,
                        )  # fmt: skip
                    connection.send_packed_command([*idle, *connection.pack_command(*pop)])
                    try:
                        connection.read_response()
                    except redis.ResponseError as exc:  # the library lost: a claim loads it
                        log.debug("registering slot %s as idle failed: %s", slot, exc)
                        slot = None
                reply = connection.read_response()
                if reply:
                    return names[reply[0]], reply[1]
            return None
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError) as exc:
            log.debug("blocking for a job of mode %s ended: %s", mode, exc)
            connection.disconnect()
            return None
        finally:
            if pool is not None:
                pool.release(connection)

    def give_back(self, mode: str, member: bytes) -> None:
        """Put back a marker taken by a claimer that will not claim (it stops)."""
        try:
            self._conn.redis.zadd(marker_key(self._conn, mode), {member: 0})
        except redis.RedisError:
            log.debug("a marker of mode %s could not be put back", mode, exc_info=True)

    def unblock(self, blocked: dict[str, int]) -> None:
        """Wake ``blocked[mode]`` claimers of each mode blocked in this backend (an element
        each: one not blocked yet takes it as soon as it blocks)."""
        conn = self._conn
        try:
            pipe = conn.redis.pipeline(transaction=False)
            for mode, count in blocked.items():
                key = wake_key(conn, mode)
                pipe.zadd(key, {str(next(self._members)): 0 for _ in range(count)})
                pipe.pexpire(key, WAKE_TTL_MS)
            pipe.execute()
        except redis.RedisError as exc:  # they look again within BLOCK_MAX seconds
            log.warning("waking the claimers blocked on %s failed: %s", conn.name, exc)
