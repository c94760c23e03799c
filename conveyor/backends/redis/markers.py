"""Idle claimers block on wake-up markers, so that a job made ready wakes one of them.

Every step that makes jobs of a mode ready adds one marker per job (its id; at most a few
dozen kept) to the mode's marker key ``k:<mode>`` (``finish`` in ``lua/engine_end.lua``); a claimer
with nothing to do blocks on it with BZPOPMIN, as BullMQ's workers block on their marker: Redis
hands each marker to one blocked claimer, which then claims. A claim that finds nothing
deletes the markers left (they would wake claimers for nothing).

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

import redis

from conveyor.clock import MAX_WAIT

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


def marker_key(conn: Connection, mode: str) -> str:
    """The key whose markers wake the claimers of ``mode``."""
    return conn.key("k:" + mode)


def wake_key(conn: Connection, mode: str) -> str:
    """The key that wakes the claimers of ``mode`` blocked in this backend."""
    return conn.key(f"x:{conn.origin}:{mode}")


class Markers:
    """The blocking side (:meth:`block`) and the waking side (:meth:`unblock`) of one
    backend's claimers."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._members = itertools.count()

    def _pool(self, key: str) -> redis.ConnectionPool:
        client: Any = self._conn.redis
        pool = getattr(client, "connection_pool", None)
        if pool is None:  # a cluster client: the pool of the node that holds the queue's slot
            pool = client.get_redis_connection(client.get_node_from_key(key)).connection_pool
        return pool  # type: ignore[no-any-return]

    def block(
        self, mode: str, seconds: float | None, moved: Callable[[], bool]
    ) -> tuple[str, bytes] | None:
        """Block until a marker of ``mode`` or a wake of this backend comes, or ``seconds``
        pass; return ``('marker', member)`` or ``('wake', member)``, else None. ``moved()``
        is looked at every BLOCK_MAX seconds (a wake that could not be sent). A connection
        that fails returns None too: the claim that follows reports it."""
        conn = self._conn
        keys = (wake_key(conn, mode), marker_key(conn, mode))  # wakes first
        until = time.monotonic() + (MAX_WAIT if seconds is None else seconds)
        pool = self._pool(keys[1])
        connection: Any = pool.get_connection()
        try:
            while not moved():
                block = min(until - time.monotonic(), BLOCK_MAX)
                if block < BLOCK_MIN:
                    return None
                # the connection straight (no retries): a failure, or a close, ends the wait
                connection.send_command("BZPOPMIN", *keys, f"{block:.3f}")
                reply = connection.read_response()
                if reply:
                    key, member = reply[0], reply[1]
                    kind = "wake" if key.decode() == keys[0] else "marker"
                    return kind, member
            return None
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError) as exc:
            log.debug("blocking for a job of mode %s ended: %s", mode, exc)
            connection.disconnect()
            return None
        finally:
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
