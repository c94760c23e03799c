"""The live event feed of the HTTP API, built once on the Backend protocol for every backend.

One watcher thread per app (running while a client listens) loops: read the backend's
version, read the records, compare them with the last look, tell every subscriber what
changed, then block in ``backend.wait(version)`` until the next change. So it sees the jobs
that other processes run (SQLite relays no events), and a job that went through several
steps between two looks still yields each of them (queued, started, then its end), from the
record's own fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from conveyor import events as ev
from conveyor.errors import ConveyorError
from conveyor.job import TERMINAL, JobRecord, Status

if TYPE_CHECKING:
    from conveyor.backends.base import Backend

log = logging.getLogger("conveyor.web")

#: the least time between two looks at the records (each reads every record)
MIN_INTERVAL = 0.05
#: how long one wait for a change lasts before the watcher checks it still has listeners
WAIT = 1.0
#: the most events a subscriber may have unread; past it, its stream ends
BACKLOG = 10_000
#: the event a change of a job's progress yields
PROGRESS = "progress"

END_EVENT = {
    Status.FINISHED: ev.FINISHED,
    Status.FAILED: ev.FAILED,
    Status.CANCELLED: ev.CANCELLED,
}


@dataclass(frozen=True, slots=True)
class Seen:
    """What the feed remembers of a job between two looks."""

    status: Status
    attempts: int
    started: datetime | None
    progress: float | None


def seen(record: JobRecord) -> Seen:
    """The part of ``record`` whose change is an event."""
    return Seen(record.status, record.attempts, record.started, record.progress)


def changes(before: Seen | None, record: JobRecord) -> list[str]:
    """The events between what was seen of a job (None: not seen yet) and ``record``."""
    now = seen(record)
    if now == before:
        return []
    status = record.status
    began = _began(before, record)
    # put, or put back by a retry (which may have run and ended since)
    fresh = before is None or (before.status in TERMINAL and (status not in TERMINAL or began))
    found = [ev.QUEUED] if fresh else []
    running = status is Status.RUNNING or (status in TERMINAL and began and record.attempts > 0)
    if running and (began or before is None or before.status is not Status.RUNNING):
        found.append(ev.STARTED)
    pending = status in (Status.SCHEDULED, Status.WAITING)
    if pending and record.attempts > 0 and not fresh:
        if before is not None and (before.status is Status.RUNNING or began):
            found.append(ev.RETRYING)
    elif pending and record.attempts > 0 and before is None and status is Status.SCHEDULED:
        found.append(ev.RETRYING)
    # a new value (the first may have come with the start, between two looks), before the end
    if now.progress is not None and (before is None or now.progress != before.progress):
        found.append(PROGRESS)
    if status in TERMINAL and (before is None or before.status not in TERMINAL or began):
        found.append(END_EVENT[status])
    return found


def _began(before: Seen | None, record: JobRecord) -> bool:
    """Whether an attempt began since the last look (it may have ended too). A job that was
    running then counts a new attempt by its attempts (a worker that claimed it ahead counts
    the first one, and sets its real start time, once a slot started it); one that was not
    running, by its start time."""
    if before is None:
        return record.started is not None
    if before.status is Status.RUNNING:
        return record.attempts > before.attempts > 0
    return record.started is not None and record.started != before.started


class Subscriber:
    """One client's events, handed from the watcher thread to its event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.events: asyncio.Queue[tuple[str, JobRecord] | None] = asyncio.Queue()
        self.pending = 0  # events handed over, not read yet
        self.closed = False
        self._lock = threading.Lock()

    def put(self, item: tuple[str, JobRecord] | None) -> None:
        """Hand over an event (thread-safe); None ends the stream."""
        if self.closed:
            return
        if item is not None:
            with self._lock:
                self.pending += 1
                if self.pending > BACKLOG:  # a client that does not read: end its stream
                    self.closed, item = True, None
        with contextlib.suppress(RuntimeError):  # its loop closed: it is gone
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)

    async def get(self) -> tuple[str, JobRecord] | None:
        """The next event; None when the stream ends."""
        item = await self.events.get()
        if item is not None:
            with self._lock:
                self.pending -= 1
        return item


class Feed:
    """Watches a backend for every subscriber of one app (see the module's docstring)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._lock = threading.Lock()
        self._subscribers: set[Subscriber] = set()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop = False

    @property
    def listeners(self) -> int:
        """How many subscribers there are."""
        return len(self._subscribers)

    @property
    def watching(self) -> bool:
        """Whether the watcher thread runs."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def subscribe(self, loop: asyncio.AbstractEventLoop) -> Subscriber:
        """A new subscriber, told of every change after this returns (blocks until the watcher
        has taken its first look)."""
        subscriber = Subscriber(loop)
        with self._lock:
            self._subscribers.add(subscriber)
            if self._thread is None or not self._thread.is_alive():
                self._ready.clear()
                self._stop = False
                self._thread = threading.Thread(
                    target=self._watch, name="conveyor-web-feed", daemon=True
                )
                self._thread.start()
        self._ready.wait()
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop telling ``subscriber``; the watcher stops with its last subscriber."""
        subscriber.closed = True
        with self._lock:
            self._subscribers.discard(subscriber)
        if not self._subscribers:
            self.backend.wake()

    def close(self) -> None:
        """End every stream and stop the watcher."""
        self._end()
        self.backend.wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _end(self) -> None:
        """End every stream; the watcher stops at its next turn."""
        with self._lock:
            self._stop = True
            subscribers, self._subscribers = list(self._subscribers), set()
        for subscriber in subscribers:
            subscriber.put(None)

    def _look(self) -> dict[str, JobRecord]:
        return {record.id: record for record in self.backend.query()}

    def _watch(self) -> None:
        memory: dict[str, Seen] = {}
        try:
            version = self.backend.version()
            memory = {job_id: seen(r) for job_id, r in self._look().items()}
            self._ready.set()
            while True:
                with self._lock:
                    if self._stop or not self._subscribers:
                        return
                self.backend.wait(version, WAIT)
                time.sleep(MIN_INTERVAL)  # let a burst of changes land: one look for them
                version = self.backend.version()
                for event, record in self._diff(memory, self._look()):
                    self._publish(event, record)
        except ConveyorError as exc:  # a closed queue, a storage error: end the streams
            log.warning("the event feed stopped: %s", exc)
            self._end()
        finally:
            self._ready.set()
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None

    @staticmethod
    def _diff(
        memory: dict[str, Seen], records: dict[str, JobRecord]
    ) -> Iterator[tuple[str, JobRecord]]:
        for job_id, record in records.items():
            before = memory.get(job_id)
            for event in changes(before, record):
                yield event, record
            memory[job_id] = seen(record)
        for job_id in set(memory) - set(records):  # purged, popped
            del memory[job_id]

    def _publish(self, event: str, record: JobRecord) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber.put((event, record))
