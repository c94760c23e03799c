"""What the SQLite backend reports: records, counts, ended jobs popped or forgotten, and
the events its transactions emit after COMMIT."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from conveyor.backends.sqlite.decode import record
from conveyor.backends.sqlite.engine import Engine
from conveyor.backends.sqlite.schema import EXPIRED_RESULT, NEXT_TIMER
from conveyor.backends.sqlite.storage import READ_FAILED, Storage
from conveyor.errors import InvalidJob, UnknownJob
from conveyor.events import EventBus
from conveyor.job import TERMINAL, JobRecord, Status
from conveyor.serializer import Serializer


class Reading(Storage):
    """Records and counts read from the file (timers due are applied first), and events."""

    serializer: Serializer
    _engine: Engine
    _bus: EventBus
    _callbacks: dict[str, list[Callable[[JobRecord], object]]]
    _result_ttl: float | None

    def _event(self, name: str, job_id: str) -> None:
        """(In a transaction, the engine's ``event``) emit ``name`` for the job, and run its
        done callbacks if it ended, after COMMIT."""
        callbacks = (
            self._callbacks.pop(job_id, None)
            if name in ("finished", "failed", "cancelled")
            else None
        )
        wanted = self._bus.wants(name)
        if not (wanted or callbacks):
            return
        now = self._record(self._job(job_id), results=True)
        if wanted:
            self._effects.append(lambda: self._bus.emit(name, now))
        for callback in callbacks or ():
            self._effects.append(lambda cb=callback: cb(now))  # type: ignore[misc]

    def _record(self, row: dict[str, Any], *, results: bool = False) -> JobRecord:
        """A row as a record (see :func:`~.decode.record`)."""
        return record(row, self.serializer, results=results)

    def _tick_if_due(self) -> None:
        """Before a read: apply the timers (and result_ttl) that are due, if any are."""
        now = self._clock.now()
        with self._lock, self._storage(READ_FAILED):
            if self._closed:
                return
            row = self._one(NEXT_TIMER)
            timer = next(iter(row.values())) if row else None
            due = timer is not None and timer <= now
            if not due and self._result_ttl is not None:
                due = self._one(EXPIRED_RESULT, now - self._result_ttl) is not None
        if due:
            with self._tx():
                self._engine.tick(self._clock.now())

    def get(self, job_id: str) -> JobRecord:
        """The job's record; an unsigned pickle's arguments and result are not decoded."""
        return self._get(job_id, results=False)

    def _get(self, job_id: str, *, results: bool) -> JobRecord:
        self._tick_if_due()
        with self._lock, self._storage(READ_FAILED):
            return self._record(self._job(job_id), results=results)

    def query(self, status: Status | None = None) -> list[JobRecord]:
        """Records in submission order; an unsigned pickle's payloads are not decoded."""
        self._tick_if_due()
        with self._lock, self._storage(READ_FAILED):
            if status is None:
                rows = self._db.execute("SELECT * FROM jobs ORDER BY seq").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM jobs WHERE status = ? ORDER BY seq", (status.value,)
                ).fetchall()
            return [self._record(row) for row in rows]

    def counts(self) -> dict[Status, int]:
        self._tick_if_due()
        with self._lock, self._storage(READ_FAILED):
            rows = self._db.execute(
                "SELECT status, count(*) AS n FROM jobs GROUP BY status"
            ).fetchall()
        counts = dict.fromkeys(Status, 0)
        for row in rows:
            counts[Status(row["status"])] = row["n"]
        return counts

    def _statuses(self, job_ids: Sequence[str]) -> dict[str, str]:
        with self._lock:
            found: dict[str, str] = {}
            for start in range(0, len(job_ids), 500):
                chunk = job_ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for row in self._db.execute(
                    f"SELECT id, status FROM jobs WHERE id IN ({marks})", chunk
                ):
                    found[row["id"]] = row["status"]
        for job_id in job_ids:
            if job_id not in found:
                raise UnknownJob(job_id)
        return found

    def pop_finished(
        self, limit: int | None = None, *, timeout: float | None = 0
    ) -> list[JobRecord]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            since = self._generation()
            with self._tx() as db:
                self._engine.tick(self._clock.now())
                rows = db.execute(
                    "SELECT * FROM jobs WHERE ended IS NOT NULL AND status IN"
                    " ('finished', 'failed', 'cancelled') ORDER BY ended, seq LIMIT ?",
                    (-1 if limit is None else limit,),
                ).fetchall()
                for row in rows:
                    db.execute("DELETE FROM jobs WHERE seq = ?", (row["seq"],))
                records = [self._record(row, results=True) for row in rows]
            if records or self._closed or (deadline is not None and time.monotonic() >= deadline):
                return records
            self._wait(since, deadline)

    def forget(self, job_id: str) -> None:
        with self._tx() as db:
            row = self._job(job_id)
            if row["status"] not in TERMINAL:
                raise InvalidJob(f"job {job_id!r} is {row['status']}; cancel it first")
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def forget_many(self, job_ids: Collection[str]) -> None:
        with self._tx() as db:
            db.executemany(
                "DELETE FROM jobs WHERE id = ? AND status IN ('finished', 'failed', 'cancelled')",
                [(job_id,) for job_id in job_ids],
            )
