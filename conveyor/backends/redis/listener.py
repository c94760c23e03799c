"""The subscriber of one Redis backend: what other processes changed, counted and relayed.

Every step that changes the queue publishes one message on the queue's channel (see
:mod:`.keys`) when some process needs it: who made it, the modes whose claimers it may let start
a job, its events, and the running jobs it cancelled. Each backend keeps one subscriber
connection, read by one thread (:class:`Listener`), which counts the messages (all of them, and
per mode: the versions) and wakes the waits (:mod:`.waiting`); hands each message to the backend,
which relays the events made by other processes to this process's ``EventBus`` and remembers the
running jobs cancelled elsewhere; and keeps the keys ``all`` and ``ends`` alive while this
process needs such changes published (:meth:`Listener.need`). After the subscription was lost
and made again (messages may have been missed meanwhile), every version moves on: every wait
looks at the state again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from conveyor.backends.base import ENDS
from conveyor.backends.redis.connection import CONNECT_TIMEOUT, Connection, client
from conveyor.clock import MAX_WAIT

log = logging.getLogger("conveyor.backends.redis")

#: what a listener has seen: versions, wakes, and messages that may have set a timer
Seen = tuple[dict[str | None, int], int, int]

#: the "mode" whose version counts every change; version(None) leaves out the claims made by
#: other processes: no wait but that for room under max_size waits for a job to start (a
#: result, an end, idle...), and a claim elsewhere then wakes none of them
EVERY = "*"

#: seconds the listener blocks for a message before it looks whether it should stop
LISTEN_TICK = 1.0
#: milliseconds the keys ``all`` and ``ends`` (some process needs every change, or every one
#: that is not quiet) live unless renewed, and seconds between renewals by a process that does
NEED_TTL_MS, NEED_RENEW = 30_000, 10.0
#: what a process may need published: every change, or every one that is not quiet
ALL, LOUD = "all", "ends"
#: the events of quiet changes (``lua/engine.lua``, QUIET): published only while a process
#: needs every change (its waits of every change, or callbacks of these events it relays)
QUIET_EVENTS = frozenset({"queued", "started", "progress"})
#: seconds between tries to subscribe again after the subscription was lost, doubling up to 2
RESUBSCRIBE_FIRST, RESUBSCRIBE_MAX = 0.05, 2.0


class Listener:
    """The subscriber of one backend: versions, relayed events, stops (see the module)."""

    def __init__(
        self,
        conn: Connection,
        on_message: Callable[[dict[str, Any]], None],
        unblock: Callable[[dict[str, int]], None],
    ) -> None:
        self._conn = conn
        self._on_message = on_message
        self._unblock = unblock
        #: claimers of this process blocked on the markers (:mod:`.markers`), by mode
        self.blocked: dict[str, int] = {}
        self.channel = conn.channel
        self.cond = threading.Condition()
        #: messages seen: None counts all, a mode those that may let a job of it start,
        #: ENDS those of changes that are not quiet
        self.versions: dict[str | None, int] = {None: 0, EVERY: 0, ENDS: 0}
        #: what this process needs published (ALL, LOUD), and when its key is to be renewed
        self.renew: dict[str, float] = {}
        self.wakes = 0
        #: the messages seen that may have set a timer (all but those of claims alone)
        self.timer_moves = 0
        self.closed = False
        # its own client, which never retries by itself: a lost subscription is noticed here
        self._client = client(conn.url, retries=0)
        self._pubsub = self._subscribe()  # before any version is read: no change is missed
        self._thread = threading.Thread(
            target=self._loop, daemon=True, name=f"conveyor-redis-listener-{conn.name}"
        )
        self._thread.start()

    def _subscribe(self) -> Any:
        """Subscribe to the channel and wait for the confirmation: every message published
        from then on reaches this connection."""
        pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
        pubsub.subscribe(self.channel)
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while True:
            message = pubsub.get_message(timeout=0.1)
            if message is not None and message.get("type") == "subscribe":
                return pubsub
            if time.monotonic() > deadline:
                pubsub.close()
                raise redis.ConnectionError(f"no answer to SUBSCRIBE {self.channel}")

    def _loop(self) -> None:
        pause = RESUBSCRIBE_FIRST
        pubsub = self._pubsub
        while not self.closed:
            try:
                if pubsub is None:
                    pubsub = self._pubsub = self._subscribe()
                    self._bump_all()  # messages may have been lost meanwhile
                    pause = RESUBSCRIBE_FIRST
                message = pubsub.get_message(timeout=LISTEN_TICK)
            except Exception as exc:
                if self.closed:
                    break
                log.warning(
                    "the subscription to %s was lost (%s); subscribing again", self.channel, exc
                )
                self._close_pubsub(pubsub)
                pubsub = self._pubsub = None
                time.sleep(pause)
                pause = min(pause * 2, RESUBSCRIBE_MAX)
                continue
            for kind, when in list(self.renew.items()):
                if time.monotonic() >= when:
                    self.need(kind)
            if message is None or message.get("type") != "message":
                continue
            try:  # bytes that are not UTF-8 (a job's payload or result) come back as they were
                data = json.loads(message["data"].decode("utf-8", "surrogateescape"))
            except ValueError:
                continue
            try:  # first: a wait that returns for this message sees what it did here
                self._on_message(data)
            except Exception:
                log.exception("handling a message of %s failed", self.channel)
            if data.get("o") != self._conn.origin:  # this process counted its own already
                self.bump(
                    data.get("m") or (),
                    claims_only=_only(data, CLAIMS),
                    timers=not _only(data, NO_TIMERS),
                    loud=not data.get("q"),
                )
        self._close_pubsub(pubsub)

    def bump(
        self,
        modes: Iterable[str],
        *,
        claims_only: bool = False,
        timers: bool = True,
        loud: bool = True,
    ) -> None:
        """A change (that may let jobs of ``modes`` start; made of claims alone, which set
        no timer and which only the waits of :data:`EVERY` change wait for; that set no
        timer unless ``timers``; not a quiet one (which no wait of :data:`ENDS` waits for)
        if ``loud``): wake the waits."""
        with self.cond:
            versions = self.versions
            versions[EVERY] += 1
            if loud:
                versions[ENDS] += 1
            if not claims_only:
                versions[None] += 1
            if timers and not claims_only:
                self.timer_moves += 1
            for mode in modes:
                versions[mode] = versions.get(mode, 0) + 1
            self.cond.notify_all()
            blocked = self.blocked
            woken = {mode: blocked[mode] for mode in modes if blocked.get(mode)}
        if woken:
            self._unblock(woken)

    def _bump_all(self) -> None:
        with self.cond:
            self.timer_moves += 1
            for mode in self.versions:
                self.versions[mode] += 1
            self.cond.notify_all()
            woken = {mode: count for mode, count in self.blocked.items() if count}
        if woken:
            self._unblock(woken)

    @staticmethod
    def _close_pubsub(pubsub: Any) -> None:
        if pubsub is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                pubsub.close()

    def seen(self) -> Seen:
        """A copy of the versions, the wakes, and the messages that may have set a timer."""
        with self.cond:
            return dict(self.versions), self.wakes, self.timer_moves

    def timers_moved(self, seen: Seen, mode: str | None) -> bool:
        """Whether a change that may have set a timer that matters to a wait of ``mode`` came
        after ``seen``: for a claimer's wait, one that may let a job of its mode start (a step
        that sets a timer after which a job may start names its mode); else any but a claim."""
        versions, wakes, moves = seen
        with self.cond:
            if self.wakes != wakes:
                return True
            if mode is None or mode == ENDS:
                return self.timer_moves != moves
            return self.versions.get(mode, 0) != versions.get(mode, 0)

    def version(self, mode: str | None) -> int:
        """Messages seen (of ``mode``), plus the wakes: a wake between this read and a wait
        makes the wait return at once."""
        with self.cond:
            return self.versions.get(mode, 0) + self.wakes

    def wait(self, since: int, seconds: float | None, mode: str | None) -> int:
        """Block until the version of ``mode`` is past ``since``, a wake, close, or
        ``seconds``; return the version."""
        until = time.monotonic() + (MAX_WAIT if seconds is None else seconds)
        with self.cond:
            while True:
                version = self.versions.get(mode, 0) + self.wakes
                if version != since or self.closed:
                    return version
                remaining = until - time.monotonic()
                if remaining <= 0:
                    return version
                self.cond.wait(remaining)

    def enter(self, since: int, mode: str) -> int | None:
        """A claimer of ``mode`` blocks on the markers unless the version moved past
        ``since`` (or the listener closed): the wakes seen, else None."""
        with self.cond:
            if self.versions.get(mode, 0) + self.wakes != since or self.closed:
                return None
            self.blocked[mode] = self.blocked.get(mode, 0) + 1
            return self.wakes

    def leave(self, mode: str) -> None:
        """The claimer of :meth:`enter` no longer blocks."""
        with self.cond:
            self.blocked[mode] -= 1

    def wake(self) -> None:
        with self.cond:
            self.wakes += 1
            self.cond.notify_all()
            woken = {mode: count for mode, count in self.blocked.items() if count}
        if woken:
            self._unblock(woken)

    def ask(self, kind: str) -> None:
        """From now on this process needs the changes of ``kind`` (ALL, LOUD) published: the
        first time, its key is set (:meth:`need`), then renewed by the listener."""
        if kind not in self.renew:
            self.need(kind)

    def need(self, kind: str) -> None:
        """This process needs every change (ALL) or every change that is not quiet (LOUD)
        published: (re)set the key of ``kind`` for NEED_TTL_MS, and renew it every NEED_RENEW
        seconds (:meth:`_loop`). A failure is logged and tried again at the next renewal."""
        self.renew[kind] = time.monotonic() + NEED_RENEW
        try:
            self._conn.redis.set(self._conn.key(kind), self._conn.origin, px=NEED_TTL_MS)
        except redis.RedisError as exc:
            self.renew[kind] = time.monotonic() + LISTEN_TICK
            log.warning("asking for the changes of %s failed: %s", self.channel, exc)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
            woken = {mode: count for mode, count in self.blocked.items() if count}
        if woken:
            self._unblock(woken)
        self._close_pubsub(self._pubsub)
        self._client.close()


def _only(data: dict[str, Any], kinds: frozenset[str]) -> bool:
    """Whether the step of a message made only events of ``kinds``, waking no mode and
    stopping nothing."""
    names = data.get("e")
    if not names or data.get("m") or data.get("s"):
        return False
    return all(names[i] in kinds for i in range(0, len(names), 2))


#: the events of a step made of claims alone: it set no timer and ended nothing, and only the
#: waits of :data:`EVERY` change wait for it
CLAIMS = frozenset({"started"})
#: the events of steps that set no timer (a progress step is a change all the same: the HTTP
#: API's event feed waits for it)
NO_TIMERS = frozenset({"started", "progress"})
