"""Waiting, written once on the Backend protocol: for a job's end, for many results, for idle,
for an ended job to pop, and done callbacks.

Each wait loops on the same three steps: read :meth:`~conveyor.backends.base.Backend.version`
(of :data:`~conveyor.backends.base.ENDS`: what they wait for comes with a job's end),
look at the state (``query``, ``counts``, ``pop_ended``), and if what it waits for is not there
yet, :meth:`~conveyor.backends.base.Backend.wait` for a change (no change is missed: the
version was read before the look). No backend waits, calls back or keeps callables of its own.

Costs stay linear: many results are waited for in order (after each change, only the first job
still active is looked at, then the ones after it while they have ended), and a failure among
them is noticed from the failed and cancelled counts growing. Done callbacks fire from the
events the backend emits (``finished``, ``failed``, ``cancelled``, each carrying the record)
for ends in this process; on a ``shared`` backend, where other processes end jobs too, one
watcher thread looks at the watched jobs after each change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from conveyor import events as ev
from conveyor.backends.base import ENDS, WaitsForJobs
from conveyor.errors import QueueClosed, UnknownJob
from conveyor.job import TERMINAL, JobRecord, Outcome, Status

if TYPE_CHECKING:
    from conveyor.backends.base import Backend
    from conveyor.events import EventBus

log = logging.getLogger("conveyor")

#: the events that say a job ended
END_EVENTS = (ev.FINISHED, ev.FAILED, ev.CANCELLED)
#: the most jobs looked at in one read while waiting for results in order
MAX_STEP = 256
#: seconds a wait for many results lets pass after a change before it looks again, per
#: COALESCE_JOBS jobs still to end (at most COALESCE_MAX): each look competes with the workers
COALESCE = 0.001
COALESCE_JOBS = 64
COALESCE_MAX = 0.008


class Waiter:
    """Every wait of one queue on its backend, and the queue's done callbacks."""

    def __init__(self, backend: Backend, events: EventBus) -> None:
        self.backend = backend
        self.events = events
        #: the backend, if it waits for one job's end itself (looked up once: an isinstance
        #: of a runtime protocol costs as much as a short job)
        self._waits_for_jobs = backend if isinstance(backend, WaitsForJobs) else None
        self._lock = threading.Lock()
        self._callbacks: dict[str, list[Callable[[JobRecord], object]]] = {}
        self._listening = False  # subscribed to the end events (only while callbacks wait)
        self._watcher: threading.Thread | None = None

    # ------------------------------------------------------------------ reading
    def _records(self, job_ids: Sequence[str]) -> list[JobRecord]:
        """The records of ``job_ids``, in that order (results decoded); UnknownJob if one
        is gone."""
        found = {record.id: record for record in self.backend.query(ids=job_ids)}
        try:
            return [found[job_id] for job_id in job_ids]
        except KeyError as exc:
            raise UnknownJob(exc.args[0]) from None

    def _wait(self, since: int, deadline: float | None, active: int, timeout: float | None) -> None:
        """Wait for a change after ``since``; TimeoutError once ``deadline`` passed."""
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise TimeoutError(f"{active} job(s) did not end within {timeout} s")
        self.backend.wait(since, remaining, mode=ENDS)
        if active > 1:
            # many jobs to go: let a few more end before looking again (each look competes
            # with the workers for the interpreter); a single job's end is seen at once
            pause = min(COALESCE * max(1, active // COALESCE_JOBS), COALESCE_MAX)
            time.sleep(pause if remaining is None else max(0.0, min(pause, remaining)))

    # ------------------------------------------------------------------ waiting
    def wait_done(self, job_id: str, timeout: float | None = None) -> JobRecord:
        """Block until the job has ended; return its record. Raises TimeoutError, UnknownJob."""
        if self._waits_for_jobs is not None:
            return self._waits_for_jobs.wait_job(job_id, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            since = self.backend.version(ENDS)
            (record,) = self._records([job_id])
            if record.status in TERMINAL:
                return record
            self._wait(since, deadline, 1, timeout)

    def wait_results(
        self, job_ids: Sequence[str], timeout: float | None = None, *, first_failure: bool = False
    ) -> list[Outcome]:
        """Wait until every job has ended (or, with ``first_failure``, one did not finish);
        return ``(status, result, error)`` per job, in order (active ones as they are).
        Raises TimeoutError, UnknownJob."""
        deadline = None if timeout is None else time.monotonic() + timeout
        backend = self.backend
        ids = list(job_ids)
        done: list[Outcome] = []  # the outcomes of ids[: len(done)], all ended
        bad: int | None = None  # failed + cancelled jobs in the queue, last seen
        step = 1  # how many to look at next: doubles while they have all ended
        while True:
            since = backend.version(ENDS)
            while len(done) < len(ids):
                for outcome in backend.outcomes(ids[len(done) : len(done) + step]):
                    if outcome[0] not in TERMINAL:
                        break
                    done.append(outcome)
                    if first_failure and outcome[0] is not Status.FINISHED:
                        return done + backend.outcomes(ids[len(done) :])
                else:
                    step = min(step * 2, MAX_STEP)
                    continue
                # about as many will have ended by the next look as ended before this one
                step = max(1, step // 2)
                break
            if len(done) == len(ids):
                return done
            if first_failure:
                counts = backend.counts()
                now_bad = counts[Status.FAILED] + counts[Status.CANCELLED]
                if now_bad != bad:  # a job failed somewhere (or first look): one of ours?
                    bad = now_bad
                    rest = backend.outcomes(ids[len(done) :])
                    if any(o[0] in TERMINAL and o[0] is not Status.FINISHED for o in rest):
                        return done + rest
            self._wait(since, deadline, len(ids) - len(done), timeout)

    def wait_idle(
        self,
        timeout: float | None = None,
        on_change: Callable[[dict[Status, int]], object] | None = None,
    ) -> int:
        """Block until no job is waiting, scheduled or running (or ``timeout`` passed, or
        the backend closed); return how many still are. ``on_change(counts)`` is called
        with the counts each time they are seen to change."""
        deadline = None if timeout is None else time.monotonic() + timeout
        backend = self.backend
        last: dict[Status, int] | None = None
        # idle comes with an end; counts shown as they change need every change
        mode = ENDS if on_change is None else None
        while True:
            since = backend.version(mode)
            counts = backend.counts()
            active = counts[Status.WAITING] + counts[Status.SCHEDULED] + counts[Status.RUNNING]
            if on_change is not None and counts != last:
                on_change(counts)
                last = counts
            remaining = None if deadline is None else deadline - time.monotonic()
            if not active or (remaining is not None and remaining <= 0):
                return active
            try:
                backend.wait(since, remaining, mode=mode)
            except QueueClosed:
                return active

    def pop(self, limit: int | None = 1, timeout: float | None = 0) -> list[JobRecord]:
        """Remove and return up to ``limit`` ended jobs, in the order they ended; wait up to
        ``timeout`` (None: for ever) for one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        backend = self.backend
        while True:
            since = backend.version(ENDS)
            popped = backend.pop_ended(limit)
            remaining = None if deadline is None else deadline - time.monotonic()
            if popped or (remaining is not None and remaining <= 0):
                return popped
            try:
                backend.wait(since, remaining, mode=ENDS)
            except QueueClosed:
                return []

    # ----------------------------------------------------------- done callbacks
    def add_done_callback(self, job_id: str, callback: Callable[[JobRecord], object]) -> None:
        """Call ``callback(record)`` once the job has ended (at once if it has); UnknownJob
        if there is no such job."""
        with self._lock:
            self._callbacks.setdefault(job_id, []).append(callback)
            if not self._listening:
                for name in END_EVENTS:
                    self.events.on(name, self._ended)
                self._listening = True
            watcher = None
            if self.backend.shared and self._watcher is None:
                watcher = self._watcher = threading.Thread(
                    target=self._watch, daemon=True, name="conveyor-done-callbacks"
                )
        if watcher is not None:
            watcher.start()
        try:
            (record,) = self._records([job_id])
        except UnknownJob:
            with self._lock:
                callbacks = self._callbacks.get(job_id, [])
                if callback in callbacks:
                    callbacks.remove(callback)
                if not callbacks:
                    self._callbacks.pop(job_id, None)
                    self._stop_listening()
            raise
        if record.status in TERMINAL:
            self._fire(record)

    def _ended(self, record: JobRecord) -> None:
        """(An end event of this process) the job ended: fire its callbacks."""
        if record.id in self._callbacks:
            self._fire(record)

    def _fire(self, record: JobRecord) -> None:
        """Call, once, every callback waiting for the end of ``record``'s job."""
        with self._lock:
            callbacks = self._callbacks.pop(record.id, None)
            if not self._callbacks:
                self._stop_listening()
        for callback in callbacks or ():
            try:
                callback(record)
            except Exception:
                log.exception("done callback failed for job %r", record.id)

    def _stop_listening(self) -> None:
        """(Under the lock, no callback left) stop building end events for nobody."""
        if self._listening:
            for name in END_EVENTS:
                self.events.off(name, self._ended)
            self._listening = False

    def _watch(self) -> None:
        """(The watcher of a shared backend) fire the callbacks of jobs that other processes
        ended, looking after each change; ends once no callback waits or the backend closed."""
        backend = self.backend
        while True:
            with self._lock:
                ids = list(self._callbacks)
                if not ids:
                    self._watcher = None
                    return
            try:
                since = backend.version(ENDS)
                for record in backend.query(ids=ids):
                    if record.status in TERMINAL:
                        self._fire(record)
                backend.wait(since, None, mode=ENDS)
            except QueueClosed:
                break
            except Exception:  # the storage failed (or closed under us): look again soon
                log.debug("done callbacks: looking at the watched jobs failed", exc_info=True)
                try:
                    backend.wait(backend.version(ENDS), 0.05, mode=ENDS)
                except QueueClosed:
                    break
                except Exception:
                    time.sleep(0.05)
        with self._lock:
            self._watcher = None
