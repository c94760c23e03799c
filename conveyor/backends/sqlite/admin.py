"""Admin on the SQLite backend: a failed or cancelled job retried, jobs purged."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from conveyor import rules
from conveyor.backends.sqlite.reading import Reading
from conveyor.errors import InvalidJob
from conveyor.job import TERMINAL, Status
from conveyor.records import ended_before, history_entry, with_history


class Admin(Reading):
    """``retry`` and ``purge``: each one transaction, through the engine."""

    def retry(self, job_id: str) -> None:
        """Put a failed or cancelled job back to waiting (see :meth:`Backend.retry`)."""
        with self._tx() as db:
            now = self._clock.now()
            self._engine.tick(now)
            row = self._job(job_id)
            if row["status"] not in (Status.FAILED, Status.CANCELLED):
                raise InvalidJob(
                    f"job {job_id!r} is {row['status']}; only failed or cancelled jobs"
                    " can be retried"
                )
            awaited = self._retry_dependencies(row)
            self._retry_unique(row, now)
            history = history_entry(
                row["status"], row["error"], row["traceback"], row["attempts"], row["ended"], now
            )
            db.execute(
                "UPDATE jobs SET status = 'waiting', attempts = 0, lost = 0, ahead = 0,"
                " ready = 0, parked = NULL, due = NULL, worker = NULL, lease_until = NULL,"
                " started = NULL, ended = NULL, result = NULL, error = NULL, traceback = NULL,"
                " pending_deps = ?, meta = ?,"
                " expires_at = CASE WHEN expires_at <= ? THEN NULL ELSE expires_at END"
                " WHERE id = ?",
                (
                    len(awaited),
                    json.dumps(with_history(json.loads(row["meta"]), history)),
                    now,
                    job_id,
                ),
            )
            db.executemany(
                "INSERT OR IGNORE INTO deps (dep, job) VALUES (?, ?)",
                [(dep, job_id) for dep in awaited],
            )
            self._event("queued", job_id)
            lane = row["lane"]
            if awaited:  # it joins its lane's order once its dependencies finished
                db.execute(
                    "DELETE FROM lane_members WHERE lane = ? AND priority = ? AND seq = ?",
                    (lane, row["priority"], row["seq"]),
                )
            elif lane is not None:
                db.execute(
                    "INSERT OR IGNORE INTO lane_members (lane, priority, seq, job)"
                    " VALUES (?, ?, ?, ?)",
                    (lane, row["priority"], row["seq"], job_id),
                )
                db.execute("INSERT OR IGNORE INTO lanes (lane) VALUES (?)", (lane,))
                # an idle lane forgets its last failure (the user resumes it)
                db.execute(
                    "UPDATE lanes SET previous_failed = 0 WHERE lane = ? AND current IS NULL",
                    (lane,),
                )
                self._engine.cascade(self._engine.advance_lane(lane))
            else:
                self._engine.consider(job_id)

    def _retry_dependencies(self, row: dict[str, Any]) -> list[str]:
        """The dependencies a retried job waits for again; InvalidJob if one did not finish."""
        awaited = []
        for dep_id in json.loads(row["after"]):
            dep = self._one("SELECT status FROM jobs WHERE id = ?", dep_id)
            if dep is None or dep["status"] == Status.FINISHED:
                continue  # gone (popped or forgotten) or finished: satisfied
            if dep["status"] in TERMINAL:
                raise InvalidJob(
                    f"job {row['id']!r} depends on {dep_id!r}, which {dep['status']}; "
                    f"retry {dep_id!r} first"
                )
            awaited.append(dep_id)
        return awaited

    def _retry_unique(self, row: dict[str, Any], now: float) -> None:
        key = row["unique_key"]
        if not key:
            return
        held = self._one("SELECT job, until FROM unique_keys WHERE key = ?", key)
        if held is not None and held["job"] != row["id"]:
            holder = self._one("SELECT status FROM jobs WHERE id = ?", held["job"])
            if holder is not None and rules.unique_still_held(
                holder["status"] not in TERMINAL, held["until"], now
            ):
                raise InvalidJob(
                    f"job {row['id']!r} cannot be retried: job {held['job']!r} holds its unique"
                    f" key {key!r}"
                )
        self._db.execute(
            "INSERT OR REPLACE INTO unique_keys (key, job, until) VALUES (?, ?, NULL)",
            (key, row["id"]),
        )

    def purge(
        self,
        statuses: Collection[Status],
        task: str | None = None,
        before: float | None = None,
    ) -> int:
        """Drop matching jobs; return how many (see :meth:`Backend.purge`)."""
        rules.check_purge(statuses)
        if not statuses:
            return 0
        with self._tx() as db:
            self._engine.tick(self._clock.now())
            wanted = sorted(status.value for status in statuses)
            rows = db.execute(
                f"SELECT id, status, task, submitted, ended FROM jobs WHERE status IN"
                f" ({', '.join('?' * len(wanted))}) ORDER BY seq",
                wanted,
            ).fetchall()
            chosen = [
                row
                for row in rows
                if (task is None or row["task"] == task)
                and ended_before(
                    row["ended"] if row["status"] in TERMINAL else row["submitted"], before
                )
            ]
            for row in chosen:
                now_row = self._one("SELECT status FROM jobs WHERE id = ?", row["id"])
                # an earlier purged job's cascade may have cancelled it already
                if now_row is not None and now_row["status"] not in TERMINAL:
                    self._engine.end(row["id"], Status.CANCELLED, reason="purged")
            db.executemany("DELETE FROM jobs WHERE id = ?", [(row["id"],) for row in chosen])
        return len(chosen)
