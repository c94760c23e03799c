"""The time source handed to backends and workers.

Scheduling time (delay, at, expires, retry backoff, leases) comes from one clock object, so a
test can swap in :class:`ManualClock` and move time instead of sleeping. A job's own ``timeout``
is measured in real (monotonic) seconds: it bounds how long the job's code really runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: the longest a single wait blocks (seconds); a waiter then looks at the time again, so a
#: deadline years ahead never hands a blocking call more than it can take
MAX_WAIT = 3600.0


class Clock:
    """Real time. Subclass to control time in tests."""

    def now(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    def wait_time(self, deadline: float) -> float | None:
        """Real seconds to block before ``deadline`` is reached; None to block until woken."""
        return min(MAX_WAIT, max(0.0, deadline - time.time()))

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever time jumps (a real clock never jumps)."""

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback``."""


class ManualClock(Clock):
    """A clock that moves only when told: ``advance(seconds)`` or ``set(timestamp)``.

    Waiters blocked on a scheduled time are woken when the clock moves past it.
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else float(start)
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def now(self) -> float:
        return self._now

    def wait_time(self, deadline: float) -> float | None:
        return 0.0 if deadline <= self._now else None

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds``; return the new time."""
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        return self.set(self._now + seconds)

    def set(self, timestamp: float) -> float:
        """Move time forward to ``timestamp``; return it."""
        with self._lock:
            if timestamp < self._now:
                raise ValueError("a clock only moves forward")
            self._now = float(timestamp)
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback()
        return self._now

    def subscribe(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._callbacks.append(callback)

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)
