"""A lock that does not convoy under the GIL.

With a plain ``threading.Lock`` shared by busy worker threads, a thread that finds the lock
held blocks in the kernel; when the holder releases it, the waiter takes the lock while still
waiting for the GIL, so the holder blocks on its very next acquire, and the two threads hand
the lock (and the GIL) back and forth on every job: a context switch per job. Here a waiter
first yields the GIL a few times (``time.sleep(0)``) and retries, so the running thread keeps
both and the waiter gets its turn at the next GIL switch. Critical sections never block, so
the spin is short; after ``SPINS`` tries the waiter blocks as usual.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

#: tries (each yielding the GIL once) before a waiter blocks in the kernel
SPINS = 100


class YieldingLock:
    """A non-reentrant lock with the ``threading.Lock`` interface that yields before blocking."""

    __slots__ = ("_lock", "locked", "release")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.release = self._lock.release
        self.locked = self._lock.locked

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock; like ``threading.Lock.acquire``."""
        lock = self._lock
        if lock.acquire(False):
            return True
        if not blocking:
            return False
        for _ in range(SPINS):
            time.sleep(0)  # let the holder run on to its release
            if lock.acquire(False):
                return True
        return lock.acquire(True, timeout)

    def __enter__(self) -> bool:
        # the free lock taken here, without a second call: every backend call enters once
        return self._lock.acquire(False) or self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.release()
