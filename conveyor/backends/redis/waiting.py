"""Waiting for a change of a Redis queue: the protocol's ``version`` and ``wait``, a result's
wait (``wait_job``), and what the messages of other processes carry (:mod:`.listener` reads
them).

Most waits wait for jobs' ends (:data:`~conveyor.backends.base.ENDS`: idle, many results, done
callbacks), and a claimer is woken by a marker or handed a job: the quiet changes (jobs queued
or started, progress, nothing else) concern none of them, and are published only while some
process needs every change, which it says with the key ``all``: a wait of every change
(``version(None)``, the HTTP API's feed; :data:`~.listener.EVERY`), or callbacks of quiet events
that it relays. The other changes are published while some process asks with the key ``ends``.
A thread waiting for one job's result needs no message at all: the step that ends the job leaves
a note on the thread's own key (:meth:`Waiting.wait_job`).

A claimer with nothing to do blocks on the wake-up markers instead (:mod:`.markers`): a job
made ready wakes one claimer, not all; the changes above that concern its mode wake it through
its backend's wake key. A message that carries ended jobs (those a read here waited for) lets
the next read of them be answered from it, as long as no other change came since.

A change made by this process wakes its waits when the step's answer is in and its events
were emitted (:meth:`Waiting._changed`), not when its own message comes back: a waiter that sees
a job end here sees its events delivered, as on SQLite. No wait polls: a wait blocks on a
condition, bounded by the queue's next timer so that a delayed job starts on time. The next
timer is read from Redis in the round trip of the claims and reads (a wait often follows one),
or when a wait starts, and kept with what the listener had seen before it was read: it holds
for a wait until a message that may have set a timer that matters to it comes (for a
claimer, one that may let a job of its mode start: a step that sets such a timer names the
job's mode; for other waits, any message but that of a claim alone). A change made elsewhere
meanwhile wakes the wait when its message comes, and the next wait reads the timer again.
After the subscription was lost and made again (messages may have been missed meanwhile),
every version moves on: every wait looks at the state again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis

from conveyor.backends.base import ENDS
from conveyor.backends.redis.connection import Connection
from conveyor.backends.redis.decode import Hash, record, snapshot
from conveyor.backends.redis.listener import (
    ALL,
    EVERY,
    LOUD,
    QUIET_EVENTS,
    Listener,
    Seen,
)
from conveyor.backends.redis.markers import Markers, handed
from conveyor.errors import QueueClosed, UnknownJob
from conveyor.job import TERMINAL, JobRecord
from conveyor.records import ClaimedJob

log = logging.getLogger("conveyor.backends.redis")

#: the statuses of an ended job, as a job's hash holds them
ENDED = frozenset(status.value.encode() for status in TERMINAL)


class Waiting(Connection):
    """``version``/``wait`` over the listener; other processes' events relayed here."""

    _listener: Listener
    #: running jobs of this process's workers cancelled by another process: job id -> the
    #: worker slot that ran it (until that worker's next heartbeat)
    _stops: dict[str, str]
    #: the workers registered through this backend (they run in this process)
    _local_workers: set[str]

    def _start_listening(self) -> None:
        self._stops = {}
        self._local_workers = set()
        #: the queue's next timer, and what was seen before it was read
        self._timer: tuple[Seen, float | None] | None = None
        #: the ended jobs of the last message from elsewhere that carried some (the jobs a
        #: read here waited for), and the version they hold at
        self._ends: tuple[int, dict[str, Hash]] | None = None
        self._markers = Markers(self)
        #: per thread, the slot that last claimed jobs of each mode (it registers as idle
        #: when it blocks): mode -> slot
        self._slots = threading.local()
        #: the slots registered as idle here (slot -> mode), and the jobs handed over to them
        #: and not claimed yet
        self._idle: dict[str, str] = {}
        self._handed: dict[str, ClaimedJob] = {}
        self._listener = Listener(self, self._message, self._markers.unblock)
        self._bus.watch(self._events_wanted)
        self._events_wanted()

    @property
    def _slot(self) -> dict[str, str]:
        """The calling thread's slot of each mode (see :meth:`_wait_claim`)."""
        try:
            found: dict[str, str] = self._slots.value
        except AttributeError:
            found = self._slots.value = {}
        return found

    def _events_wanted(self) -> None:
        """Callbacks of quiet events that other processes cause too: every change is
        needed."""
        relayed = self._bus.relayed
        if relayed & QUIET_EVENTS:
            self._listener.ask(ALL)
        if relayed - QUIET_EVENTS:
            self._listener.ask(LOUD)

    def _timers_token(self) -> Seen:
        return self._listener.seen()

    def _timers_read(self, token: Seen, modes: list[str] | None, timer: float | None) -> None:
        versions, wakes, moves = token
        if modes is not None:  # the step's own change, counted since (as `bump` does)
            versions[None] += 1
            versions[EVERY] += 1
            for mode in modes:
                versions[mode] = versions.get(mode, 0) + 1
            moves += 1
        self._timer = ((versions, wakes, moves), timer)

    def _changed(self, modes: list[str]) -> None:
        self._listener.bump(modes)

    def _message(self, data: dict[str, Any]) -> None:
        """(The listener's thread) a change: note its stops, relay another process's events."""
        stops = data.get("s")
        if stops:
            local = self._local_workers
            for i in range(0, len(stops), 2):
                if stops[i + 1].rpartition("/")[0] in local:  # a worker registered here
                    self._stops[stops[i]] = stops[i + 1]
        if data.get("o") == self.origin:
            return  # this process emitted them already
        ends = data.get("r")
        listener: Listener | None = getattr(self, "_listener", None)  # None: starting
        # good until another change (the version after it), if this process hears of every
        # change that may touch an ended job (it needs them published)
        if ends and listener is not None and listener.renew:
            self._ends = (
                listener.version(None) + 1,
                {ends[i]: _hash(ends[i + 1]) for i in range(0, len(ends), 2)},
            )
        names = data.get("e") or ()
        bus = self._bus
        wanted = [(names[i], names[i + 1]) for i in range(0, len(names), 2) if bus.wants(names[i])]
        if not wanted:
            return
        pipe = self.redis.pipeline(transaction=False)
        for _, job_id in wanted:
            pipe.hgetall(self.key("j:" + job_id))
        for (name, _), found in zip(wanted, pipe.execute(), strict=True):
            if found:
                h = {field.decode(): value for field, value in found.items()}
                bus.emit(name, record(h, self.serializer, results=True), relayed=True)

    def _ended(self, ids: Sequence[str]) -> list[Hash] | None:
        """The hashes of ``ids`` as the last message from elsewhere carried them, if it
        carried them all and nothing changed since; else None."""
        ends = self._ends
        if ends is None or ends[0] != self._listener.version(None):
            return None
        found = ends[1]
        if not all(job_id in found for job_id in ids):
            return None
        return [found[job_id] for job_id in ids]

    def version(self, mode: str | None = None) -> int:
        """See :meth:`conveyor.backends.base.Backend.version`; from now on, a version of
        every change (None, EVERY) makes every process publish every change, and one of ENDS
        every change that is not quiet."""
        listener = self._listener
        if mode is None or mode == EVERY:
            listener.ask(ALL)
        elif mode == ENDS:
            listener.ask(LOUD)
        return listener.version(mode)

    def wait(self, since: int, timeout: float | None, *, mode: str | None = None) -> int:
        """See :meth:`conveyor.backends.base.Backend.wait`; raises QueueClosed once closed."""
        if self._closed:
            raise QueueClosed("the queue is closed")
        timer = self._next_timer(mode)
        limit = None if timer is None else self._clock.wait_time(timer)
        if limit is not None and timeout is not None:
            limit = min(limit, timeout)
        elif limit is None:
            limit = timeout
        if mode is None or mode in (EVERY, ENDS):
            return self._listener.wait(since, limit, mode)
        return self._wait_claim(since, limit, mode)

    def _wait_claim(self, since: int, seconds: float | None, mode: str) -> int:
        """A claimer's wait: block on the markers of ``mode`` (see :mod:`.markers`); the
        slot that last claimed jobs of ``mode`` on this thread registers as idle meanwhile,
        and keeps a job handed over to it for its next claim."""
        listener = self._listener
        wakes = listener.enter(since, mode)
        if wakes is None:
            return listener.version(mode)
        slot = self._slot.get(mode)
        if slot is not None:
            self._idle[slot] = mode
        try:
            popped = self._markers.block(
                mode, seconds, lambda: listener.version(mode) != since or listener.closed, slot
            )
        finally:
            listener.leave(mode)
        # a claimer that will not claim now (it stops): what it took is passed on
        stopping = listener.wakes != wakes or listener.closed
        kind = None if popped is None else popped[0]
        if kind == "marker" and stopping:
            self._markers.give_back(mode, popped[1])  # type: ignore[index]
        elif kind == "hand":
            assert slot is not None
            self._idle.pop(slot, None)  # hand_over ended the registration
            job = handed(popped[1])  # type: ignore[index]
            if stopping:
                self._put_back(job)
            else:
                self._handed[slot] = job
        if slot is not None and stopping and kind != "hand":
            self.release_slots(slot)
        return listener.version(mode)

    def _put_back(self, job: ClaimedJob) -> None:
        """A job handed over to a slot that will not run it: back to waiting, uncounted."""
        try:
            self.run("requeue", job.id, job.attempt)
        except Exception as exc:  # it comes back once its lease runs out
            log.warning("putting back job %s handed over to a stopping slot failed: %s",
                        job.id, exc)  # fmt: skip

    def release_slots(self, prefix: str) -> None:
        """The slots named ``prefix`` (or under ``prefix/``; "": all of them) idle no more:
        their registrations end, and a job handed over to them is put back (a worker that
        stops, the backend closed)."""

        def matches(slot: str) -> bool:
            return not prefix or slot == prefix or slot.startswith(prefix + "/")

        for slot, job in list(self._handed.items()):
            if matches(slot) and self._handed.pop(slot, None) is not None:
                self._put_back(job)
        for slot, mode in list(self._idle.items()):
            if matches(slot):
                self._idle.pop(slot, None)
                try:  # a claim of nothing: ends the registration, puts back a hand-over
                    self.run("claim", slot, mode, 0, 0, 0, 0)
                except Exception as exc:  # it lapses within IDLE_TTL seconds anyway
                    log.warning("ending the idle registration of %s failed: %s", slot, exc)

    def wait_job(self, job_id: str, timeout: float | None = None) -> JobRecord:
        """Block until the job has ended; its record (results decoded). Raises TimeoutError,
        UnknownJob, QueueClosed.

        No message to every process is needed: the read that finds the job active asks the
        step that ends it for a note (``read.lua``, ``watch``), left on this thread's own key,
        where the wait blocks (with the wakes of this backend, and up to the queue's next
        timer, which the read brought along: a job that expires is seen to)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        listener = self._listener
        token = f"{self.origin}:{threading.get_ident()}"
        while True:
            since = listener.version(ENDS)
            (flat,) = self.run("read", "watch", token, job_id)
            self._settle()
            if not flat:
                raise UnknownJob(job_id)
            h = snapshot(flat)
            if h["status"] in ENDED:
                return record(h, self.serializer, results=True)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"1 job(s) did not end within {timeout} s")
            timer = self._next_timer(ENDS)
            limit = None if timer is None else self._clock.wait_time(timer)
            if limit is None or (remaining is not None and remaining < limit):
                limit = remaining
            noted = self._await_note(token, job_id, since, limit)
            if noted is not None:
                self._settle()  # the events of an end made here were emitted
                return record(noted, self.serializer, results=True)
            if self._closed:
                raise QueueClosed("the queue is closed")

    def _await_note(
        self, token: str, job_id: str, since: int, seconds: float | None
    ) -> Hash | None:
        """Block until a note of the end of ``job_id`` comes for ``token`` (its hash), a
        wake of this backend, or ``seconds`` pass (None)."""
        listener = self._listener
        if listener.enter(since, ENDS) is None:
            return None
        try:
            popped = self._markers.block(
                ENDS,
                seconds,
                lambda: listener.version(ENDS) != since or listener.closed,
                note=self.key("n:" + token),
            )
        finally:
            listener.leave(ENDS)
        if popped is None or popped[0] != "note":
            return None
        noted_id, flat = json.loads(popped[1].decode("utf-8", "surrogateescape"))
        return _hash(flat) if noted_id == job_id else None  # else an earlier wait's

    def _next_timer(self, mode: str | None) -> float | None:
        """When the queue's next timer falls due (a delay, a retry, an expiry), if any: as
        last read, unless a change (that may let a job of ``mode`` start) was seen since: a
        step that sets a timer after which a job may start says so for the job's mode."""
        listener = self._listener
        kept = self._timer
        if kept is not None and not listener.timers_moved(kept[0], mode):
            return kept[1]
        token = listener.seen()

        def read(r: redis.Redis) -> Any:
            pipe = r.pipeline(transaction=False)
            pipe.zrange(self.key("due"), 0, 0, withscores=True)
            pipe.zrange(self.key("expiry"), 0, 0, withscores=True)
            return pipe.execute()

        times = [found[0][1] for found in self.read(read) if found]
        timer = min(times) if times else None
        self._timer = (token, timer)
        return timer

    def wake(self) -> None:
        """Make every blocked wait return now."""
        self._listener.wake()

    def _stop_listening(self) -> None:
        self._listener.close()


def _hash(flat: list[str]) -> Hash:
    """A job's flat HGETALL as a message carried it (JSON text): its bytes again."""
    return {flat[i]: flat[i + 1].encode("utf-8", "surrogateescape") for i in range(0, len(flat), 2)}
