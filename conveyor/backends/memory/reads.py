"""The memory backend's reading and waiting: records, counts, popping ended jobs, latches.

A wait for ends holds a :class:`~conveyor.backends.memory.state.Latch` that the engine's
``end`` counts down; waits for room, ends to pop or idle sleep on the backend's ``_changed``
condition, to the first timer at most (a timer can end or start a job).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from conveyor.backends.memory.locked import Locked
from conveyor.backends.memory.state import Latch, unwatch, watch
from conveyor.errors import InvalidJob
from conveyor.job import TERMINAL, JobRecord, Status


class Reads(Locked):
    """The protocol's reads and waits (:class:`~conveyor.backends.base.Backend`)."""

    def get(self, job_id: str) -> JobRecord:
        with self._lock:
            self._engine.tick(self._clock.now())
            record = self._entry(job_id).record()
            effects = self._take_effects()
        self._run(effects)
        return record

    def query(self, status: Status | None = None) -> list[JobRecord]:
        with self._lock:
            self._engine.tick(self._clock.now())
            records = [
                e.record()
                for e in self._engine.jobs.values()
                if status is None or e.status is status
            ]
            effects = self._take_effects()
        self._run(effects)
        return records

    def counts(self) -> dict[Status, int]:
        with self._lock:
            self._engine.tick(self._clock.now())
            counts = {status: self._engine.counts[status] for status in Status}
            effects = self._take_effects()
        self._run(effects)
        return counts

    def pop_finished(
        self, limit: int | None = None, *, timeout: float | None = 0
    ) -> list[JobRecord]:
        deadline = None if timeout is None else time.monotonic() + timeout
        engine = self._engine
        with self._lock:
            while True:
                engine.tick(self._clock.now())
                popped: list[JobRecord] = []
                while engine.ended and (limit is None or len(popped) < limit):
                    entry = engine.jobs.get(engine.ended.popitem(last=False)[0])
                    if entry is None or entry.status not in TERMINAL:
                        continue  # forgotten, or retried since it was queued here
                    engine.drop(entry)
                    popped.append(entry.record())
                remaining = None if deadline is None else deadline - time.monotonic()
                if popped or (remaining is not None and remaining <= 0) or self._closed:
                    break
                self._wait_changed(remaining)
            effects = self._take_effects()
        self._run(effects)
        return popped

    def forget(self, job_id: str) -> None:
        with self._lock:
            entry = self._entry(job_id)
            if entry.status not in TERMINAL:
                raise InvalidJob(f"job {job_id!r} is {entry.status.value}; cancel it first")
            self._engine.drop(entry)

    def forget_many(self, job_ids: Collection[str]) -> None:
        """Forget every ended job among ``job_ids``; others are left alone."""
        engine = self._engine
        with self._lock:
            for job_id in job_ids:
                entry = engine.jobs.get(job_id)
                if entry is not None and entry.status in TERMINAL:
                    engine.drop(entry)

    def add_done_callback(self, job_id: str, callback: Callable[[JobRecord], object]) -> None:
        with self._lock:
            entry = self._entry(job_id)
            if entry.status not in TERMINAL:
                self._engine.done_callbacks.setdefault(job_id, []).append(callback)
                return
            record = entry.record()
        callback(record)

    def wait_done(self, job_id: str, timeout: float | None = None) -> JobRecord:
        self._wait_ended([job_id], timeout, first_failure=False)
        return self.get(job_id)

    def wait_results(
        self, job_ids: Sequence[str], timeout: float | None = None, *, first_failure: bool = False
    ) -> list[tuple[Status, Any, str | None]]:
        """Wait until every job has ended (or one did not finish, with ``first_failure``);
        return ``(status, result, error)`` per job, in order (active ones as they are)."""
        self._wait_ended(job_ids, timeout, first_failure=first_failure)
        with self._lock:
            return [
                (e.status, e.result, e.error) for e in (self._entry(job_id) for job_id in job_ids)
            ]

    def _latch(self, job_ids: Sequence[str], first_failure: bool) -> Latch | None:
        """A latch on the jobs of ``job_ids`` still active; None if there is nothing to wait for."""
        waiting = []
        for job_id in job_ids:
            entry = self._entry(job_id)
            if entry.status not in TERMINAL:
                waiting.append(job_id)
            elif first_failure and entry.status is not Status.FINISHED:
                return None
        if not waiting:
            return None
        latch = Latch(waiting, first_failure)
        for job_id in waiting:
            watch(self._engine.latches, job_id, latch)
        return latch

    def _wait_ended(
        self, job_ids: Sequence[str], timeout: float | None, *, first_failure: bool
    ) -> None:
        with self._lock:
            self._engine.tick(self._clock.now())
            effects = self._take_effects()
            latch = self._latch(job_ids, first_failure)
        self._run(effects)
        if latch is None:
            return
        if not latch.event.wait(timeout):
            with self._lock:  # stop watching, so the latch does not outlive the call
                for job_id in latch.job_ids:
                    unwatch(self._engine.latches, job_id, latch)
            raise TimeoutError(f"{latch.count} job(s) did not end within {timeout} s")

    def wait_idle(
        self,
        timeout: float | None = None,
        on_change: Callable[[dict[Status, int]], object] | None = None,
    ) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        last: dict[Status, int] | None = None
        engine = self._engine
        while True:
            with self._lock:
                engine.tick(self._clock.now())
                effects = self._take_effects()
                counts = {status: engine.counts[status] for status in Status}
                active = counts[Status.WAITING] + counts[Status.SCHEDULED] + counts[Status.RUNNING]
                remaining = None if deadline is None else deadline - time.monotonic()
                done = not active or self._closed or (remaining is not None and remaining <= 0)
                if not done and not effects and (on_change is None or counts == last):
                    wait = engine.timer_wait()
                    if remaining is not None:
                        wait = remaining if wait is None else min(wait, remaining)
                    self._wait_changed(wait)
                    continue
            self._run(effects)
            if on_change is not None and counts != last:
                on_change(counts)
                last = counts
            if done:
                return active
