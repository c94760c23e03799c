"""The rules of DESIGN §2 on the SQLite tables, applied inside the caller's transaction.

As in the memory backend, only runnable jobs carry ``ready = 1`` (a partial index ordered by
priority and submission is the ready structure); a job found blocked by a resource at claim time
is *parked* on it (``parked = 'group:db'``), and when the resource is released the key goes into
``freed``, so a claim looks at the best ready job and the best parked job of each freed key —
never at the whole backlog. Dependencies count down in ``pending_deps``; lanes keep their
members (jobs not yet started whose dependencies all finished: the lane order of
:mod:`conveyor.rules`) in ``lane_members`` and their holder in ``lanes``.

Held resources live in ``held``: ``group:<g>`` (1 while a running job holds the group),
``task:<t>`` (running jobs of task t) and ``decl:<name>`` (running jobs that list name as
incompatible). Keys a job may be parked on: ``group:<g>``, ``job:<id>`` (a running job named in
its incompatible list), ``task:<t>`` (a running job of a task it names), ``decl:<name>`` (a
running job names its id or task) and ``limit:<t>`` (its task at max_concurrency).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from conveyor import rules
from conveyor.backends.sqlite.schema import (
    FINISH,
    LANE_TOP,
    PARKED_TOP,
    READY_TOP,
    RETURNING,
    TIMERS,
    names,
)
from conveyor.clock import Clock
from conveyor.job import TERMINAL, ErrorInfo, Status


class Rules:
    """The bookkeeping of every rule, on one connection; every method runs inside a write
    transaction the caller opened, and reports what happened through ``event(name, job_id)``."""

    def __init__(
        self,
        db: sqlite3.Connection,
        clock: Clock,
        *,
        lease: float,
        result_ttl: float | None,
        event: Callable[[str, str], None],
    ) -> None:
        self._db = db
        self._clock = clock
        self._lease = lease
        self._result_ttl = result_ttl
        self._event = event

    def _one(self, sql: str, *args: Any) -> dict[str, Any] | None:
        row: dict[str, Any] | None = self._db.execute(sql, args).fetchone()
        return row

    def claim(self, worker: str, mode: str, limit: int, ahead: int = 0) -> list[dict[str, Any]]:
        """Start up to ``limit`` jobs, the last ``ahead`` of them marked as claimed ahead (no
        slot runs them yet); their rows, as they were before the claim."""
        now = self._clock.now()
        self.tick(now)
        rows: list[dict[str, Any]] = []
        while len(rows) < limit:
            row = self.next_startable(mode)
            if row is None:
                break
            self.start(row, worker, now, ahead=len(rows) >= limit - ahead)
            rows.append(row)
        return rows

    def next_startable(self, mode: str) -> dict[str, Any] | None:
        while True:
            best = self._one(READY_TOP, mode)
            for key in [
                r["key"] for r in self._db.execute("SELECT key FROM freed WHERE mode = ?", (mode,))
            ]:
                top = self._one(PARKED_TOP, key, mode)
                if top is None or not self.is_free(key):
                    self._db.execute("DELETE FROM freed WHERE mode = ? AND key = ?", (mode, key))
                    continue
                if best is None or (top["priority"], top["seq"]) < (best["priority"], best["seq"]):
                    best = top
            if best is None:
                return None
            stale = best["status"] != Status.WAITING or (
                best["lane"] is not None and not self.lane_allows(best["lane"], best["id"])
            )
            blocker = None if stale else self.conflict(best)
            if not stale and blocker is None:
                return best  # _start takes it out of the ready index in its own UPDATE
            self._db.execute(
                "UPDATE jobs SET ready = 0, parked = ? WHERE seq = ?", (blocker, best["seq"])
            )

    def held(self, key: str) -> int:
        row = self._one("SELECT count FROM held WHERE key = ?", key)
        return row["count"] if row else 0

    def conflict(self, row: dict[str, Any]) -> str | None:
        """The key of the resource that keeps ``row`` from starting now, or None."""
        groups = [f"group:{g}" for g in names(row["exclusive"])]
        incompatible = names(row["incompatible"])
        task = row["task"]
        keys = [*groups, *(f"task:{n}" for n in incompatible), f"decl:{row['id']}",
                f"decl:{task}", f"task:{task}"]  # fmt: skip
        marks = ",".join("?" * len(keys))
        held = {
            r["key"]: r["count"]
            for r in self._db.execute(
                f"SELECT key, count FROM held WHERE count > 0 AND key IN ({marks})", keys
            )
        }
        for key in groups:
            if key in held:
                return key
        for name in incompatible:
            if self._one("SELECT 1 AS x FROM jobs WHERE id = ? AND status = 'running'", name):
                return f"job:{name}"
            if f"task:{name}" in held:
                return f"task:{name}"
        for key in (f"decl:{row['id']}", f"decl:{task}"):
            if key in held:
                return key
        running = held.get(f"task:{task}", 0)
        if running:
            limit = self._one("SELECT max FROM limits WHERE task = ?", task)
            if limit is not None and running >= limit["max"]:
                return f"limit:{task}"
        return None

    def is_free(self, key: str) -> bool:
        kind, _, name = key.partition(":")
        if kind == "job":
            return not self._one(
                "SELECT 1 AS x FROM jobs WHERE id = ? AND status = 'running'", name
            )
        if kind == "limit":
            limit = self._one("SELECT max FROM limits WHERE task = ?", name)
            return limit is None or self.held(f"task:{name}") < limit["max"]
        return not self.held(key)  # group, task, decl

    def hold(self, key: str, delta: int) -> None:
        self._db.execute(
            "INSERT INTO held (key, count) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET count = count + excluded.count",
            (key, delta),
        )  # a count of 0 means free: rows are kept, not deleted, to save a statement

    def start(self, row: dict[str, Any], worker: str, now: float, *, ahead: bool = False) -> None:
        job_id = row["id"]
        self._db.execute(
            "UPDATE jobs SET status = 'running', ready = 0, parked = NULL,"
            " attempts = attempts + 1, ahead = ?, started = ?,"
            " ended = NULL, worker = ?, lease_until = ? WHERE id = ?",
            (int(ahead), now, worker, now + self._lease, job_id),
        )
        for group in names(row["exclusive"]):
            self.hold(f"group:{group}", 1)
        self.hold(f"task:{row['task']}", 1)
        for name in names(row["incompatible"]):
            self.hold(f"decl:{name}", 1)
        if row["lane"] is not None:
            lane = self._one("SELECT current FROM lanes WHERE lane = ?", row["lane"])
            if lane is None or lane["current"] != job_id:
                self._db.execute(
                    "DELETE FROM lane_members WHERE lane = ? AND job = ?", (row["lane"], job_id)
                )
                self._db.execute(
                    "UPDATE lanes SET current = ? WHERE lane = ?", (job_id, row["lane"])
                )
        self._event("started", job_id)

    def finish(
        self,
        job_id: str,
        attempt: int,
        encoded: bytes | ErrorInfo,
        started: float | None = None,
        ended: float | None = None,
    ) -> bool:
        """End a running attempt with its encoded result (an ErrorInfo: it could not be
        encoded, the job fails); ``started`` and ``ended`` default to the claim and now."""
        if RETURNING and not isinstance(encoded, ErrorInfo):
            # one statement checks the claim and ends the job; the row it returns is the ended
            # job's, as the cascade wants it
            at = self._clock.now() if ended is None else ended
            values = (started, at, encoded, job_id, attempt)
            cursor = self._db.execute(FINISH, values)
            row = cursor.fetchone()
            cursor.close()
            if row is None:
                return False  # cancelled, recovered or timed out meanwhile: dropped
            self.release(row)
            self.cascade([job_id], row)
            return True
        row = self.holding(job_id, attempt)
        if row is None:
            return False
        self.release(row)
        if started is not None:
            self._db.execute("UPDATE jobs SET started = ? WHERE id = ?", (started, job_id))
        if isinstance(encoded, ErrorInfo):
            self.end(job_id, Status.FAILED, error=encoded, row=row, at=ended)
        else:
            self.end(job_id, Status.FINISHED, result=encoded, row=row, at=ended)
        return True

    def holding(self, job_id: str, attempt: int) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM jobs WHERE id = ?", job_id)
        if row is None or row["status"] != Status.RUNNING or row["attempts"] != attempt:
            return None  # cancelled, recovered or timed out meanwhile: the late report is dropped
        return row

    def retry(self, row: dict[str, Any], error: ErrorInfo) -> float:
        """Put a failed attempt's job back for its next attempt; return when it may start."""
        delay = rules.retry_delay(row["retry_delay"], row["backoff"], row["attempts"])
        if delay > 0:
            self._db.execute(
                "UPDATE jobs SET status = 'scheduled', due = ?, error = ?, traceback = ?,"
                " lease_until = NULL WHERE id = ?",
                (self._clock.now() + delay, str(error), error.traceback, row["id"]),
            )
        else:
            self._db.execute(
                "UPDATE jobs SET status = 'waiting', error = ?, traceback = ?,"
                " lease_until = NULL WHERE id = ?",
                (str(error), error.traceback, row["id"]),
            )
            self.consider(row["id"])
        self._event("retrying", row["id"])
        return self._clock.now() + max(delay, 0.0)

    def release(self, row: dict[str, Any]) -> None:
        """Give back what a running job held and mark the keys it frees."""
        keys = [f"job:{row['id']}", f"task:{row['task']}", f"limit:{row['task']}"]
        for group in names(row["exclusive"]):
            self.hold(f"group:{group}", -1)
            keys.append(f"group:{group}")
        self.hold(f"task:{row['task']}", -1)
        for name in names(row["incompatible"]):
            self.hold(f"decl:{name}", -1)
            keys.append(f"decl:{name}")
        if self._one("SELECT 1 AS x FROM jobs WHERE parked IS NOT NULL LIMIT 1") is None:
            return  # nothing is parked: nothing to wake
        for key in keys:
            self._db.execute(
                "INSERT OR IGNORE INTO freed (mode, key)"
                " SELECT DISTINCT mode, parked FROM jobs WHERE parked = ?",
                (key,),
            )

    def end(
        self,
        job_id: str,
        status: Status,
        *,
        result: bytes | None = None,
        error: ErrorInfo | None = None,
        reason: str | None = None,
        row: dict[str, Any] | None = None,
        at: float | None = None,
    ) -> None:
        """Make a job terminal (ended ``at``, default now) and apply every cascade it causes."""
        text = None if status == Status.FINISHED else (str(error) if error else reason)
        self._db.execute(
            "UPDATE jobs SET status = ?, ended = ?, ready = 0, parked = NULL, lease_until = NULL,"
            " result = ?, error = ?, traceback = ? WHERE id = ?",
            (status.value, self._clock.now() if at is None else at, result, text,
             error.traceback if error else None, job_id),
        )  # fmt: skip
        known = None if row is None else {**row, "status": status.value}
        self.cascade([job_id], known)

    def cascade(self, ended: list[str], known: dict[str, Any] | None = None) -> None:
        """Settle what the ended jobs free or doom: dependents, lanes, unique keys, events.

        Iterative (a work list), so a chain of thousands of dependents cannot overflow.
        ``known`` is the first job's row as it is now, if the caller has it.
        """
        work = list(ended)
        while work:
            job_id = work.pop()
            row = known if known is not None and known["id"] == job_id else None
            row = row or self._one("SELECT * FROM jobs WHERE id = ?", job_id)
            assert row is not None
            work += self.after_end(row)

    def after_end(self, row: dict[str, Any]) -> list[str]:
        job_id, state, now = row["id"], Status(row["status"]), self._clock.now()
        doomed: list[str] = []
        if row["unique_key"]:
            if row["unique_for"]:
                self._db.execute(
                    "UPDATE unique_keys SET until = ? WHERE key = ? AND job = ?",
                    (now + row["unique_for"], row["unique_key"], job_id),
                )
            else:
                self._db.execute(
                    "DELETE FROM unique_keys WHERE key = ? AND job = ?", (row["unique_key"], job_id)
                )
        dependents = self._db.execute("SELECT job FROM deps WHERE dep = ?", (job_id,)).fetchall()
        for dep in dependents:
            child = self._one(
                "SELECT id, status, pending_deps, lane, priority, seq FROM jobs WHERE id = ?",
                dep["job"],
            )
            if child is None or child["status"] in TERMINAL:
                continue
            if state == Status.FINISHED:
                self._db.execute(
                    "UPDATE jobs SET pending_deps = pending_deps - 1 WHERE id = ?", (child["id"],)
                )
                if child["pending_deps"] == 1:
                    doomed += self.deps_done(child)
            else:
                self.cancel_quietly(child["id"], rules.cascade_reason(job_id, state.value))
                doomed.append(child["id"])
        if dependents:
            self._db.execute("DELETE FROM deps WHERE dep = ?", (job_id,))
        if row["lane"] is not None:
            lane = self._one("SELECT current FROM lanes WHERE lane = ?", row["lane"])
            if lane is not None:
                if lane["current"] == job_id:
                    self._db.execute(
                        "UPDATE lanes SET current = NULL, previous = ?, previous_failed = ?"
                        " WHERE lane = ?",
                        (job_id, int(state != Status.FINISHED), row["lane"]),
                    )
                    lane["current"] = None
                if lane["current"] is None:
                    doomed += self.advance_lane(row["lane"])
        self._event(state.value, job_id)
        return doomed

    def cancel_quietly(self, job_id: str, reason: str) -> None:
        """Mark a job cancelled; the caller puts it on the cascade's work list."""
        self._db.execute(
            "UPDATE jobs SET status = 'cancelled', ended = ?, ready = 0, parked = NULL,"
            " lease_until = NULL, error = ? WHERE id = ?",
            (self._clock.now(), reason, job_id),
        )

    def deps_done(self, row: dict[str, Any]) -> list[str]:
        """Every dependency of the job finished: it joins its lane's order, or may start.
        ``row`` has its id, lane, priority and seq; returns what ``join_lane`` returns."""
        if row["lane"] is None:
            self.consider(row["id"])
            return []
        return self.join_lane(row)

    def join_lane(self, row: dict[str, Any]) -> list[str]:
        """Give the job its place in its lane's order (priority, then submission); if nothing
        holds the lane it advances: return the jobs a failure short-circuited."""
        self._db.execute(
            "INSERT INTO lane_members (lane, priority, seq, job) VALUES (?, ?, ?, ?)",
            (row["lane"], row["priority"], row["seq"], row["id"]),
        )
        self._db.execute("INSERT OR IGNORE INTO lanes (lane) VALUES (?)", (row["lane"],))
        return self.advance_lane(row["lane"])

    def advance_lane(self, lane: str) -> list[str]:
        """Pick the lane's next job if it is free; return the jobs a failure short-circuited."""
        state = self._one("SELECT * FROM lanes WHERE lane = ?", lane)
        if state is None or state["current"] is not None:
            return []
        previous, failed = state["previous"], bool(state["previous_failed"])
        doomed: list[str] = []
        while True:
            top = self._one(LANE_TOP, lane)
            if top is None:
                break
            row = self._one(
                "SELECT id, status, stop_on_lane_error FROM jobs WHERE id = ?", top["job"]
            )
            if row is None or row["status"] in TERMINAL:
                self._db.execute(
                    "DELETE FROM lane_members WHERE lane = ? AND job = ?", (lane, top["job"])
                )
                previous, failed = top["job"], True
                continue
            if failed and row["stop_on_lane_error"]:
                self.cancel_quietly(
                    row["id"],
                    rules.lane_reason(previous or "?", json.loads(lane), "failed or was cancelled"),
                )
                doomed.append(row["id"])
                continue  # cancelled now: the next pass takes it off the lane
            self.consider(row["id"])
            break
        self._db.execute(
            "UPDATE lanes SET previous = ?, previous_failed = ? WHERE lane = ?",
            (previous, int(failed), lane),
        )
        if not failed and self._one(LANE_TOP, lane) is None:
            # an empty lane whose last job failed is kept, so that a stop_on_lane_error job
            # put later still sees the failure
            self._db.execute("DELETE FROM lanes WHERE lane = ? AND current IS NULL", (lane,))
        return doomed

    def lane_allows(self, lane: str, job_id: str) -> bool:
        state = self._one("SELECT current FROM lanes WHERE lane = ?", lane)
        if state is None:
            return False
        if state["current"] is not None:
            return bool(state["current"] == job_id)
        top = self._one(LANE_TOP, lane)
        return top is not None and top["job"] == job_id

    def consider(self, job_id: str) -> None:
        """Mark a job ready if nothing but resources can still hold it back."""
        row = self._one("SELECT status, pending_deps, parked, lane FROM jobs WHERE id = ?", job_id)
        if row is None or row["status"] != Status.WAITING or row["pending_deps"] > 0:
            return
        if row["parked"] is not None:
            return
        if row["lane"] is not None and not self.lane_allows(row["lane"], job_id):
            return
        self._db.execute("UPDATE jobs SET ready = 1 WHERE id = ?", (job_id,))

    def tick(self, now: float) -> None:
        """Apply timers due by ``now``: delays and retries ending, expiry, result_ttl."""
        for row in self._db.execute(TIMERS, (now, now)).fetchall():
            if row["kind"] == "due":
                self._db.execute(
                    "UPDATE jobs SET status = 'waiting', due = NULL WHERE id = ?", (row["id"],)
                )
                self.consider(row["id"])
            elif self._one(  # a cascade earlier in this loop may have ended it already
                "SELECT 1 AS x FROM jobs WHERE id = ? AND status IN ('waiting', 'scheduled')",
                row["id"],
            ):
                self.end(row["id"], Status.CANCELLED, reason="expired")
        if self._result_ttl is not None:
            self._db.execute(
                "DELETE FROM jobs WHERE ended IS NOT NULL AND ended < ?", (now - self._result_ttl,)
            )
