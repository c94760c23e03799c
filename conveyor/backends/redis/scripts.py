"""The Lua of the Redis backend, as one Redis function library.

The library is the engine (``lua/engine.lua``, then ``lua/engine_end.lua``) followed by each
entry script (``lua/<entry>.lua``) registered as a function ``conveyor_<version>_<entry>`` that
first calls the engine's ``begin``. It is loaded once per server (``FUNCTION LOAD``) and called
by name (``FCALL``): the engine's functions are built once, at load, not at every call as a
script sent with EVAL/EVALSHA would rebuild them (measured: about 30 us of closures per call,
against 3 us for the call itself). ``<version>`` is a digest of the library's text, so two
versions of conveyor share a server without clashing. A server that lost the library (a restart
without persistence, a ``FUNCTION FLUSH``) answers "Function not found": the library is loaded
again and the call made again (:meth:`Library.call`)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
from importlib import resources
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

#: the engine, in the order it is loaded (one chunk: the second part uses the first's names)
ENGINE = ("engine", "engine_end")
#: the entry scripts, one per state change (``lua/<name>.lua``)
ENTRIES = (
    "submit", "claim", "requeue", "cancel", "heartbeat", "recover", "read", "pop", "forget",
    "purge", "retry", "progress", "idle",
)  # fmt: skip
_VERSION = "@VERSION@"


@functools.cache
def source(name: str) -> str:
    """The text of ``lua/<name>.lua``."""
    return (resources.files(__package__) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


@functools.cache
def library() -> tuple[str, str]:
    """The library's version (a digest of its text) and its text."""
    parts = ["#!lua name=conveyor_" + _VERSION, *(source(part) for part in ENGINE)]
    for entry in ENTRIES:
        parts.append(
            f"redis.register_function('{function_name(_VERSION, entry)}', function(KEYS, ARGV)\n"
            f"begin(ARGV)\n{source(entry)}\nend)"
        )
    template = "\n".join(parts)
    version = hashlib.sha1(template.encode(), usedforsecurity=False).hexdigest()[:12]
    return version, template.replace(_VERSION, version)


def function_name(version: str, entry: str) -> str:
    """The name the library registers ``entry`` under."""
    return f"conveyor_{version}_{entry}"


class _Held:
    """A connection a thread keeps for its calls, given back to the pool when the thread
    ends (its thread-local storage goes, and this with it)."""

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self.pool = pool
        self.connection = pool.get_connection()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # the pool was closed meanwhile
            self.pool.release(self.connection)


class Library:
    """The library on one client: loaded if the server lacks it, each entry called by name.

    A call goes straight to a connection its thread keeps (the client's own retry policy:
    reconnect with backoff), not through the client's command layer: this runs for every
    step, and that layer costs as much as the round trip (measured here: 40 us of 70)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        #: a single server's pool; None for a cluster client, whose calls are routed by key
        self._pool: redis.ConnectionPool | None = getattr(client, "connection_pool", None)
        self._retry = (self._pool and client.get_retry()) or Retry(NoBackoff(), 0)
        self._held = threading.local()
        #: whether :meth:`call_then_first` can be used (a single server's client)
        self.pipelines = self._pool is not None
        self.version, self.text = library()
        self.names = {entry: function_name(self.version, entry) for entry in ENTRIES}
        self._lock = threading.Lock()
        self.load()

    def connection(self) -> Any:
        """The connection the calling thread keeps for its calls (None for a cluster
        client): a slot blocks on it between its calls too."""
        if self._pool is None:
            return None
        held: _Held | None = getattr(self._held, "value", None)
        if held is None:
            held = self._held.value = _Held(self._pool)
        return held.connection

    def _fcall(self, name: str, key: str, args: list[Any]) -> Any:
        if self._pool is None:
            return self._client.fcall(name, 1, key, *args)
        connection = self.connection()

        def call() -> Any:
            connection.send_command("FCALL", name, 1, key, *args)
            return connection.read_response()

        def failed(_error: Exception) -> None:
            connection.disconnect()

        return self._retry.call_with_retry(call, failed)

    def load(self) -> None:
        """Load the library unless the server has it already."""
        with self._lock:
            try:
                self._client.function_load(self.text)
            except redis.ResponseError as exc:
                if "already exists" not in str(exc):
                    raise

    def call(self, entry: str, key: str, args: list[Any]) -> Any:
        """``FCALL`` the function of ``entry`` with one key (the queue's: it routes the call
        to the queue's slot) and ``args``; the library is loaded again if the server lost it."""
        name = self.names[entry]
        try:
            return self._fcall(name, key, args)
        except redis.ResponseError as exc:
            if "Function not found" not in str(exc):
                raise
        self.load()
        return self._fcall(name, key, args)

    def call_then_first(
        self, entry: str, key: str, args: list[Any], zsets: tuple[str, ...]
    ) -> tuple[Any, list[float | None]]:
        """As :meth:`call`, and in the same round trip (pipelined, not atomic with it) the
        lowest score in each sorted set of ``zsets`` (None: empty)."""
        name = self.names[entry]
        try:
            return self._fcall_then_first(name, key, args, zsets)
        except redis.ResponseError as exc:
            if "Function not found" not in str(exc):
                raise
        self.load()
        return self._fcall_then_first(name, key, args, zsets)

    def _fcall_then_first(
        self, name: str, key: str, args: list[Any], zsets: tuple[str, ...]
    ) -> tuple[Any, list[float | None]]:
        assert self._pool is not None  # see `pipelines`
        connection = self.connection()
        commands = [("FCALL", name, 1, key, *args)]
        commands += [("ZRANGE", zset, 0, 0, "WITHSCORES") for zset in zsets]

        def call() -> tuple[Any, list[float | None]]:
            connection.send_packed_command(connection.pack_commands(commands))
            replies: list[Any] = []
            error: redis.ResponseError | None = None
            for _ in commands:  # every reply is read: the connection stays in step
                try:
                    replies.append(connection.read_response())
                except redis.ResponseError as exc:
                    error = error or exc
                    replies.append(None)
            if error is not None:
                raise error
            return replies[0], [_lowest(reply) for reply in replies[1:]]

        def failed(_error: Exception) -> None:
            connection.disconnect()

        result: tuple[Any, list[float | None]] = self._retry.call_with_retry(call, failed)
        return result


def _lowest(reply: Any) -> float | None:
    """The score of a ``ZRANGE key 0 0 WITHSCORES`` reply (RESP3: ``[[member, score]]``,
    RESP2: ``[member, score]``); None if the set is empty."""
    if not reply:
        return None
    first = reply[0]
    return float(first[1] if isinstance(first, list) else reply[1])
