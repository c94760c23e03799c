"""The memory backend's lock and what runs after it: wake-ups and callbacks.

Every method of the backend changes the engine under one lock, then wakes the claimers and
waits the change calls for and runs the callbacks it set off (events, done callbacks) once the
lock is let go, so that a callback may call the backend again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from conveyor.backends.memory.engine import Engine
from conveyor.backends.memory.locking import YieldingLock
from conveyor.backends.memory.state import Entry
from conveyor.errors import UnknownJob

log = logging.getLogger("conveyor.backends.memory")


class Locked:
    """The engine behind one lock, with the conditions that blocked calls wait on."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._clock = engine.clock
        self._lock = YieldingLock()
        #: waits for an end, for room under max_size, for idle
        self._changed = threading.Condition(self._lock)  # type: ignore[arg-type]
        #: claims blocked on a mode, one condition per mode
        self._claimable: dict[str, threading.Condition] = {}
        self._waiters = 0  # calls blocked on _changed
        self._closed = False

    def _entry(self, job_id: str) -> Entry:
        entry = self._engine.jobs.get(job_id)
        if entry is None:
            raise UnknownJob(job_id)
        return entry

    def _wait_changed(self, timeout: float | None) -> None:
        """Block on ``_changed`` (an end, room under max_size, a timer moved) for at most
        ``timeout`` seconds; waits already blocked are first told of ends not yet told."""
        if self._engine.some_ended:
            self._engine.some_ended = False
            if self._waiters:
                self._changed.notify_all()
        self._waiters += 1
        try:
            self._changed.wait(timeout)
        finally:
            self._waiters -= 1

    def _take_effects(self) -> list[Callable[[], object]]:
        """Wake the claimers and waits the change calls for; hand back the callbacks to run
        once the lock is let go."""
        engine = self._engine
        if engine.wakeups or engine.timer_moved:
            self._wake_claimers()
        if engine.some_ended:
            engine.some_ended = False
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
        else:
            for mode, count in engine.wakeups.items():
                cond = self._claimable.get(mode)
                if cond is not None:
                    cond.notify(count)
        engine.wakeups.clear()

    def _run_locked_effects(self) -> bool:
        """Effects produced by a claim that found nothing (expiry ticks) run before it waits;
        True if they ran (the lock was let go, so the claim must look again)."""
        effects = self._take_effects()
        if not effects:
            return False
        self._lock.release()
        try:
            self._run(effects)
        finally:
            self._lock.acquire()
        return True

    @staticmethod
    def _run(effects: list[Callable[[], object]]) -> None:
        for effect in effects:
            try:
                effect()
            except Exception:  # a callback's error must not skip the others nor lose a job
                log.exception("a callback of the memory backend failed")
