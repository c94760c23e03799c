"""The durable backend: one SQLite file (WAL), shared by producers and worker processes.

:class:`SQLiteBackend` is the Backend protocol's methods; each state change is one transaction
(:mod:`.storage`) in which :class:`~.engine.Engine` applies the rules of :mod:`conveyor.rules` to
the tables of :mod:`.schema`. Claimed jobs leave it still encoded: their worker checks and decodes
them (:mod:`conveyor.worker.decoding`). The other parts: records and events (:mod:`.reading`),
version and wait (:mod:`.waiting`), workers and leases (:mod:`.registry`), retry and purge
(:mod:`.admin`).

With a secret, each job's envelope is signed at insert (its worker checks it before anything is
imported or decoded); without one, reading a record never unpickles (see :func:`~.decode.record`).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from typing import Any

from conveyor import events as ev
from conveyor import rules
from conveyor.backends.sqlite.admin import Admin
from conveyor.backends.sqlite.decode import claimed
from conveyor.backends.sqlite.engine import Engine
from conveyor.backends.sqlite.lanes import Row
from conveyor.backends.sqlite.registry import Registry
from conveyor.backends.sqlite.schema import FINISH, PROGRESS, RETURNING
from conveyor.backends.sqlite.waiting import Waiting
from conveyor.clock import Clock
from conveyor.errors import InvalidJob, QueueClosed, QueueFull
from conveyor.events import EventBus
from conveyor.job import TERMINAL, ErrorInfo, Status
from conveyor.records import (
    Cancelled,
    ClaimedJob,
    Finished,
    JobSpec,
    Recorded,
    Report,
    Reported,
    envelope,
)
from conveyor.serializer import Serializer
from conveyor.settings import DEFAULT_FILE_MODE
from conveyor.tracking import check as check_progress

#: a report recorded; one dropped (its attempt no longer held the job); a cancel too late
HELD, DROPPED, NOT_ACTIVE = Recorded(True), Recorded(False), Cancelled(False)


class SQLiteBackend(Admin, Waiting, Registry):
    """Jobs in one SQLite file; every rule applied inside one transaction per change."""

    durable = True
    #: other processes change the same jobs
    shared = True

    def __init__(
        self,
        path: str,
        *,
        clock: Clock | None = None,
        events: EventBus | None = None,
        max_size: int | None = None,
        serializer: Serializer | None = None,
        lease: float = 60.0,
        result_ttl: float | None = None,
        file_mode: int = DEFAULT_FILE_MODE,
    ) -> None:
        super().__init__(path, clock or Clock(), file_mode)
        self._bus = events or EventBus()
        self._max_size = max_size
        self.serializer = serializer or Serializer("json")
        self._lease = lease
        self._result_ttl = result_ttl
        self._engine = Engine(
            self._db, self._clock, lease=lease, result_ttl=result_ttl, event=self._event
        )

    # ------------------------------------------------------------------ submit
    def submit(
        self, specs: Sequence[JobSpec], *, block: bool = True, timeout: float | None = None
    ) -> list[str]:
        if self._closed:
            raise QueueClosed("the queue is closed; it takes no more jobs")
        deadline = None if timeout is None else time.monotonic() + timeout
        since = None  # taken (before a second look) only once the queue was seen full
        while True:
            with self._tx():
                now = self._clock.now()
                self._engine.tick(now)
                resolved = self._resolve_unique(specs, now)
                fresh = [s for s, holder in zip(specs, resolved, strict=True) if holder is None]
                self._validate(fresh, specs)
                if self._has_room(len(fresh), block, deadline):
                    aliases = {
                        s.id: holder
                        for s, holder in zip(specs, resolved, strict=True)
                        if holder is not None
                    }
                    for spec in fresh:
                        self._insert(spec, now, aliases)
                    self._engine.cascade(self._engine.advance_joined())
                    break
            if since is None:
                since = self.version()
                continue
            self.wait(since, None if deadline is None else max(0.0, deadline - time.monotonic()))
            since = None
        return [holder or s.id for s, holder in zip(specs, resolved, strict=True)]

    def _has_room(self, count: int, block: bool, deadline: float | None) -> bool:
        if self._max_size is None or count == 0:
            return True
        row = self._one("SELECT count(*) AS n FROM jobs WHERE status IN ('waiting', 'scheduled')")
        pending = row["n"] if row else 0
        if pending == 0 or pending + count <= self._max_size:
            return True
        if not block:
            raise QueueFull(
                f"the queue holds {pending} jobs not yet started (max_size={self._max_size});"
                " wait, or put with block=True"
            )
        if deadline is not None and time.monotonic() >= deadline:
            raise QueueFull(f"no room under max_size={self._max_size} before the timeout")
        return False

    def _resolve_unique(self, specs: Sequence[JobSpec], now: float) -> list[str | None]:
        if not any(spec.options.unique for spec in specs):
            return [None] * len(specs)  # most puts: nothing to look up

        def holder_of(key: str) -> str | None:
            row = self._one("SELECT * FROM unique_keys WHERE key = ?", key)
            if row is None:
                return None
            job = self._one("SELECT status FROM jobs WHERE id = ?", row["job"])
            if job is not None and rules.unique_still_held(
                job["status"] not in TERMINAL, row["until"], now
            ):
                return str(row["job"])
            self._db.execute("DELETE FROM unique_keys WHERE key = ?", (key,))
            return None

        return rules.resolve_unique([(s.id, s.options.unique) for s in specs], holder_of)

    def _validate(self, fresh: Sequence[JobSpec], specs: Sequence[JobSpec]) -> None:
        for spec in fresh:
            if spec.ref is None or not isinstance(spec.payload, bytes):
                raise InvalidJob(f"job {spec.id!r} has no function reference or encoded payload")
        rules.check_batch(
            fresh,
            {spec.id for spec in specs},
            lambda job_id: self._one("SELECT 1 AS x FROM jobs WHERE id = ?", job_id) is not None,
        )

    def _insert(self, spec: JobSpec, now: float, aliases: dict[str, str]) -> None:
        assert spec.ref is not None and isinstance(spec.payload, bytes)  # _validate checked
        mac = None
        if self.serializer.signed:
            mac = self.serializer.sign_job(
                envelope(
                    spec.id, spec.ref, spec.task, spec.mode, spec.payload, spec.options.timeout
                )
            )
        self._engine.insert(spec, mac, now, aliases)

    # ------------------------------------------------------------------- claim
    def claim(self, worker: str, mode: str, limit: int = 1, *, ahead: int = 0) -> list[ClaimedJob]:
        """Start up to ``limit`` jobs of ``mode`` (the last ``ahead`` claimed ahead of the
        worker's slots); never blocks."""
        with self._tx():
            rows = self._start_jobs(worker, mode, limit, ahead)
        return [claimed(row) for row in rows]

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
        """Every report, then a claim that does not wait, in one transaction; the jobs claimed
        ahead, and those of ``started`` (now run by a slot), marked as such."""
        with self._tx() as db:
            if started:
                owner = worker.rpartition("/")[0] + "/"
                db.executemany(
                    "UPDATE jobs SET ahead = 0 WHERE id = ? AND attempts = ?"
                    " AND status = 'running' AND substr(worker, 1, ?) = ?",
                    [(job_id, attempt, len(owner), owner) for job_id, attempt in started],
                )
            recorded = [self._end_attempt(report) for report in reports]
            rows = self._start_jobs(worker, mode, claim, ahead) if claim > 0 else []
        return Reported(recorded, [claimed(row) for row in rows] if rows else [])

    def _start_jobs(self, worker: str, mode: str, limit: int, ahead: int = 0) -> list[Row]:
        """Start up to ``limit`` jobs, the last ``ahead`` of them marked as claimed ahead (no
        slot runs them yet); their rows, as they were before the claim (in a transaction)."""
        engine, now = self._engine, self._clock.now()
        engine.tick(now)
        rows: list[Row] = []
        while len(rows) < limit:
            row = engine.next_startable(mode)
            if row is None:
                break
            engine.start(row, worker, now, ahead=len(rows) >= limit - ahead)
            rows.append(row)
        return rows

    # ------------------------------------------------------- end of an attempt
    def _end_attempt(self, report: Report) -> Recorded:
        """(In a transaction) end the attempt a report names, if it still holds its job."""
        if isinstance(report, Finished):
            held = self._finish(
                report.job_id, report.attempt, report.result, report.started, report.ended
            )
            return HELD if held else DROPPED
        row = self._engine.holding(report.job_id, report.attempt)
        if row is None:
            return DROPPED
        if report.started is not None:
            self._db.execute(
                "UPDATE jobs SET started = ? WHERE id = ?", (report.started, row["id"])
            )
        return self._fail_row(row, report.error, final=report.final, at=report.ended)

    def _finish(
        self,
        job_id: str,
        attempt: int,
        result: object,
        started: float | None = None,
        ended: float | None = None,
    ) -> bool:
        """End a running attempt with its encoded result; ``started`` and ``ended`` default to
        the claim and now (in a transaction)."""
        engine = self._engine
        if not isinstance(result, bytes):
            raise TypeError(f"a durable job's result is stored encoded, got {type(result)}")
        if RETURNING:
            # one statement checks the claim and ends the job; the row it returns is the ended
            # job's, as the cascade wants it
            at = self._clock.now() if ended is None else ended
            cursor = self._db.execute(FINISH, (started, at, result, job_id, attempt))
            row = cursor.fetchone()
            cursor.close()
            if row is None:
                return False  # cancelled, recovered or timed out meanwhile: dropped
            engine.release(row)
            engine.cascade([job_id], row)
            return True
        row = engine.holding(job_id, attempt)
        if row is None:
            return False
        engine.release(row)
        if started is not None:
            self._db.execute("UPDATE jobs SET started = ? WHERE id = ?", (started, job_id))
        engine.end(job_id, Status.FINISHED, result=result, row=row, at=ended)
        return True

    def _fail_row(
        self, row: dict[str, Any], error: ErrorInfo, *, final: bool = False, at: float | None = None
    ) -> Recorded:
        """(In a transaction) end a running attempt as failed: its job retried if it has
        retries left (and not ``final``), else failed for good (cascading) ``at`` (now)."""
        self._engine.release(row)
        if not final and row["attempts"] <= row["retries"]:
            return Recorded(True, self._engine.schedule_retry(row, error))
        self._engine.end(row["id"], Status.FAILED, error=error, at=at)
        return HELD

    def requeue(self, job_id: str, attempt: int) -> bool:
        with self._tx():
            row = self._engine.holding(job_id, attempt)
            if row is None:
                return False
            self._engine.release(row)
            self._db.execute(
                "UPDATE jobs SET status = 'waiting', attempts = attempts - 1, worker = NULL,"
                " lease_until = NULL WHERE id = ?",
                (job_id,),
            )
            self._engine.consider(job_id)
        return True

    def progress(
        self, job_id: str, attempt: int, fraction: float, message: str | None = None
    ) -> bool:
        """Record a running attempt's progress in one statement that checks the attempt (see
        :meth:`Backend.progress`); the event follows the COMMIT."""
        fraction, message = check_progress(fraction, message)
        with self._tx() as db:
            cursor = db.execute(PROGRESS, (fraction, message, job_id, attempt))
            held = cursor.rowcount > 0
            cursor.close()
            if held:
                self._event(ev.PROGRESS, job_id)
        return held

    # ------------------------------------------------------------------ cancel
    def cancel(self, job_id: str, reason: str = "cancelled") -> Cancelled:
        with self._tx():
            self._engine.tick(self._clock.now())
            row = self._job(job_id)
            if row["status"] in TERMINAL:
                return NOT_ACTIVE
            slot = None
            if row["status"] == Status.RUNNING:
                self._engine.release(row)
                slot = row["worker"]
            self._engine.end(job_id, Status.CANCELLED, reason=reason)
        return Cancelled(True, slot)

    def __repr__(self) -> str:
        return f"<SQLiteBackend {self.path} pid={os.getpid()} host={socket.gethostname()}>"
