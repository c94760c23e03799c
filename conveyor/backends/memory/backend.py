"""The in-process backend: the memory engine under one lock.

Every public method takes the lock once, calls the engine (:mod:`.engine`: the rules), and
runs what the change set off (events) after letting the lock go. Claims never block: a claimer
waits with ``version``/``wait`` (:mod:`.locked`), on a condition of its mode, woken as many at a
time as jobs became ready. Reading is in :mod:`.reads`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Sequence

from conveyor import events as ev
from conveyor import rules
from conveyor.backends.memory.admin import purge_jobs, retry_ended
from conveyor.backends.memory.engine import Engine
from conveyor.backends.memory.reads import Reads
from conveyor.clock import Clock
from conveyor.errors import QueueClosed, QueueFull
from conveyor.events import EventBus
from conveyor.job import TERMINAL, Status
from conveyor.records import (
    Cancelled,
    ClaimedJob,
    Finished,
    JobSpec,
    Recorded,
    Report,
    Reported,
    WorkerInfo,
)
from conveyor.tracking import check as check_progress

#: a report recorded; one dropped (its attempt no longer held the job); a cancel too late
HELD, DROPPED, NOT_ACTIVE = Recorded(True), Recorded(False), Cancelled(False)


class MemoryBackend(Reads):
    """Jobs in this process's memory; every rule applied under one lock."""

    #: no other process changes these jobs: their ends are this process's events
    shared = False

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        events: EventBus | None = None,
        max_size: int | None = None,
    ) -> None:
        super().__init__(Engine(clock or Clock(), events or EventBus()))
        self._max_size = max_size
        self._workers: dict[str, WorkerInfo] = {}
        self._clock.subscribe(self.wake)

    # ------------------------------------------------------------------ submit
    def submit(
        self, specs: Sequence[JobSpec], *, block: bool = True, timeout: float | None = None
    ) -> list[str]:
        deadline = None if timeout is None else time.monotonic() + timeout
        engine = self._engine
        with self._lock:
            now = self._clock.now()
            engine.tick(now)
            resolved = self._resolve_unique(specs, now)
            fresh: Sequence[JobSpec] = specs
            aliases: dict[str, str] = {}
            if any(resolved):
                fresh = [spec for spec, held in zip(specs, resolved, strict=True) if held is None]
                aliases = {
                    spec.id: held
                    for spec, held in zip(specs, resolved, strict=True)
                    if held is not None
                }
            self._validate(fresh, specs)
            self._wait_for_room(len(fresh), block, deadline)
            for spec in fresh:
                engine.insert(spec, now, aliases)
            engine.cascade()
            effects = self._take_effects()
        self._run(effects)
        return [held or spec.id for spec, held in zip(specs, resolved, strict=True)]

    def _resolve_unique(self, specs: Sequence[JobSpec], now: float) -> list[str | None]:
        engine = self._engine

        def holder_of(key: str) -> str | None:
            held = engine.unique.get(key)
            if held is None:
                return None
            job_id, until = held
            entry = engine.jobs.get(job_id)
            # a popped or forgotten holder frees its key: no handle on a gone job
            if entry is not None and rules.unique_still_held(
                entry.status not in TERMINAL, until, now
            ):
                return job_id
            del engine.unique[key]
            return None

        if not any(spec.options.unique for spec in specs):
            return [None] * len(specs)
        return rules.resolve_unique([(s.id, s.options.unique) for s in specs], holder_of)

    def _validate(self, fresh: Sequence[JobSpec], specs: Sequence[JobSpec]) -> None:
        if self._closed:
            raise QueueClosed("the queue is closed; it takes no more jobs")
        rules.check_batch(fresh, {spec.id for spec in specs}, self._engine.jobs.__contains__)

    def _wait_for_room(self, count: int, block: bool, deadline: float | None) -> None:
        if self._max_size is None or count == 0:
            return
        counts = self._engine.counts
        while True:
            pending = counts[Status.WAITING] + counts[Status.SCHEDULED]
            if pending == 0 or pending + count <= self._max_size:
                return
            if not block:
                raise QueueFull(
                    f"the queue holds {pending} jobs not yet started (max_size="
                    f"{self._max_size}); wait, or put with block=True"
                )
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise QueueFull(f"no room under max_size={self._max_size} before the timeout")
            self._wait_changed(remaining)
            if self._closed:
                raise QueueClosed("the queue closed while put waited for room")

    # ------------------------------------------------------------------- claim
    def claim(self, worker: str, mode: str, limit: int = 1, *, ahead: int = 0) -> list[ClaimedJob]:
        """Start up to ``limit`` jobs of ``mode``; never blocks (no lease outlives this
        process: jobs claimed ``ahead`` need no marking)."""
        with self._lock:
            if self._closed:
                raise QueueClosed("the queue is closed")
            got = self._claim(worker, mode, limit)
            effects = self._take_effects()
        if effects:
            self._run(effects)
        return got

    def report(
        self,
        reports: Sequence[Report],
        *,
        worker: str,
        mode: str,
        claim: int = 0,
        ahead: int = 0,
        started: Sequence[tuple[str, int]] = (),
    ) -> Reported:
        """Every report, then a claim that does not wait, under one lock: one round trip per
        job for a busy slot (no lease outlives this process: jobs claimed ahead, and those of
        ``started``, need no marking)."""
        end = self._end_attempt
        with self._lock:
            if len(reports) == 1:  # a busy slot's one report: no list made by a comprehension
                recorded = [end(reports[0])]
            else:
                recorded = [end(report) for report in reports]
            if recorded:
                self._engine.cascade()
            got = self._claim(worker, mode, claim) if claim > 0 and not self._closed else []
            effects = self._take_effects()
        if effects:
            self._run(effects)
        return Reported(recorded, got)

    def _end_attempt(self, report: Report) -> Recorded:
        """(Under the lock) end the attempt a report names, if it still holds its job: a
        failure is retried if the job has retries left and it is not ``final``."""
        engine = self._engine
        entry = engine.holding(report.job_id, report.attempt)
        if entry is None:
            return DROPPED
        if report.started is not None:
            entry.started = report.started
        engine.release(entry)
        if isinstance(report, Finished):
            engine.end(entry, Status.FINISHED, result=report.result)
        elif not report.final and entry.attempts <= entry.opts.retries:
            return Recorded(True, engine.schedule_retry(entry, report.error))
        else:
            engine.end(entry, Status.FAILED, error=report.error)
        if report.ended is not None:
            entry.ended = report.ended
        return HELD

    def _claim(self, worker: str, mode: str, limit: int) -> list[ClaimedJob]:
        """(Under the lock) start up to ``limit`` jobs of ``mode`` that may start now."""
        engine = self._engine
        now = self._clock.now()
        engine.tick(now)
        got: list[ClaimedJob] = []
        while len(got) < limit:
            entry = engine.next_startable(mode)
            if entry is None:
                break
            got.append(engine.start(entry, worker, now))
        return got

    # ------------------------------------------------------- end of an attempt
    def requeue(self, job_id: str, attempt: int) -> bool:
        engine = self._engine
        with self._lock:
            entry = engine.holding(job_id, attempt)
            if entry is None:
                return False
            engine.release(entry)
            entry.attempts -= 1  # a stopped worker, not a failed attempt
            engine.set_status(entry, Status.WAITING)
            engine.consider(entry)
            engine.cascade()
            effects = self._take_effects()
        self._run(effects)
        return True

    # ------------------------------------------------------------------ cancel
    def cancel(self, job_id: str, reason: str = "cancelled") -> Cancelled:
        engine = self._engine
        with self._lock:
            engine.tick(self._clock.now())
            entry = self._entry(job_id)
            if entry.status in TERMINAL:
                return NOT_ACTIVE
            slot = None
            if entry.status is Status.RUNNING:
                engine.release(entry)
                slot = entry.worker
            engine.end(entry, Status.CANCELLED, reason=reason)
            engine.cascade()
            effects = self._take_effects()
        self._run(effects)
        return Cancelled(True, slot)

    # ------------------------------------------------------------- retry, purge
    def retry(self, job_id: str) -> None:
        """Put a failed or cancelled job back to waiting (see :meth:`Backend.retry`)."""
        with self._lock:
            now = self._clock.now()
            self._engine.tick(now)
            retry_ended(self._engine, self._entry(job_id), now)
            self._engine.cascade()
            effects = self._take_effects()
        self._run(effects)

    def purge(
        self,
        statuses: Collection[Status],
        task: str | None = None,
        before: float | None = None,
    ) -> int:
        """Drop matching jobs; return how many (see :meth:`Backend.purge`)."""
        rules.check_purge(statuses)
        with self._lock:
            self._engine.tick(self._clock.now())
            purged = purge_jobs(self._engine, statuses, task, before)
            effects = self._take_effects()
        self._run(effects)
        return purged

    # ----------------------------------------------------------- worker support
    def heartbeat(self, worker: str, ids: Collection[str]) -> set[str]:
        prefix = worker + "/"
        jobs = self._engine.jobs
        with self._lock:
            info = self._workers.get(worker)
            if info is not None:
                info.last_seen = self._clock.now()
            return {
                job_id
                for job_id in ids
                if (entry := jobs.get(job_id)) is None
                or entry.status is not Status.RUNNING
                or not (entry.worker or "").startswith(prefix)
            }

    def progress(
        self, job_id: str, attempt: int, fraction: float, message: str | None = None
    ) -> bool:
        """Record a running attempt's progress (see :meth:`Backend.progress`)."""
        fraction, message = check_progress(fraction, message)
        engine = self._engine
        with self._lock:
            entry = engine.holding(job_id, attempt)
            if entry is None:
                return False
            entry.progress, entry.progress_message = fraction, message
            engine.emit(ev.PROGRESS, entry)
            effects = self._take_effects()
        if effects:
            self._run(effects)
        return True

    def register_worker(self, info: WorkerInfo) -> None:
        with self._lock:
            self._workers[info.id] = info

    def unregister_worker(self, worker_id: str) -> None:
        with self._lock:
            self._workers.pop(worker_id, None)

    def workers(self, *, include_lost: bool = False) -> list[WorkerInfo]:
        """The workers of this process (they live while it does: none is ever lost)."""
        with self._lock:
            return [dataclasses.replace(info) for info in self._workers.values()]

    def recover_expired(self, *, by: str | None = None) -> int:
        return 0  # workers live in this process: nothing holds a lease to outlive

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._clock.unsubscribe(self.wake)
        self.wake()
