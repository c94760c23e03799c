"""The SQLite engine's steps of lanes and the ready index: a job whose dependencies finished
joins its lane's order, a lane advances to its next job, and a job that nothing but keys can
hold back enters the ready index (``jobs.ready``).

Tables: ``lane_members`` (lane, priority, seq, job: joined, not started) and ``lanes`` (the
running or retrying holder, the previous job and whether it failed). The engine
(:class:`~.engine.Engine`) is this class with the other steps; its write transaction is the
caller's.
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

from conveyor import rules
from conveyor.backends.sqlite.schema import LANE_TOP
from conveyor.job import TERMINAL, Status

Row = dict[str, Any]


class Lanes:
    """Lanes and the ready index, on the engine's connection."""

    _db: sqlite3.Connection
    #: lanes that jobs joined in this step, advanced once all of them have joined
    _joined: list[str]

    if TYPE_CHECKING:

        def cancel_quietly(self, job_id: str, reason: str) -> None: ...

    def _one(self, sql: str, *args: Any) -> Row | None:
        row: Row | None = self._db.execute(sql, args).fetchone()
        return row

    def deps_done(self, row: Row) -> list[str]:
        """Every dependency of the job finished: it joins its lane's order, or may start.
        ``row`` has its id, lane, priority and seq; returns what ``join_lane`` returns."""
        if row["lane"] is None:
            self.consider(row["id"])
            return []
        return self.join_lane(row)

    def join_lane(self, row: Row) -> list[str]:
        """Give the job its place in its lane's order (priority, then submission). The lane
        advances once every job joining in the same step has joined (:meth:`advance_joined`),
        so its front is the first of them; returns nothing (the advance returns the jobs a
        failure short-circuits)."""
        self._db.execute(
            "INSERT INTO lane_members (lane, priority, seq, job) VALUES (?, ?, ?, ?)",
            (row["lane"], row["priority"], row["seq"], row["id"]),
        )
        self._db.execute("INSERT OR IGNORE INTO lanes (lane) VALUES (?)", (row["lane"],))
        if row["lane"] not in self._joined:
            self._joined.append(row["lane"])
        return []

    def advance_joined(self) -> list[str]:
        """Advance the lanes jobs joined in this step (memory: its work list); return the
        jobs a failure short-circuited."""
        doomed: list[str] = []
        while self._joined:
            doomed += self.advance_lane(self._joined.pop(0))
        return doomed

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
        """Whether the job is its lane's next (or holds it)."""
        state = self._one("SELECT current FROM lanes WHERE lane = ?", lane)
        if state is None:
            return False
        if state["current"] is not None:
            return bool(state["current"] == job_id)
        top = self._one(LANE_TOP, lane)
        return top is not None and top["job"] == job_id

    def consider(self, job_id: str) -> None:
        """A waiting job that nothing but keys can still hold back enters the ready index."""
        row = self._one("SELECT status, pending_deps, parked, lane FROM jobs WHERE id = ?", job_id)
        if row is None or row["status"] != Status.WAITING or row["pending_deps"] > 0:
            return
        if row["parked"] is not None:
            return
        if row["lane"] is not None and not self.lane_allows(row["lane"], job_id):
            return
        self._db.execute("UPDATE jobs SET ready = 1 WHERE id = ?", (job_id,))
