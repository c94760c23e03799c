"""The Redis backend's connection: a client with retries, errors that name the server, and
:meth:`Connection.run`, which calls one function of the library (:mod:`.scripts`: one atomic
step) and emits the events it reports in this process.

While the server cannot be reached a call retries with exponential backoff for about
:data:`RETRY_WAIT` seconds, then raises :class:`~conveyor.errors.StorageError` naming the URL
(without its password); a worker logs that and tries again.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from conveyor.backends.redis import keys
from conveyor.backends.redis.decode import record, snapshot
from conveyor.backends.redis.scripts import Library
from conveyor.clock import Clock
from conveyor.errors import ConveyorError, QueueClosed, StorageError
from conveyor.events import EVENTS, EventBus
from conveyor.serializer import Serializer

#: retries of a call while the server cannot be reached, and the backoff between them:
#: 0.05 s doubling up to 1 s, about RETRY_WAIT seconds in all before a call raises
RETRIES = 9
BACKOFF_BASE, BACKOFF_CAP = 0.05, 1.0
RETRY_WAIT = 7.0
#: the longest a read waits for other threads of this process to emit the events of their steps
EMIT_WAIT = 1.0
#: seconds to connect, and to wait for an answer
CONNECT_TIMEOUT, SOCKET_TIMEOUT = 2.0, 30.0

Reply = Any
#: the steps that read the queue's next timer in the same round trip: those a wait often
#: follows (a claim that found nothing, a look at a job not ended yet)
TIMERS_READ_WITH = frozenset({"claim", "read"})


def shown(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


#: cluster URL scheme -> the scheme of its nodes (redis-py's cluster client)
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def client(url: str, *, retries: int = RETRIES) -> redis.Redis:
    """A client for ``url`` (``redis://``, ``rediss://``, ``unix://``; ``redis+cluster://``
    and ``rediss+cluster://`` name one node of a Redis Cluster) that retries calls that fail on
    the connection ``retries`` times with exponential backoff."""
    retry = Retry(ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), retries)
    scheme, _, rest = url.partition("://")
    if scheme in CLUSTER_SCHEMES:
        return _cluster(f"{CLUSTER_SCHEMES[scheme]}://{rest}", url, retry)
    tcp: dict[str, Any] = {} if url.startswith("unix:") else {"socket_keepalive": True}
    try:
        return redis.Redis.from_url(
            url,
            retry=retry,
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=SOCKET_TIMEOUT,
            health_check_interval=30,
            **tcp,
        )
    except ValueError as exc:
        raise ConveyorError(f"invalid Redis URL {shown(url)!r}: {exc}") from None


def _cluster(node_url: str, url: str, retry: Retry) -> redis.Redis:
    """redis-py's cluster client, which finds the other nodes from the one ``node_url``
    names. All keys of a queue share one hash tag, so each script, pipeline and blocking call
    goes to the one node that holds the queue's slot; pub/sub messages reach every node."""
    try:
        cluster = redis.RedisCluster.from_url(
            node_url,
            retry=retry,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=SOCKET_TIMEOUT,
            socket_keepalive=True,
        )
    except ValueError as exc:
        raise ConveyorError(f"invalid Redis URL {shown(url)!r}: {exc}") from None
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        raise StorageError(f"cannot connect to Redis Cluster at {shown(url)}: {exc}") from None
    # the cluster client offers the commands this backend uses, routed by key
    return cast(redis.Redis, cluster)


class Connection:
    """One queue on one Redis server: the client, the scripts, and what a step needs."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        clock: Clock,
        events: EventBus,
        serializer: Serializer,
        lease: float,
        result_ttl: float | None,
    ) -> None:
        self.url = url
        self.name = name
        self.prefix = keys.prefix(name)
        self._clock = clock
        self._bus = events
        self.serializer = serializer
        self._lease = lease
        self._result_ttl = result_ttl
        #: this backend's id: its own changes, published on the channel, are not relayed back
        self.origin = uuid.uuid4().hex
        self._closed = False
        self._calls = threading.Condition()  # guards _closed and _under_way
        self._under_way = 0  # calls sent or about to be
        self._emit_cond = threading.Condition()
        self._emitting: dict[int, int] = {}  # steps whose events may be emitted: ticket -> thread
        self._tickets = itertools.count()
        probe = client(url, retries=0)  # a server not there at start: say so at once
        try:
            probe.ping()
        except redis.RedisError as exc:
            raise StorageError(f"cannot connect to Redis at {shown(url)}: {exc}") from None
        finally:
            probe.close()
        self.redis = client(url)
        pool = getattr(self.redis, "connection_pool", None)  # a cluster has db 0 only
        db = 0 if pool is None else pool.connection_kwargs.get("db", 0)
        #: where every change is published: one channel per queue and database (pub/sub
        #: channels are shared by every database of a server)
        self.channel = self.key(f"channel:{db}")
        try:
            self.scripts = Library(self.redis)
        except redis.RedisError as exc:
            self.redis.close()
            raise ConveyorError(
                f"cannot load conveyor's functions into Redis at {shown(url)} (Redis >= 7.0 or"
                f" Valkey is needed): {exc}"
            ) from None

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """One call to the server: refused once the backend is closed (:meth:`_shut` waits for
        the calls under way, so none reaches the server after it), a Redis error turned into a
        StorageError naming the server."""
        with self._calls:
            if self._closed:
                raise QueueClosed("the queue is closed")
            self._under_way += 1
        try:
            yield
        except redis.RedisError as exc:
            if self._closed:
                raise QueueClosed("the queue is closed") from None
            raise StorageError(f"{what} at {shown(self.url)}: {exc}") from exc
        finally:
            with self._calls:
                self._under_way -= 1
                if not self._under_way:
                    self._calls.notify_all()

    def _shut(self) -> bool:
        """Refuse every later call, and wait (up to RETRY_WAIT + CONNECT_TIMEOUT seconds) for
        the calls under way: a call that was about to be sent when the queue closed must not
        reach the server afterwards (a closed queue's worker would claim a job). False if it
        was closed already."""
        with self._calls:
            if self._closed:
                return False
            self._closed = True
            self._calls.wait_for(lambda: not self._under_way, RETRY_WAIT + CONNECT_TIMEOUT)
        return True

    def key(self, suffix: str) -> str:
        """The queue's key ``suffix`` (see :mod:`.keys`)."""
        return self.prefix + suffix

    def run(self, entry: str, *args: Any, now: float | None = None) -> Reply:
        """Call the entry script ``entry`` (one atomic step) with the engine's arguments and
        ``args``; emit the events it reports here (those this process listens to); return its
        answer."""
        bus = self._bus
        wanted = ",".join(name for name in EVENTS if bus.wants(name))
        ticket = self._emitting_start() if wanted else None
        try:
            return self._call(entry, args, now, wanted, ticket)
        finally:
            if ticket is not None:
                self._emitting_end(ticket)

    def _call(
        self, entry: str, args: Sequence[Any], now: float | None, wanted: str, ticket: int | None
    ) -> Reply:
        header = self.header(now, wanted)
        token = None
        if entry in TIMERS_READ_WITH and self.scripts.pipelines:
            token = self._timers_token()
        with self._errors(f"cannot change the queue {self.name!r}"):
            if token is None:
                reply = self.scripts.call(entry, self.key("v"), [*header, *args])
            else:
                reply, timers = self.scripts.call_then_first(
                    entry, self.key("v"), [*header, *args], (self.key("due"), self.key("expiry"))
                )
        answer, events, changed = reply
        if events:
            if ticket is not None:
                self._settle(before=ticket)  # this process's events in the order of its steps
            self._emit(events)
        modes = [mode.decode() for mode in changed[1:]] if changed else None
        if modes is not None:
            self._changed(modes)
        if token is not None:
            times = [time for time in timers if time is not None]
            self._timers_read(token, modes, min(times) if times else None)
        return answer

    def header(self, now: float | None = None, wanted: str = "") -> tuple[str, ...]:
        """The engine's arguments of a call (``begin`` in ``lua/engine.lua``): at ``now``
        (None: the clock's), reporting the events of ``wanted``."""
        return (
            self.prefix,
            repr(self._clock.now() if now is None else now),
            repr(self._lease),
            repr(-1.0 if self._result_ttl is None else self._result_ttl),
            wanted,
            self.origin,
            self.channel,
        )

    def _timers_token(self) -> Any:
        """The changes seen, before a step that reads the queue's next timer with it (None: it
        reads none, see :mod:`.waiting`)."""
        return None

    def _timers_read(self, token: Any, modes: list[str] | None, timer: float | None) -> None:
        """The queue's next timer was ``timer`` after the changes ``token`` and this step's,
        which may have let jobs of ``modes`` start (None: it changed nothing; see
        :mod:`.waiting`)."""

    # A job's end read here must have had its events emitted here (as on SQLite): a read waits
    # for the steps of this process's other threads that may be in what it read to have
    # emitted their events (only while someone listens to events: the steps that have events
    # to emit are counted).
    def _emitting_start(self) -> int:
        ticket = next(self._tickets)
        with self._emit_cond:
            self._emitting[ticket] = threading.get_ident()
        return ticket

    def _emitting_end(self, ticket: int) -> None:
        with self._emit_cond:
            del self._emitting[ticket]
            self._emit_cond.notify_all()

    def _settle(self, before: int | None = None) -> None:
        """(After a read, or before a step emits its events) wait until the steps of this
        process's other threads that were under way (that began ``before`` the step) have
        emitted their events; at most EMIT_WAIT seconds: a callback of theirs that waits for
        this thread cannot stall it."""
        if not self._emitting:
            return
        me = threading.get_ident()
        with self._emit_cond:
            pending = {
                ticket
                for ticket, ident in self._emitting.items()
                if ident != me and (before is None or ticket < before)
            }
            if pending:
                self._emit_cond.wait_for(
                    lambda: not pending.intersection(self._emitting), EMIT_WAIT
                )

    def _changed(self, modes: list[str]) -> None:
        """This process changed the queue (and may have let jobs of ``modes`` start); its
        events were emitted: wake its waits (see :mod:`.waiting`)."""

    def _emit(self, events: Sequence[Any]) -> None:
        """Emit ``(name, id, snapshot)`` triples the engine reported (a snapshot of 0: no one
        here listened when the step ran)."""
        bus = self._bus
        for i in range(0, len(events), 3):
            name, data = events[i].decode(), events[i + 2]
            if not bus.wants(name):
                continue
            if data:
                h = snapshot(data)
            else:  # a listener came after the step began: the job as it is now
                found = self._job_now(events[i + 1].decode())
                if found is None:
                    continue
                h = found
            bus.emit(name, record(h, self.serializer, results=True))

    def _job_now(self, job_id: str) -> dict[str, bytes] | None:
        """The job's hash as it is now (None if it is gone or cannot be read)."""
        try:
            found: dict[bytes, bytes] = self.redis.hgetall(self.key("j:" + job_id))  # type: ignore[assignment]
        except redis.RedisError:
            return None
        return {field.decode(): value for field, value in found.items()} or None

    def read(self, call: Callable[[redis.Redis], Any], what: str = "cannot read") -> Any:
        """``call(client)``, a Redis error turned into a StorageError."""
        with self._errors(f"{what} the queue {self.name!r}"):
            return call(self.redis)
