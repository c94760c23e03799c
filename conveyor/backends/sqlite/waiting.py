"""Waiting on the SQLite backend: for results, for a job's end (done callbacks), for idle.

Each wait loops on :meth:`~.storage.Storage._wait`: woken at once by this process's commits,
and within ``POLL_INTERVAL`` by other processes' (``PRAGMA data_version``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from conveyor.backends.sqlite.reading import Reading
from conveyor.errors import UnknownJob
from conveyor.job import TERMINAL, JobRecord, Status

log = logging.getLogger("conveyor.backends.sqlite")


class Waiting(Reading):
    """Blocking reads: results, done callbacks (a watcher thread for other processes'
    changes), idle."""

    _watcher: threading.Thread | None

    def wait_results(
        self,
        job_ids: Sequence[str],
        timeout: float | None = None,
        *,
        first_failure: bool = False,
    ) -> list[tuple[Status, Any, str | None]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            since = self._generation()
            self._tick_if_due()
            statuses = self._statuses(job_ids)
            active = [i for i in job_ids if statuses[i] not in TERMINAL]
            failed = any(s in TERMINAL and s != Status.FINISHED for s in statuses.values())
            if not active or (first_failure and failed):
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{len(active)} job(s) did not end within {timeout} s")
            self._wait(since, deadline)
        outcomes = []
        for job_id in job_ids:
            record = self._get(job_id, results=True)
            outcomes.append((record.status, record.result, record.error))
        return outcomes

    def wait_done(self, job_id: str, timeout: float | None = None) -> JobRecord:
        self.wait_results([job_id], timeout)
        return self._get(job_id, results=True)

    def add_done_callback(self, job_id: str, callback: Callable[[JobRecord], object]) -> None:
        record = self.get(job_id)
        if record.status in TERMINAL:
            callback(record)
            return
        with self._lock:
            self._callbacks.setdefault(job_id, []).append(callback)
            if self._watcher is None:
                self._watcher = threading.Thread(
                    target=self._watch, daemon=True, name="conveyor-sqlite-watch"
                )
                self._watcher.start()

    def _watch(self) -> None:
        """Fire done callbacks for jobs ended by other processes."""
        while not self._closed:
            since = self._generation()
            with self._lock:
                ids = list(self._callbacks)
            if ids:
                try:
                    ended = [i for i, s in self._statuses(ids).items() if s in TERMINAL]
                except UnknownJob:
                    ended = []
                for job_id in ended:
                    with self._lock:
                        callbacks = self._callbacks.pop(job_id, [])
                    if callbacks:
                        record = self.get(job_id)
                        for callback in callbacks:
                            try:
                                callback(record)
                            except Exception:
                                log.exception("done callback failed for job %r", job_id)
            self._wait(since, None)

    def wait_idle(
        self,
        timeout: float | None = None,
        on_change: Callable[[dict[Status, int]], object] | None = None,
    ) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        last: dict[Status, int] | None = None
        while True:
            since = self._generation()
            counts = self.counts()
            active = counts[Status.WAITING] + counts[Status.SCHEDULED] + counts[Status.RUNNING]
            if on_change is not None and counts != last:
                on_change(counts)
                last = counts
            if (
                not active
                or self._closed
                or (deadline is not None and time.monotonic() >= deadline)
            ):
                return active
            self._wait(since, deadline)
