"""Event names and the small dispatcher behind ``Queue.on``.

Callbacks run in the thread that caused the change, after the backend released its lock. A
callback that raises is logged and never stops or loses a job. A backend shared across hosts
may relay the events other processes caused (``emit(..., relayed=True)``); a callback
registered with ``relayed=False`` sees only the changes made in this process, so each change
reaches it in exactly one process (the job log, :mod:`conveyor.observe.logfile`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.job import JobRecord

log = logging.getLogger("conveyor.events")

QUEUED = "queued"
STARTED = "started"
FINISHED = "finished"
FAILED = "failed"
RETRYING = "retrying"
CANCELLED = "cancelled"
#: a running job reported how far it got (``conveyor.progress``)
PROGRESS = "progress"
EVENTS = frozenset({QUEUED, STARTED, FINISHED, FAILED, RETRYING, CANCELLED, PROGRESS})

Callback = Callable[["JobRecord"], object]


class EventBus:
    """Holds the callbacks registered with ``on`` and calls them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: dict[str, tuple[Callback, ...]] = {}
        self._local: dict[str, tuple[Callback, ...]] = {}  # not called for relayed events
        #: the events someone listens to (replaced whole by ``on`` and ``off``): a backend
        #: tests ``name in bus.wanted`` before building a record, once per event of every job
        self.wanted: frozenset[str] = frozenset()
        #: the events someone listens to as other processes cause them too (``relayed``)
        self.relayed: frozenset[str] = frozenset()
        self._watchers: tuple[Callable[[], object], ...] = ()

    def on(self, event: str, callback: Callback, *, relayed: bool = True) -> None:
        """Call ``callback(record)`` each time ``event`` happens (with ``relayed`` False: only
        when this process caused it)."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; one of {sorted(EVENTS)}")
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        with self._lock:
            table = self._callbacks if relayed else self._local
            table[event] = (*table.get(event, ()), callback)
            self._update_wanted()
            watchers = self._watchers
        for watcher in watchers:
            watcher()

    def off(self, event: str, callback: Callback) -> None:
        """Stop calling ``callback`` for ``event``."""
        with self._lock:
            for table in (self._callbacks, self._local):
                table[event] = tuple(cb for cb in table.get(event, ()) if cb is not callback)
            self._update_wanted()

    def watch(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` after every ``on``: a backend that relays events learns that
        it has more to relay (it may have to ask the other processes to publish them)."""
        with self._lock:
            self._watchers = (*self._watchers, callback)

    def _update_wanted(self) -> None:
        self.wanted = frozenset(
            event for event in EVENTS if self._callbacks.get(event) or self._local.get(event)
        )
        self.relayed = frozenset(event for event in EVENTS if self._callbacks.get(event))

    def wants(self, event: str) -> bool:
        """True if anyone listens to ``event`` (lets backends skip building records)."""
        return event in self.wanted

    def emit(self, event: str, record: JobRecord, *, relayed: bool = False) -> None:
        """Call every callback of ``event`` (``relayed``: another process caused it, so not
        those registered with ``relayed=False``); log and swallow their errors."""
        local = () if relayed else self._local.get(event, ())
        for callback in (*self._callbacks.get(event, ()), *local):
            try:
                callback(record)
            except Exception:
                log.exception("%s callback %r failed for job %r", event, callback, record.id)
