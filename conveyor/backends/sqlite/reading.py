"""What the SQLite backend reports: records, counts, ended jobs popped or forgotten, and
the events its transactions emit after COMMIT. None of it blocks."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from conveyor.backends.sqlite.decode import record
from conveyor.backends.sqlite.engine import Engine
from conveyor.backends.sqlite.schema import EXPIRED_RESULT, NEXT_TIMER
from conveyor.backends.sqlite.storage import READ_FAILED, Storage
from conveyor.errors import InvalidJob, UnknownJob
from conveyor.events import EventBus
from conveyor.job import TERMINAL, JobRecord, Outcome, Status
from conveyor.serializer import Serializer


class Reading(Storage):
    """Records and counts read from the file (timers due are applied first), and events."""

    serializer: Serializer
    _engine: Engine
    _bus: EventBus
    _result_ttl: float | None

    def _event(self, name: str, job_id: str) -> None:
        """(In a transaction, the engine's ``event``) emit ``name`` for the job after COMMIT."""
        if not self._bus.wants(name):
            return
        now = self._record(self._job(job_id), results=True)
        self._effects.append(lambda: self._bus.emit(name, now))

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

    def query(
        self, status: Status | None = None, *, ids: Sequence[str] | None = None
    ) -> list[JobRecord]:
        """Records in submission order; an unsigned pickle's payloads are not decoded, but
        for ``ids`` (the jobs whose results the caller waits for) its results are."""
        self._tick_if_due()
        where, args = ("", ()) if status is None else (" WHERE status = ?", (status.value,))
        with self._lock, self._storage(READ_FAILED):
            if ids is None:
                rows = self._db.execute(f"SELECT * FROM jobs{where} ORDER BY seq", args).fetchall()
                return [self._record(row) for row in rows]
            rows = []
            for start in range(0, len(ids), 500):
                chunk = list(dict.fromkeys(ids[start : start + 500]))
                marks = ",".join("?" * len(chunk))
                clause = f"{where} AND" if where else " WHERE"
                rows += self._db.execute(
                    f"SELECT * FROM jobs{clause} id IN ({marks})", (*args, *chunk)
                ).fetchall()
            if len(rows) > 1:
                rows = sorted({row["seq"]: row for row in rows}.values(), key=lambda r: r["seq"])
            return [self._record(row, results=True) for row in rows]

    def outcomes(self, ids: Sequence[str]) -> list[Outcome]:
        """``(status, result, error)`` of each job of ``ids``, in that order (results
        decoded); UnknownJob if one is gone."""
        found = {record.id: record for record in self.query(ids=ids)}
        try:
            return [(r.status, r.result, r.error) for r in (found[job_id] for job_id in ids)]
        except KeyError as exc:
            raise UnknownJob(exc.args[0]) from None

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

    def pop_ended(self, limit: int | None = None) -> list[JobRecord]:
        """Remove and return up to ``limit`` ended jobs, in the order they ended."""
        with self._tx() as db:
            self._engine.tick(self._clock.now())
            rows = db.execute(
                "SELECT * FROM jobs WHERE ended IS NOT NULL AND status IN"
                " ('finished', 'failed', 'cancelled') ORDER BY ended, seq LIMIT ?",
                (-1 if limit is None else limit,),
            ).fetchall()
            for row in rows:
                db.execute("DELETE FROM jobs WHERE seq = ?", (row["seq"],))
            return [self._record(row, results=True) for row in rows]

    def forget(self, job_ids: Collection[str], *, strict: bool = False) -> int:
        """Drop the ended jobs among ``job_ids``; return how many. With ``strict``, an
        unknown or active one raises (UnknownJob, InvalidJob) and nothing is dropped."""
        with self._tx() as db:
            if strict:
                for job_id in job_ids:
                    row = self._job(job_id)
                    if row["status"] not in TERMINAL:
                        raise InvalidJob(f"job {job_id!r} is {row['status']}; cancel it first")
            cursor = db.executemany(
                "DELETE FROM jobs WHERE id = ? AND status IN ('finished', 'failed', 'cancelled')",
                [(job_id,) for job_id in job_ids],
            )
            return max(0, cursor.rowcount)
