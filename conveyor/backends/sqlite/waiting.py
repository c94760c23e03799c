"""Waiting for a change of the SQLite file: the protocol's ``version`` and ``wait``.

The version is this process's commits plus ``PRAGMA data_version`` (which grows with the
commits of other connections): a commit here wakes this process's waits at once, one by
another process is seen within ``POLL_INTERVAL``. Every mode shares the one version.

Of the threads that wait at a time, one looks at ``data_version`` every POLL_INTERVAL (the
poller); a change it sees wakes the others, which otherwise sleep until a commit here, their
timeout, or the poller's leaving (one of them takes its place). An idle worker's cost does not
grow with its slots.
"""

from __future__ import annotations

import time

from conveyor.backends.sqlite.schema import NEXT_TIMER
from conveyor.backends.sqlite.storage import READ_FAILED, Storage
from conveyor.clock import MAX_WAIT
from conveyor.errors import QueueClosed

#: seconds between looks at ``PRAGMA data_version`` while waiting for another process
POLL_INTERVAL = 0.005


class Waiting(Storage):
    """``version``/``wait`` over this process's commits and other processes'."""

    #: whether a waiting thread looks at data_version for the others (see the module)
    _polling = False
    #: the data_version last read (a new one wakes the waiting threads)
    _data_seen = 0

    def _generation(self) -> tuple[int, int]:
        """This process's commits and ``PRAGMA data_version`` (-1 once closed)."""
        with self._lock:
            if self._closed:
                return self._commits, -1
            row = self._one("PRAGMA data_version")
            data = row["data_version"] if row else 0
            if data != self._data_seen:
                self._data_seen = data
                self._changed.notify_all()  # another process committed: every wait looks
            return self._commits, data

    def version(self, mode: str | None = None) -> int:
        """See :meth:`conveyor.backends.base.Backend.version` (one version for every mode)."""
        commits, data = self._generation()
        return commits + data

    def wait(self, since: int, timeout: float | None, *, mode: str | None = None) -> int:
        """See :meth:`conveyor.backends.base.Backend.wait`; raises QueueClosed once closed."""
        with self._lock, self._storage(READ_FAILED):
            if self._closed:
                raise QueueClosed("the queue is closed")
            row = self._one(NEXT_TIMER)
            wakes = self._wakes
        timer = next(iter(row.values())) if row else None
        limit = None if timer is None else self._clock.wait_time(timer)
        start = time.monotonic()
        until = start + (MAX_WAIT if limit is None else limit)
        if timeout is not None:
            until = min(until, start + timeout)
        polling = False  # whether this thread is the poller (see the module)
        try:
            while True:
                commits, data = self._generation()
                version = commits + data
                if version != since or data < 0 or self._wakes != wakes:
                    return version
                remaining = until - time.monotonic()
                if remaining <= 0:
                    return version  # the timeout passed, or a timer is due
                with self._lock:
                    if self._commits != commits or self._wakes != wakes or self._closed:
                        continue
                    if self._data_seen != data:
                        continue  # the poller saw another process's commit meanwhile
                    if not polling and not self._polling:
                        polling = self._polling = True
                    if polling:
                        self._changed.wait(min(POLL_INTERVAL, remaining))
                    else:  # until a commit here, the poller's news, or its leaving
                        self._changed.wait(remaining)
        finally:
            if polling:
                with self._lock:
                    self._polling = False
                    self._changed.notify_all()  # a waiter left behind takes over the polling
