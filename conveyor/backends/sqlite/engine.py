"""The SQLite engine: the rules of :mod:`conveyor.rules` on the tables of :mod:`.schema`.

It is the engine every backend implements, its steps named as ``rules.ENGINE_STEPS`` names
them, over the :class:`~conveyor.rules.plan.Plan` each job's options compile to at insert: it
knows keys, not exclusive groups, incompatible names or limits. Every method runs inside a
write transaction its caller opened, and reports what happened through ``event(name, job_id)``.

What backs each part:

- plan: the job row's ``needs``, ``holds`` and ``frees`` (JSON, compiled once at insert);
- ready index: ``jobs.ready = 1``, the partial index ``jobs_ready (mode, priority, seq)``;
  only jobs that nothing but keys can hold back are in it;
- parked keys: ``jobs.parked`` (the park key that blocked the job at claim time; out of the
  ready index), the partial index ``jobs_parked (parked, mode, priority, seq)``;
- freed keys: the ``freed`` table (mode, park key), filled by ``release`` for keys that have
  parked jobs, read by the next claim beside the ready index's top;
- held counts: the ``held`` table (key, count); a count of 0 is free (rows are kept);
  ``job:<id>`` keys are never counted: free iff that job's status is not running;
- capacities: the ``capacities`` table (park key -> counted key, capacity) for the needs
  whose park key is not the counted key at capacity 1, read by ``is_free``;
- dependency counters: ``jobs.pending_deps`` and the ``deps`` table (dependency, dependent);
- lane order: ``lane_members`` (lane, priority, seq, job: joined, not started) and ``lanes``
  (the running or retrying holder, the previous job and whether it failed), in :mod:`.lanes`;
- timers: ``jobs.due`` of scheduled jobs (index ``jobs_due``) and ``jobs.expires_at`` of jobs
  not yet started (index ``jobs_expiry``);
- leases (SQLite only; the memory backend has none): ``jobs.worker`` and ``jobs.lease_until``;
  ``take_back`` returns the job of a worker whose lease ran out.

A claim (``tick``, then ``next_startable`` and ``start`` until it has enough) and the end of an
attempt (``release``, then ``end`` or ``schedule_retry``) are composed in :mod:`.backend`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from conveyor import rules
from conveyor.backends.sqlite.lanes import Lanes, Row
from conveyor.backends.sqlite.schema import (
    INSERT_JOB,
    IS_FREE,
    PARKED_TOP,
    READY_TOP,
    SET_CAPACITY,
    TIMERS,
    held_keys,
    job_columns,
    shape_columns,
    to_json,
)
from conveyor.clock import Clock
from conveyor.job import TERMINAL, ErrorInfo, Status
from conveyor.records import JobSpec
from conveyor.rules.plan import JOB, key

#: a job whose worker vanished this many times more than its retries allow is failed
LOST_LEASE_ALLOWANCE = 5
#: the prefix of the uncounted ``job:<id>`` keys
JOB_KEY = key(JOB, "")
RUNNING = "SELECT 1 AS x FROM jobs WHERE id = ? AND status = 'running'"


class Lost(NamedTuple):
    """A job taken back from a worker whose lease ran out (``take_back``): why, how many
    times its workers were lost, and whether it failed for good."""

    error: ErrorInfo
    lost: int
    final: bool


class Engine(Lanes):
    """The engine on one connection (see the module docstring for the tables it uses); the
    steps of lanes and the ready index are :class:`~.lanes.Lanes`'."""

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
        #: lanes that jobs joined in this step, advanced once all of them have joined
        self._joined: list[str] = []

    # ------------------------------------------------------------------ insert
    def insert(
        self, spec: JobSpec, mac: bytes | None, now: float, aliases: Mapping[str, str]
    ) -> None:
        """Store a job: its plan, unique key, timers and dependency count, and QUEUED; a
        dependency already failed or cancelled cancels it, none pending: ``deps_done``."""
        opts = spec.options
        scheduled = opts.at is not None and opts.at > now
        lane = None if opts.lane is None else json.dumps(opts.lane)
        # the common job (no lane, no dependency, not delayed) is ready from its first row
        ready = int(not scheduled and lane is None and not opts.after)
        failed: Row | None = None
        awaited: list[str] = []
        for dep_id in rules.dependencies(opts.after, aliases) if opts.after else ():
            dep = self._one("SELECT id, status FROM jobs WHERE id = ?", dep_id)
            assert dep is not None  # the batch check found it
            if dep["status"] == Status.FINISHED:
                continue
            if dep["status"] in TERMINAL:
                failed = failed or dep
                continue
            awaited.append(dep_id)
        shape = shape_columns(spec.task, opts.exclusive, opts.incompatible, spec.max_concurrency)
        cursor = self._db.execute(
            INSERT_JOB,
            (
                spec.id, spec.task, spec.mode, spec.ref, spec.payload,
                Status.SCHEDULED.value if scheduled else Status.WAITING.value,
                opts.priority, lane, int(opts.stop_on_lane_error), to_json(opts.after),
                to_json(opts.exclusive), to_json(opts.incompatible), opts.timeout,
                opts.retries, opts.retry_delay, opts.backoff, opts.at if scheduled else None,
                opts.expires_at, opts.unique, opts.unique_for, to_json(opts.meta), now, ready,
                mac, *job_columns(spec.id, shape), len(awaited),
            ),
        )  # fmt: skip
        for capacity in shape.capacities:
            self._db.execute(SET_CAPACITY, capacity)
        if opts.unique:
            self._db.execute(
                "INSERT OR REPLACE INTO unique_keys (key, job, until) VALUES (?, ?, NULL)",
                (opts.unique, spec.id),
            )
        self._event("queued", spec.id)
        if awaited:
            self._db.executemany(
                "INSERT OR IGNORE INTO deps (dep, job) VALUES (?, ?)",
                [(dep_id, spec.id) for dep_id in awaited],
            )
        if failed is not None:
            reason = rules.cascade_reason(failed["id"], failed["status"])
            self.end(spec.id, Status.CANCELLED, reason=reason)
        elif not awaited and not ready:
            job = {"id": spec.id, "lane": lane, "priority": opts.priority, "seq": cursor.lastrowid}
            self.cascade(self.deps_done(job))

    # -------------------------------------------------- start: ready, parked, held
    def next_startable(self, mode: str) -> Row | None:
        """The best job that may start now: the ready index's top or the top parked job of
        a freed key, by (priority, seq). Stale entries leave the ready index; a job that a
        key blocks is parked on it."""
        while True:
            best = self._one(READY_TOP, mode)
            for park in [
                r["key"] for r in self._db.execute("SELECT key FROM freed WHERE mode = ?", (mode,))
            ]:
                top = self._one(PARKED_TOP, park, mode)
                if top is None or not self.is_free(park):
                    self._db.execute("DELETE FROM freed WHERE mode = ? AND key = ?", (mode, park))
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
                return best  # start takes it out of the ready index in its own UPDATE
            self.park(best, blocker)

    def conflict(self, row: Row) -> str | None:
        """Walk the job's needs in order: the park key of the first that is not met, or None."""
        needs = [
            (need, 1, need) if isinstance(need, str) else tuple(need)
            for need in json.loads(row["needs"])
        ]
        counted = [need for need, _, _ in needs if not need.startswith(JOB_KEY)]
        held: dict[str, int] = {}
        if counted:
            marks = ",".join("?" * len(counted))
            held = {
                r["key"]: r["count"]
                for r in self._db.execute(
                    f"SELECT key, count FROM held WHERE count > 0 AND key IN ({marks})", counted
                )
            }
        for need, capacity, park in needs:
            if need.startswith(JOB_KEY):
                if self._one(RUNNING, need[len(JOB_KEY) :]) is not None:
                    return str(park)
            elif held.get(need, 0) >= capacity:
                return str(park)
        return None

    def is_free(self, park: str) -> bool:
        """Whether a park key is free (a cheap look before a parked job is checked again)."""
        if park.startswith(JOB_KEY):
            return self._one(RUNNING, park[len(JOB_KEY) :]) is None
        row = self._one(IS_FREE, park)
        return bool(row and row["free"])

    def held(self, key: str) -> int:
        """How many running jobs hold a counted key."""
        row = self._one("SELECT count FROM held WHERE key = ?", key)
        return row["count"] if row else 0

    def park(self, row: Row, park: str | None) -> None:
        """Take a job out of the ready index, parked on ``park`` (None: a stale entry)."""
        self._db.execute("UPDATE jobs SET ready = 0, parked = ? WHERE seq = ?", (park, row["seq"]))

    def start(self, row: Row, worker: str, now: float, *, ahead: bool = False) -> None:
        """A job starts: it holds its plan's keys, and its lane."""
        job_id = row["id"]
        self._db.execute(
            "UPDATE jobs SET status = 'running', ready = 0, parked = NULL,"
            " attempts = attempts + 1, ahead = ?, started = ?,"
            " ended = NULL, worker = ?, lease_until = ?, progress = NULL,"
            " progress_message = NULL WHERE id = ?",
            (int(ahead), now, worker, now + self._lease, job_id),
        )
        self.hold(held_keys(row["holds"]), 1)
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

    def hold(self, keys: Iterable[str], delta: int) -> None:
        """Add ``delta`` to each of the counted keys."""
        self._db.executemany(
            "INSERT INTO held (key, count) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET count = count + excluded.count",
            [(held, delta) for held in keys],
        )  # a count of 0 means free: rows are kept, not deleted, to save a statement

    def release(self, row: Row) -> None:
        """A running job gives back the keys it holds; the keys it frees that have parked
        jobs are marked freed."""
        self.hold(held_keys(row["holds"]), -1)
        if self._one("SELECT 1 AS x FROM jobs WHERE parked IS NOT NULL LIMIT 1") is None:
            return  # nothing is parked: nothing to wake
        self._db.executemany(
            "INSERT OR IGNORE INTO freed (mode, key)"
            " SELECT DISTINCT mode, parked FROM jobs WHERE parked = ?",
            [(park,) for park in json.loads(row["frees"])],
        )

    def holding(self, job_id: str, attempt: int) -> Row | None:
        """The running job's row if ``attempt`` is still the one that runs, else None."""
        row = self._one("SELECT * FROM jobs WHERE id = ?", job_id)
        if row is None or row["status"] != Status.RUNNING or row["attempts"] != attempt:
            return None  # cancelled, recovered or timed out meanwhile: the late report is dropped
        return row

    # ------------------------------------------------------------ end of an attempt
    def schedule_retry(self, row: Row, error: ErrorInfo) -> float:
        """A failed attempt with retries left: its job is scheduled (a delay) or waiting
        again; return when it may start."""
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

    def take_back(self, row: Row) -> Lost:
        """A job whose worker's lease ran out is waiting again, or failed once its workers
        were lost too often; an attempt claimed ahead and never started is not counted."""
        self.release(row)
        attempts, lost = row["attempts"] - row["ahead"], row["lost"] + 1
        self._db.execute(
            "UPDATE jobs SET attempts = ?, lost = ?, ahead = 0 WHERE id = ?",
            (attempts, lost, row["id"]),
        )
        note = " (claimed ahead, never started: attempt not counted)" if row["ahead"] else ""
        error = ErrorInfo("WorkerLost", f"the lease of worker {row['worker']} ran out{note}")
        bound = row["retries"] + LOST_LEASE_ALLOWANCE
        final = attempts > bound or lost > bound
        if final:
            self.end(row["id"], Status.FAILED, error=error)
        else:
            self._db.execute(
                "UPDATE jobs SET status = 'waiting', lease_until = NULL, error = ? WHERE id = ?",
                (str(error), row["id"]),
            )
            self.consider(row["id"])
        return Lost(error, lost, final)

    # ------------------------------------------------------------ end and cascade
    def end(
        self,
        job_id: str,
        status: Status,
        *,
        result: bytes | None = None,
        error: ErrorInfo | None = None,
        reason: str | None = None,
        row: Row | None = None,
        at: float | None = None,
    ) -> None:
        """Make a job terminal (ended ``at``, default now), then the cascade."""
        text = None if status == Status.FINISHED else (str(error) if error else reason)
        self._db.execute(
            "UPDATE jobs SET status = ?, ended = ?, ready = 0, parked = NULL, lease_until = NULL,"
            " result = ?, error = ?, traceback = ? WHERE id = ?",
            (status.value, self._clock.now() if at is None else at, result, text,
             error.traceback if error else None, job_id),
        )  # fmt: skip
        known = None if row is None else {**row, "status": status.value}
        self.cascade([job_id], known)

    def cascade(self, ended: list[str], known: Row | None = None) -> None:
        """``after_end`` for each ended job, and for each job that ends in turn.

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

    def after_end(self, row: Row) -> list[str]:
        """What an ended job frees or dooms, in the order of :mod:`conveyor.rules`: its
        unique key, its dependents, its lane; then its event. Returns the jobs it ended."""
        job_id, state = row["id"], Status(row["status"])
        if row["unique_key"]:
            if row["unique_for"]:
                self._db.execute(
                    "UPDATE unique_keys SET until = ? WHERE key = ? AND job = ?",
                    (self._clock.now() + row["unique_for"], row["unique_key"], job_id),
                )
            else:
                self._db.execute(
                    "DELETE FROM unique_keys WHERE key = ? AND job = ?", (row["unique_key"], job_id)
                )
        doomed = self.settle_dependents(job_id, state)
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
        doomed += self.advance_joined()
        self._event(state.value, job_id)
        return doomed

    def settle_dependents(self, job_id: str, state: Status) -> list[str]:
        """A job ended: its dependents count down (it finished) or are cancelled; returns the
        jobs that ended."""
        doomed: list[str] = []
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
        return doomed

    def cancel_quietly(self, job_id: str, reason: str) -> None:
        """Mark a job cancelled; the caller puts it on the cascade's work list."""
        self._db.execute(
            "UPDATE jobs SET status = 'cancelled', ended = ?, ready = 0, parked = NULL,"
            " lease_until = NULL, error = ? WHERE id = ?",
            (self._clock.now(), reason, job_id),
        )

    # ------------------------------------------------------------------ timers
    def tick(self, now: float) -> None:
        """Timers due by ``now``: delays and retries end (waiting, considered), jobs not
        started expire (cancelled); and ended jobs older than result_ttl go."""
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
