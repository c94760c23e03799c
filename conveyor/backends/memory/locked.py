"""The memory backend's lock, what runs after it, and waiting for a change.

Every method of the backend changes the engine under one lock, then wakes the waits the change
calls for and runs the callbacks it set off (events) once the lock is let go, so that a
callback may call the backend again.

Versions: the engine's ``changes`` is the global one (every job stored, dropped or changing
status); each mode has its own, bumped where claimers of that mode are woken (a job of that
mode became a candidate, a key it waits on was freed). A wait of a mode sleeps on that mode's
condition and is woken as many at a time as jobs became ready; a wait for any change sleeps on
``_changed``. A timer that falls due ends every wait (the clock's ``subscribe`` wakes them
when a manual clock moves).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from conveyor.backends.base import ENDS
from conveyor.backends.memory.engine import Engine
from conveyor.backends.memory.locking import YieldingLock
from conveyor.backends.memory.state import Entry
from conveyor.errors import QueueClosed, UnknownJob

log = logging.getLogger("conveyor.backends.memory")


class Locked:
    """The engine behind one lock, with the conditions that blocked calls wait on."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._clock = engine.clock
        self._lock = YieldingLock()
        #: waits for any change (version without a mode), and for room under max_size
        self._changed = threading.Condition(self._lock)  # type: ignore[arg-type]
        #: waits of a mode, one condition per mode
        self._claimable: dict[str, threading.Condition] = {}
        #: the version of each mode
        self._versions: dict[str, int] = {}
        self._told = 0  # the global version the waits on _changed were last told of
        self._waiters = 0  # calls blocked on _changed
        self._wakes = 0  # calls of wake(): every blocked wait returns
        self._closed = False

    def _entry(self, job_id: str) -> Entry:
        entry = self._engine.jobs.get(job_id)
        if entry is None:
            raise UnknownJob(job_id)
        return entry

    # ----------------------------------------------------------------- versions
    def version(self, mode: str | None = None) -> int:
        """See :meth:`conveyor.backends.base.Backend.version` (:data:`ENDS`: every change)."""
        if mode is None or mode == ENDS:
            return self._engine.changes
        return self._versions.get(mode, 0)

    def wait(self, since: int, timeout: float | None, *, mode: str | None = None) -> int:
        """See :meth:`conveyor.backends.base.Backend.wait`; raises QueueClosed once closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        engine = self._engine
        if mode == ENDS:
            mode = None  # every change counts
        with self._lock:
            if self._closed:
                raise QueueClosed("the queue is closed")
            cond = self._changed
            if mode is not None:
                cond = self._claimable.get(mode) or self._add_mode(mode)
            wakes = self._wakes
            while True:
                now = engine.changes if mode is None else self._versions.get(mode, 0)
                if now != since or self._wakes != wakes or self._closed:
                    return now
                wait = engine.timer_wait()
                if wait is not None and wait <= 0:
                    return now  # a timer is due: the caller's next call applies it
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return now
                    wait = remaining if wait is None else min(wait, remaining)
                if mode is None:
                    self._wait_changed(wait)
                else:
                    cond.wait(wait)

    def _add_mode(self, mode: str) -> threading.Condition:
        cond = self._claimable[mode] = threading.Condition(self._lock)  # type: ignore[arg-type]
        return cond

    def wake(self) -> None:
        """See :meth:`conveyor.backends.base.Backend.wake`."""
        with self._lock:
            self._wakes += 1
            for cond in self._claimable.values():
                cond.notify_all()
            self._changed.notify_all()

    # ------------------------------------------------------------------ wake-ups
    def _wait_changed(self, timeout: float | None) -> None:
        """Block on ``_changed`` (any change, a timer moved, a wake) for at most ``timeout``
        seconds; waits already blocked are first told of changes not yet told."""
        self._tell_changes()
        self._waiters += 1
        try:
            self._changed.wait(timeout)
        finally:
            self._waiters -= 1

    def _tell_changes(self) -> None:
        changes = self._engine.changes
        if changes != self._told:
            self._told = changes
            if self._waiters:
                self._changed.notify_all()

    def _take_effects(self) -> list[Callable[[], object]]:
        """Wake the waits the change calls for; hand back the callbacks to run once the lock
        is let go."""
        engine = self._engine
        if engine.wakeups or engine.timer_moved:
            self._wake_claimers()
        if engine.changes != self._told:
            self._told = engine.changes
            if self._waiters:
                self._changed.notify_all()
        effects = engine.effects
        if effects:
            engine.effects = []
        return effects

    def _wake_claimers(self) -> None:
        engine = self._engine
        if engine.timer_moved:  # every blocked wait measured its sleep to a later timer
            engine.timer_moved = False
            for blocked in self._claimable.values():
                blocked.notify_all()
            if self._waiters:
                self._changed.notify_all()
        versions = self._versions
        for mode, count in engine.wakeups.items():
            versions[mode] = versions.get(mode, 0) + 1
            cond = self._claimable.get(mode)
            if cond is not None:
                cond.notify(count)
        engine.wakeups.clear()

    @staticmethod
    def _run(effects: list[Callable[[], object]]) -> None:
        for effect in effects:
            try:
                effect()
            except Exception:  # a callback's error must not skip the others nor lose a job
                log.exception("a callback of the memory backend failed")
