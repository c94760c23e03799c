"""The durable backend: one SQLite file (WAL), shared by producers and worker processes.

Every state change is one ``BEGIN IMMEDIATE`` transaction that applies the rules of DESIGN §2,
mirroring the memory backend: only runnable jobs carry ``ready = 1`` (a partial index ordered by
priority and submission is the ready structure); a job found blocked by a resource at claim time
is *parked* on it (``parked = 'group:db'``), and when the resource is released the key goes into
``freed``, so a claim looks at the best ready job and the best parked job of each freed key —
never at the whole backlog. Dependencies count down in ``pending_deps``; lanes keep their
not-yet-started members in ``lane_members`` and their holder in ``lanes``.

Held resources live in ``held``: ``group:<g>`` (1 while a running job holds the group),
``task:<t>`` (running jobs of task t) and ``decl:<name>`` (running jobs that list name as
incompatible). Keys a job may be parked on: ``group:<g>``, ``job:<id>`` (a running job named in
its incompatible list), ``task:<t>`` (a running job of a task it names), ``decl:<name>`` (a
running job names its id or task) and ``limit:<t>`` (its task at max_concurrency).

Other processes' changes are seen by watching ``PRAGMA data_version``; waits in this process are
woken at once by this process's own commits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

from conveyor import rules
from conveyor.backends.base import ClaimedJob, Finished, JobSpec, WorkerInfo
from conveyor.clock import Clock
from conveyor.errors import (
    InvalidJob,
    NotSerializable,
    PayloadRefused,
    QueueClosed,
    QueueFull,
    UnknownJob,
)
from conveyor.events import EventBus
from conveyor.job import TERMINAL, ErrorInfo, JobRecord, Status
from conveyor.serializer import Serializer

log = logging.getLogger("conveyor.backends.sqlite")

#: seconds between looks at ``PRAGMA data_version`` while waiting for another process
POLL_INTERVAL = 0.005
#: seconds a write transaction waits for another process's before it gives up
BUSY_TIMEOUT = 60.0
#: seconds between tries to begin a write transaction while another process holds the lock
NAP = 0.0002
#: a job whose worker vanished this many times more than its retries allow is failed
LOST_LEASE_ALLOWANCE = 5

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY,  -- max + 1 on insert: submission order, no AUTOINCREMENT page
    id TEXT NOT NULL UNIQUE,
    task TEXT NOT NULL,
    mode TEXT NOT NULL,
    ref TEXT NOT NULL,
    payload BLOB NOT NULL,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    lane TEXT,
    stop_on_lane_error INTEGER NOT NULL,
    after TEXT NOT NULL,
    exclusive TEXT NOT NULL,
    incompatible TEXT NOT NULL,
    timeout REAL,
    retries INTEGER NOT NULL,
    retry_delay REAL NOT NULL,
    backoff REAL NOT NULL,
    due REAL,
    expires_at REAL,
    unique_key TEXT,
    unique_for REAL,
    meta TEXT NOT NULL,
    pending_deps INTEGER NOT NULL DEFAULT 0,
    ready INTEGER NOT NULL DEFAULT 0,
    parked TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    lease_until REAL,
    submitted REAL NOT NULL,
    started REAL,
    ended REAL,
    result BLOB,
    error TEXT,
    traceback TEXT
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (mode, priority, seq) WHERE ready = 1;
CREATE INDEX IF NOT EXISTS jobs_parked ON jobs (parked, mode, priority, seq)
    WHERE parked IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (due) WHERE status = 'scheduled';
CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (expires_at)
    WHERE expires_at IS NOT NULL AND attempts = 0 AND status IN ('waiting', 'scheduled');
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (lease_until) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_ended ON jobs (ended, seq) WHERE ended IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE TABLE IF NOT EXISTS deps (
    dep TEXT NOT NULL, job TEXT NOT NULL, PRIMARY KEY (dep, job)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lanes (
    lane TEXT PRIMARY KEY, current TEXT, previous TEXT,
    previous_failed INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lane_members (
    lane TEXT NOT NULL, priority INTEGER NOT NULL, seq INTEGER NOT NULL, job TEXT NOT NULL,
    PRIMARY KEY (lane, priority, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS held (key TEXT PRIMARY KEY, count INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS freed (
    mode TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (mode, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS limits (task TEXT PRIMARY KEY, max INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unique_keys (
    key TEXT PRIMARY KEY, job TEXT NOT NULL, until REAL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, mode TEXT NOT NULL,
    slots INTEGER NOT NULL, started REAL NOT NULL, last_seen REAL NOT NULL) WITHOUT ROWID;
"""

INSERT_JOB = """
INSERT INTO jobs (id, task, mode, ref, payload, status, priority, lane, stop_on_lane_error,
    after, exclusive, incompatible, timeout, retries, retry_delay, backoff, due, expires_at,
    unique_key, unique_for, meta, submitted, ready)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
READY_TOP = "SELECT * FROM jobs WHERE ready = 1 AND mode = ? ORDER BY priority, seq LIMIT 1"
PARKED_TOP = "SELECT * FROM jobs WHERE parked = ? AND mode = ? ORDER BY priority, seq LIMIT 1"
# timers read through their partial indexes only (INDEXED BY: the planner would otherwise
# pick jobs_status and walk every waiting job)
DUE = "SELECT id FROM jobs INDEXED BY jobs_due WHERE status = 'scheduled' AND due <= ? ORDER BY due"
_EXPIRY_WHERE = "expires_at IS NOT NULL AND attempts = 0 AND status IN ('waiting', 'scheduled')"
EXPIRED = f"SELECT id FROM jobs INDEXED BY jobs_expiry WHERE {_EXPIRY_WHERE} AND expires_at <= ?"
# both timers in one statement: a claim pays one read for them, not two
TIMERS = (
    "SELECT id, 'due' AS kind FROM jobs INDEXED BY jobs_due"
    " WHERE status = 'scheduled' AND due <= ?"
    f" UNION ALL SELECT id, 'expired' FROM jobs INDEXED BY jobs_expiry"
    f" WHERE {_EXPIRY_WHERE} AND expires_at <= ?"
)
NEXT_TIMER = f"""
SELECT min(t) FROM (
    SELECT min(due) AS t FROM jobs INDEXED BY jobs_due WHERE status = 'scheduled'
    UNION ALL SELECT min(expires_at) FROM jobs INDEXED BY jobs_expiry WHERE {_EXPIRY_WHERE})
"""
EXPIRED_RESULT = "SELECT 1 AS x FROM jobs WHERE ended IS NOT NULL AND ended < ? LIMIT 1"
#: ends a running job's attempt as finished, if the attempt is still the one that runs
FINISH = """
UPDATE jobs SET status = 'finished', started = coalesce(?, started), ended = ?, ready = 0,
    parked = NULL, lease_until = NULL, result = ?, error = NULL, traceback = NULL
WHERE id = ? AND status = 'running' AND attempts = ? RETURNING *"""
#: ``UPDATE ... RETURNING`` came with SQLite 3.35
RETURNING = sqlite3.sqlite_version_info >= (3, 35)
LANE_TOP = "SELECT job FROM lane_members WHERE lane = ? ORDER BY priority, seq LIMIT 1"


def _names(column: str) -> list[str]:
    """A JSON list column; most jobs have none, so skip the decoder for "[]"."""
    return [] if column == "[]" else list(json.loads(column))


def _json(value: tuple[str, ...] | dict[str, Any]) -> str:
    """``json.dumps``, with the empty list and dict (most jobs' options) for free."""
    if not value:
        return "{}" if isinstance(value, dict) else "[]"
    return json.dumps(value)


def _row_factory(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {d[0]: value for d, value in zip(cursor.description, row, strict=True)}


class SQLiteBackend:
    """Jobs in one SQLite file; every rule applied inside one transaction per change."""

    durable = True

    def __init__(
        self,
        path: str,
        *,
        clock: Clock | None = None,
        events: EventBus | None = None,
        max_size: int | None = None,
        serializer: Serializer | None = None,
        resolver: Callable[[str], Callable[..., Any]] | None = None,
        lease: float = 60.0,
        result_ttl: float | None = None,
    ) -> None:
        self.path = path
        self._clock = clock or Clock()
        self._bus = events or EventBus()
        self._max_size = max_size
        self.serializer = serializer or Serializer("json")
        self._resolver = resolver
        self._lease = lease
        self._result_ttl = result_ttl
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
        self._db.row_factory = _row_factory
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stop_hook: Callable[[str, str], object] | None = None
        self._callbacks: dict[str, list[Callable[[JobRecord], object]]] = {}
        self._watcher: threading.Thread | None = None
        self._effects: list[Callable[[], object]] = []
        self._commits = 0  # this process's commits: its waiters' wake-up signal
        self._closed = False
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=60000")
            with self._tx():
                self._create_schema()
        self._clock.subscribe(self.wake)

    def _create_schema(self) -> None:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                self._db.execute(statement)

    # ------------------------------------------------------------ transactions
    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under this process's lock (re-entrant inside it).

        After COMMIT, and outside the lock, it runs the callbacks the transaction collected
        (events, done callbacks), and only then wakes this process's waiters: a result seen
        by a waiter has had its events delivered.
        """
        with self._lock:
            if self._closed:
                raise QueueClosed("the queue is closed")
            if self._db.in_transaction:
                yield self._db
                return
            self._begin()
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                self._effects.clear()
                raise
            self._db.execute("COMMIT")
            effects, self._effects = self._effects, []
        for effect in effects:
            try:
                effect()
            except Exception:
                log.exception("a callback of the sqlite backend failed")
        with self._lock:
            self._commits += 1
            self._changed.notify_all()

    def _begin(self) -> None:
        """BEGIN IMMEDIATE, waiting for another process's write transaction in short naps.

        SQLite's own busy handler sleeps 1, 2, 5 ... 100 ms between tries, so a worker process
        whose partner commits every few hundred microseconds can starve; here a waiter retries
        every NAP seconds. The busy timeout is off only around this statement: reads and the
        statements of a transaction keep SQLite's.
        """
        db = self._db
        db.execute("PRAGMA busy_timeout=0")
        try:
            deadline = time.monotonic() + BUSY_TIMEOUT
            while True:
                try:
                    db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    busy = "locked" in str(exc) or "busy" in str(exc)
                    if not busy or time.monotonic() > deadline:
                        raise
                time.sleep(NAP)
        finally:
            db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")

    def _one(self, sql: str, *args: Any) -> dict[str, Any] | None:
        row: dict[str, Any] | None = self._db.execute(sql, args).fetchone()
        return row

    def _job(self, job_id: str) -> dict[str, Any]:
        row = self._one("SELECT * FROM jobs WHERE id = ?", job_id)
        if row is None:
            raise UnknownJob(job_id)
        return row

    # ------------------------------------------------------------------ submit
    def submit(
        self, specs: Sequence[JobSpec], *, block: bool = True, timeout: float | None = None
    ) -> list[str]:
        if self._closed:
            raise QueueClosed("the queue is closed; it takes no more jobs")
        deadline = None if timeout is None else time.monotonic() + timeout
        since = None  # taken (before a second look) only once the queue was seen full
        while True:
            with self._tx() as db:
                now = self._clock.now()
                self._tick(now)
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
                        self._insert(db, spec, now, aliases)
                    break
            if since is None:
                since = self._generation()
                continue
            self._wait(since, deadline)
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
            if spec.ref is None or spec.payload is None:
                raise InvalidJob(f"job {spec.id!r} has no function reference or payload")
        rules.check_batch(
            fresh,
            {spec.id for spec in specs},
            lambda job_id: self._one("SELECT 1 AS x FROM jobs WHERE id = ?", job_id) is not None,
        )

    def _insert(
        self, db: sqlite3.Connection, spec: JobSpec, now: float, aliases: dict[str, str]
    ) -> None:
        opts = spec.options
        scheduled = opts.at is not None and opts.at > now
        lane = None if opts.lane is None else json.dumps(opts.lane)
        # the common job (no lane, no dependency, not delayed) is ready from its first row
        ready = int(not scheduled and lane is None and not opts.after)
        cursor = db.execute(
            INSERT_JOB,
            (
                spec.id, spec.task, spec.mode, spec.ref, spec.payload,
                Status.SCHEDULED.value if scheduled else Status.WAITING.value,
                opts.priority, lane, int(opts.stop_on_lane_error), _json(opts.after),
                _json(opts.exclusive), _json(opts.incompatible), opts.timeout,
                opts.retries, opts.retry_delay, opts.backoff, opts.at if scheduled else None,
                opts.expires_at, opts.unique, opts.unique_for, _json(opts.meta), now, ready,
            ),
        )  # fmt: skip
        seq = cursor.lastrowid
        if spec.max_concurrency is not None:
            db.execute(
                "INSERT OR REPLACE INTO limits (task, max) VALUES (?, ?)",
                (spec.task, spec.max_concurrency),
            )
        if opts.unique:
            db.execute(
                "INSERT OR REPLACE INTO unique_keys (key, job, until) VALUES (?, ?, NULL)",
                (opts.unique, spec.id),
            )
        if lane is not None:
            db.execute(
                "INSERT INTO lane_members (lane, priority, seq, job) VALUES (?, ?, ?, ?)",
                (lane, opts.priority, seq, spec.id),
            )
            db.execute("INSERT OR IGNORE INTO lanes (lane) VALUES (?)", (lane,))
        self._event("queued", spec.id)
        failed: dict[str, Any] | None = None
        pending = 0
        for dep_id in opts.after:
            dep = self._one("SELECT id, status FROM jobs WHERE id = ?", aliases.get(dep_id, dep_id))
            assert dep is not None
            if dep["status"] == Status.FINISHED:
                continue
            if dep["status"] in TERMINAL:
                failed = failed or dep
                continue
            pending += 1
            db.execute("INSERT OR IGNORE INTO deps (dep, job) VALUES (?, ?)", (dep["id"], spec.id))
        if pending:
            db.execute("UPDATE jobs SET pending_deps = ? WHERE id = ?", (pending, spec.id))
        if failed is not None:
            self._end(
                spec.id,
                Status.CANCELLED,
                reason=rules.cascade_reason(failed["id"], failed["status"]),
            )
        elif lane is not None:
            self._cascade(self._advance_lane(lane))
        elif not ready:
            self._consider(spec.id)

    # ------------------------------------------------------------------- claim
    def claim(
        self,
        worker: str,
        mode: str,
        limit: int = 1,
        *,
        timeout: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> list[ClaimedJob]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closed or (stop is not None and stop()):
                return []
            since = self._generation()
            try:
                with self._tx():
                    rows = self._claim_now(worker, mode, limit)
            except QueueClosed:
                return []
            if rows:
                got = self._unpack(rows)
                if got:
                    return got
                continue  # every job claimed had a payload this worker cannot run
            if deadline is not None and time.monotonic() >= deadline:
                return []
            self._wait(since, deadline, stop)

    def finish_and_claim(
        self,
        job_id: str,
        attempt: int,
        result: Any,
        worker: str,
        mode: str,
        limit: int = 1,
        *,
        timeout: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> list[ClaimedJob]:
        """``finish`` then ``claim``: one transaction for a busy slot."""
        encoded = self._encode_result(job_id, attempt, result)
        try:
            with self._tx():
                self._finish_now(job_id, attempt, encoded)
                stopping = stop is not None and stop()
                rows = [] if stopping else self._claim_now(worker, mode, limit)
        except QueueClosed:
            return []
        got = self._unpack(rows) if rows else []
        if got:
            return got
        return self.claim(worker, mode, limit, timeout=timeout, stop=stop)

    def finish_many_and_claim(
        self,
        finished: Sequence[Finished],
        worker: str,
        mode: str,
        limit: int,
        *,
        stop: Callable[[], bool] | None = None,
    ) -> list[ClaimedJob]:
        """Every ``finish``, then a ``claim`` that does not wait, in one transaction."""
        encoded = [(f, self._encode_result(f.job_id, f.attempt, f.result)) for f in finished]
        try:
            with self._tx():
                for report, result in encoded:
                    self._finish_now(report.job_id, report.attempt, result, report.started)
                stopping = limit <= 0 or (stop is not None and stop())
                rows = [] if stopping else self._claim_now(worker, mode, limit)
        except QueueClosed:
            return []
        return self._unpack(rows) if rows else []

    def _claim_now(self, worker: str, mode: str, limit: int) -> list[dict[str, Any]]:
        """Start up to ``limit`` jobs; their rows, as they were before the claim."""
        now = self._clock.now()
        self._tick(now)
        rows: list[dict[str, Any]] = []
        while len(rows) < limit:
            row = self._next_startable(mode)
            if row is None:
                break
            self._start(row, worker, now)
            rows.append(row)
        return rows

    def _unpack(self, rows: list[dict[str, Any]]) -> list[ClaimedJob]:
        """Claimed rows as jobs to run, decoded outside the transaction (the write lock is not
        held for it). A corrupt or forged payload, or a function this worker cannot find,
        fails that job (no retry can mend it); the worker lives."""
        got: list[ClaimedJob] = []
        for row in rows:
            attempt = row["attempts"] + 1
            try:
                fn = self._resolve(row["ref"])
                args, kwargs = self.serializer.loads(row["payload"])
                args, kwargs = tuple(args), dict(kwargs)
            except (PayloadRefused, LookupError, ImportError, ValueError, TypeError) as exc:
                self._fail_unrunnable(row["id"], attempt, ErrorInfo(type(exc).__name__, str(exc)))
                continue
            timeout = row["timeout"]
            got.append(
                ClaimedJob(
                    row["id"], attempt, row["task"], row["mode"], fn, args, kwargs, None, timeout
                )
            )
        return got

    def _fail_unrunnable(self, job_id: str, attempt: int, error: ErrorInfo) -> None:
        with self._tx():
            row = self._holding(job_id, attempt)
            if row is not None:
                self._release(row)
                self._end(job_id, Status.FAILED, error=error)

    def _next_startable(self, mode: str) -> dict[str, Any] | None:
        while True:
            best = self._one(READY_TOP, mode)
            for key in [
                r["key"] for r in self._db.execute("SELECT key FROM freed WHERE mode = ?", (mode,))
            ]:
                top = self._one(PARKED_TOP, key, mode)
                if top is None or not self._is_free(key):
                    self._db.execute("DELETE FROM freed WHERE mode = ? AND key = ?", (mode, key))
                    continue
                if best is None or (top["priority"], top["seq"]) < (best["priority"], best["seq"]):
                    best = top
            if best is None:
                return None
            stale = best["status"] != Status.WAITING or (
                best["lane"] is not None and not self._lane_allows(best["lane"], best["id"])
            )
            blocker = None if stale else self._conflict(best)
            if not stale and blocker is None:
                return best  # _start takes it out of the ready index in its own UPDATE
            self._db.execute(
                "UPDATE jobs SET ready = 0, parked = ? WHERE seq = ?", (blocker, best["seq"])
            )

    def _held(self, key: str) -> int:
        row = self._one("SELECT count FROM held WHERE key = ?", key)
        return row["count"] if row else 0

    def _conflict(self, row: dict[str, Any]) -> str | None:
        """The key of the resource that keeps ``row`` from starting now, or None."""
        groups = [f"group:{g}" for g in _names(row["exclusive"])]
        incompatible = _names(row["incompatible"])
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

    def _is_free(self, key: str) -> bool:
        kind, _, name = key.partition(":")
        if kind == "job":
            return not self._one(
                "SELECT 1 AS x FROM jobs WHERE id = ? AND status = 'running'", name
            )
        if kind == "limit":
            limit = self._one("SELECT max FROM limits WHERE task = ?", name)
            return limit is None or self._held(f"task:{name}") < limit["max"]
        return not self._held(key)  # group, task, decl

    def _hold(self, key: str, delta: int) -> None:
        self._db.execute(
            "INSERT INTO held (key, count) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET count = count + excluded.count",
            (key, delta),
        )  # a count of 0 means free: rows are kept, not deleted, to save a statement

    def _start(self, row: dict[str, Any], worker: str, now: float) -> None:
        job_id = row["id"]
        self._db.execute(
            "UPDATE jobs SET status = 'running', ready = 0, parked = NULL,"
            " attempts = attempts + 1, started = ?,"
            " ended = NULL, worker = ?, lease_until = ? WHERE id = ?",
            (now, worker, now + self._lease, job_id),
        )
        for group in _names(row["exclusive"]):
            self._hold(f"group:{group}", 1)
        self._hold(f"task:{row['task']}", 1)
        for name in _names(row["incompatible"]):
            self._hold(f"decl:{name}", 1)
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

    def _resolve(self, ref: str) -> Callable[..., Any]:
        if self._resolver is not None:
            return self._resolver(ref)
        from conveyor.references import resolve

        return resolve(ref)

    # --------------------------------------------------------- end of an attempt
    def _encode_result(self, job_id: str, attempt: int, result: Any) -> bytes | ErrorInfo:
        try:
            return self.serializer.dumps(result)
        except NotSerializable as exc:
            return ErrorInfo("NotSerializable", f"the job's result cannot be stored: {exc}")

    def finish(self, job_id: str, attempt: int, result: Any) -> bool:
        encoded = self._encode_result(job_id, attempt, result)
        with self._tx():
            return self._finish_now(job_id, attempt, encoded)

    def _finish_now(
        self,
        job_id: str,
        attempt: int,
        encoded: bytes | ErrorInfo,
        started: float | None = None,
    ) -> bool:
        if RETURNING and not isinstance(encoded, ErrorInfo):
            # one statement checks the claim and ends the job; the row it returns is the ended
            # job's, as the cascade wants it
            values = (started, self._clock.now(), encoded, job_id, attempt)
            ended = self._db.execute(FINISH, values)
            row = ended.fetchone()
            ended.close()
            if row is None:
                return False  # cancelled, recovered or timed out meanwhile: dropped
            self._release(row)
            self._cascade([job_id], row)
            return True
        row = self._holding(job_id, attempt)
        if row is None:
            return False
        self._release(row)
        if started is not None:
            self._db.execute("UPDATE jobs SET started = ? WHERE id = ?", (started, job_id))
        if isinstance(encoded, ErrorInfo):
            self._end(job_id, Status.FAILED, error=encoded, row=row)
        else:
            self._end(job_id, Status.FINISHED, result=encoded, row=row)
        return True

    def fail(
        self,
        job_id: str,
        attempt: int,
        error: ErrorInfo,
        exception: BaseException | None = None,
    ) -> bool:
        with self._tx():
            row = self._holding(job_id, attempt)
            if row is None:
                return False
            self._release(row)
            if row["attempts"] <= row["retries"]:
                self._retry(row, error)
            else:
                self._end(job_id, Status.FAILED, error=error)
        return True

    def requeue(self, job_id: str, attempt: int) -> bool:
        with self._tx():
            row = self._holding(job_id, attempt)
            if row is None:
                return False
            self._release(row)
            self._db.execute(
                "UPDATE jobs SET status = 'waiting', attempts = attempts - 1, worker = NULL,"
                " lease_until = NULL WHERE id = ?",
                (job_id,),
            )
            self._consider(job_id)
        return True

    def _holding(self, job_id: str, attempt: int) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM jobs WHERE id = ?", job_id)
        if row is None or row["status"] != Status.RUNNING or row["attempts"] != attempt:
            return None  # cancelled, recovered or timed out meanwhile: the late report is dropped
        return row

    def _retry(self, row: dict[str, Any], error: ErrorInfo) -> None:
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
            self._consider(row["id"])
        self._event("retrying", row["id"])

    def _release(self, row: dict[str, Any]) -> None:
        """Give back what a running job held and mark the keys it frees."""
        keys = [f"job:{row['id']}", f"task:{row['task']}", f"limit:{row['task']}"]
        for group in _names(row["exclusive"]):
            self._hold(f"group:{group}", -1)
            keys.append(f"group:{group}")
        self._hold(f"task:{row['task']}", -1)
        for name in _names(row["incompatible"]):
            self._hold(f"decl:{name}", -1)
            keys.append(f"decl:{name}")
        if self._one("SELECT 1 AS x FROM jobs WHERE parked IS NOT NULL LIMIT 1") is None:
            return  # nothing is parked: nothing to wake
        for key in keys:
            self._db.execute(
                "INSERT OR IGNORE INTO freed (mode, key)"
                " SELECT DISTINCT mode, parked FROM jobs WHERE parked = ?",
                (key,),
            )

    # ------------------------------------------------------------------ cancel
    def cancel(self, job_id: str, reason: str = "cancelled") -> bool:
        with self._tx():
            self._tick(self._clock.now())
            row = self._job(job_id)
            if row["status"] in TERMINAL:
                return False
            if row["status"] == Status.RUNNING:
                self._release(row)
                hook = self._stop_hook
                if hook is not None:
                    self._effects.append(lambda: hook(job_id, reason))
            self._end(job_id, Status.CANCELLED, reason=reason)
        return True

    # ------------------------------------------------------ the rules' bookkeeping
    def _end(
        self,
        job_id: str,
        status: Status,
        *,
        result: bytes | None = None,
        error: ErrorInfo | None = None,
        reason: str | None = None,
        row: dict[str, Any] | None = None,
    ) -> None:
        """Make a job terminal and apply every cascade it causes."""
        text = None if status == Status.FINISHED else (str(error) if error else reason)
        self._db.execute(
            "UPDATE jobs SET status = ?, ended = ?, ready = 0, parked = NULL, lease_until = NULL,"
            " result = ?, error = ?, traceback = ? WHERE id = ?",
            (status.value, self._clock.now(), result, text,
             error.traceback if error else None, job_id),
        )  # fmt: skip
        known = None if row is None else {**row, "status": status.value}
        self._cascade([job_id], known)

    def _cascade(self, ended: list[str], known: dict[str, Any] | None = None) -> None:
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
            work += self._after_end(row)

    def _after_end(self, row: dict[str, Any]) -> list[str]:
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
            child = self._one("SELECT id, status, pending_deps FROM jobs WHERE id = ?", dep["job"])
            if child is None or child["status"] in TERMINAL:
                continue
            if state == Status.FINISHED:
                self._db.execute(
                    "UPDATE jobs SET pending_deps = pending_deps - 1 WHERE id = ?", (child["id"],)
                )
                if child["pending_deps"] == 1:
                    self._consider(child["id"])
            else:
                self._cancel_quietly(child["id"], rules.cascade_reason(job_id, state.value))
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
                    doomed += self._advance_lane(row["lane"])
        self._event(state.value, job_id)
        return doomed

    def _cancel_quietly(self, job_id: str, reason: str) -> None:
        """Mark a job cancelled; the caller puts it on the cascade's work list."""
        self._db.execute(
            "UPDATE jobs SET status = 'cancelled', ended = ?, ready = 0, parked = NULL,"
            " lease_until = NULL, error = ? WHERE id = ?",
            (self._clock.now(), reason, job_id),
        )

    def _advance_lane(self, lane: str) -> list[str]:
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
                self._cancel_quietly(
                    row["id"],
                    rules.lane_reason(previous or "?", json.loads(lane), "failed or was cancelled"),
                )
                doomed.append(row["id"])
                continue  # cancelled now: the next pass takes it off the lane
            self._consider(row["id"])
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

    def _lane_allows(self, lane: str, job_id: str) -> bool:
        state = self._one("SELECT current FROM lanes WHERE lane = ?", lane)
        if state is None:
            return False
        if state["current"] is not None:
            return bool(state["current"] == job_id)
        top = self._one(LANE_TOP, lane)
        return top is not None and top["job"] == job_id

    def _consider(self, job_id: str) -> None:
        """Mark a job ready if nothing but resources can still hold it back."""
        row = self._one("SELECT status, pending_deps, parked, lane FROM jobs WHERE id = ?", job_id)
        if row is None or row["status"] != Status.WAITING or row["pending_deps"] > 0:
            return
        if row["parked"] is not None:
            return
        if row["lane"] is not None and not self._lane_allows(row["lane"], job_id):
            return
        self._db.execute("UPDATE jobs SET ready = 1 WHERE id = ?", (job_id,))

    def _tick(self, now: float) -> None:
        """Apply timers due by ``now``: delays and retries ending, expiry, result_ttl."""
        for row in self._db.execute(TIMERS, (now, now)).fetchall():
            if row["kind"] == "due":
                self._db.execute(
                    "UPDATE jobs SET status = 'waiting', due = NULL WHERE id = ?", (row["id"],)
                )
                self._consider(row["id"])
            elif self._one(  # a cascade earlier in this loop may have ended it already
                "SELECT 1 AS x FROM jobs WHERE id = ? AND status IN ('waiting', 'scheduled')",
                row["id"],
            ):
                self._end(row["id"], Status.CANCELLED, reason="expired")
        if self._result_ttl is not None:
            self._db.execute(
                "DELETE FROM jobs WHERE ended IS NOT NULL AND ended < ?", (now - self._result_ttl,)
            )

    def _event(self, name: str, job_id: str) -> None:
        callbacks = (
            self._callbacks.pop(job_id, None)
            if name in ("finished", "failed", "cancelled")
            else None
        )
        wanted = self._bus.wants(name)
        if not (wanted or callbacks):
            return
        record = self._record(self._job(job_id))
        if wanted:
            self._effects.append(lambda: self._bus.emit(name, record))
        for callback in callbacks or ():
            self._effects.append(lambda cb=callback: cb(record))  # type: ignore[misc]

    # ----------------------------------------------------------------- reading
    def _record(self, row: dict[str, Any]) -> JobRecord:
        stamp = JobRecord.timestamp
        try:
            args, kwargs = self.serializer.loads(row["payload"])
        except PayloadRefused:
            args, kwargs = (), {}
        result = None
        if row["result"] is not None and row["status"] == Status.FINISHED:
            try:
                result = self.serializer.loads(row["result"])
            except PayloadRefused as exc:
                result = exc
        started, ended = row["started"], row["ended"]
        return JobRecord(
            id=row["id"], task=row["task"], status=Status(row["status"]), args=tuple(args),
            kwargs=dict(kwargs), priority=row["priority"],
            lane=None if row["lane"] is None else json.loads(row["lane"]),
            after=tuple(json.loads(row["after"])), exclusive=tuple(_names(row["exclusive"])),
            incompatible=tuple(_names(row["incompatible"])), attempts=row["attempts"],
            worker=row["worker"], submitted=stamp(row["submitted"]), started=stamp(started),
            ended=stamp(ended),
            runtime=None if started is None or ended is None else max(0.0, ended - started),
            result=result, error=row["error"], traceback=row["traceback"],
            meta=json.loads(row["meta"]),
        )  # fmt: skip

    def _tick_if_due(self) -> None:
        """Before a read: apply the timers (and result_ttl) that are due, if any are."""
        now = self._clock.now()
        with self._lock:
            if self._closed:
                return
            row = self._one(NEXT_TIMER)
            timer = next(iter(row.values())) if row else None
            due = timer is not None and timer <= now
            if not due and self._result_ttl is not None:
                due = self._one(EXPIRED_RESULT, now - self._result_ttl) is not None
        if due:
            with self._tx():
                self._tick(self._clock.now())

    def get(self, job_id: str) -> JobRecord:
        self._tick_if_due()
        with self._lock:
            return self._record(self._job(job_id))

    def query(self, status: Status | None = None) -> list[JobRecord]:
        self._tick_if_due()
        with self._lock:
            if status is None:
                rows = self._db.execute("SELECT * FROM jobs ORDER BY seq").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM jobs WHERE status = ? ORDER BY seq", (status.value,)
                ).fetchall()
            return [self._record(row) for row in rows]

    def counts(self) -> dict[Status, int]:
        self._tick_if_due()
        with self._lock:
            rows = self._db.execute(
                "SELECT status, count(*) AS n FROM jobs GROUP BY status"
            ).fetchall()
        counts = dict.fromkeys(Status, 0)
        for row in rows:
            counts[Status(row["status"])] = row["n"]
        return counts

    def pop_finished(
        self, limit: int | None = None, *, timeout: float | None = 0
    ) -> list[JobRecord]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            since = self._generation()
            with self._tx() as db:
                self._tick(self._clock.now())
                rows = db.execute(
                    "SELECT * FROM jobs WHERE ended IS NOT NULL AND status IN"
                    " ('finished', 'failed', 'cancelled') ORDER BY ended, seq LIMIT ?",
                    (-1 if limit is None else limit,),
                ).fetchall()
                for row in rows:
                    db.execute("DELETE FROM jobs WHERE seq = ?", (row["seq"],))
                records = [self._record(row) for row in rows]
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

    # ----------------------------------------------------------------- waiting
    def _generation(self) -> tuple[int, int]:
        """What has been committed so far, here and by other processes; take it before
        reading the state a wait depends on, and hand it to :meth:`_wait`."""
        with self._lock:
            if self._closed:
                return self._commits, -1
            row = self._one("PRAGMA data_version")
            return self._commits, row["data_version"] if row else 0

    def _wait(
        self,
        since: tuple[int, int],
        deadline: float | None,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        """Block until anything was committed after ``since`` (here: woken at once; by another
        process: seen within POLL_INTERVAL), a timer is due, or ``deadline`` passes."""
        with self._lock:
            row = None if self._closed else self._one(NEXT_TIMER)
        timer = next(iter(row.values())) if row else None
        limit = None if timer is None else self._clock.wait_time(timer)
        until = time.monotonic() + (limit if limit is not None else 3600.0)
        if deadline is not None:
            until = min(until, deadline)
        while not self._closed and not (stop is not None and stop()):
            if self._generation() != since:
                return
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            with self._lock:
                if self._commits == since[0]:
                    self._changed.wait(min(POLL_INTERVAL, remaining))

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

    def wait_results(
        self,
        job_ids: Sequence[str],
        timeout: float | None = None,
        *,
        first_failure: bool = False,
    ) -> list[tuple[Status, Any, str | None]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            since = self._generation()
            self._tick_if_due()
            statuses = self._statuses(job_ids)
            active = [i for i in job_ids if statuses[i] not in TERMINAL]
            failed = any(s in TERMINAL and s != Status.FINISHED for s in statuses.values())
            if not active or (first_failure and failed):
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{len(active)} job(s) did not end within {timeout} s")
            self._wait(since, deadline)
        outcomes = []
        for job_id in job_ids:
            record = self.get(job_id)
            outcomes.append((record.status, record.result, record.error))
        return outcomes

    def wait_done(self, job_id: str, timeout: float | None = None) -> JobRecord:
        self.wait_results([job_id], timeout)
        return self.get(job_id)

    def add_done_callback(self, job_id: str, callback: Callable[[JobRecord], object]) -> None:
        record = self.get(job_id)
        if record.status in TERMINAL:
            callback(record)
            return
        with self._lock:
            self._callbacks.setdefault(job_id, []).append(callback)
            if self._watcher is None:
                self._watcher = threading.Thread(
                    target=self._watch, daemon=True, name="conveyor-sqlite-watch"
                )
                self._watcher.start()

    def _watch(self) -> None:
        """Fire done callbacks for jobs ended by other processes."""
        while not self._closed:
            since = self._generation()
            with self._lock:
                ids = list(self._callbacks)
            if ids:
                try:
                    ended = [i for i, s in self._statuses(ids).items() if s in TERMINAL]
                except UnknownJob:
                    ended = []
                for job_id in ended:
                    with self._lock:
                        callbacks = self._callbacks.pop(job_id, [])
                    if callbacks:
                        record = self.get(job_id)
                        for callback in callbacks:
                            try:
                                callback(record)
                            except Exception:
                                log.exception("done callback failed for job %r", job_id)
            self._wait(since, None)

    def wait_idle(
        self,
        timeout: float | None = None,
        on_change: Callable[[dict[Status, int]], object] | None = None,
    ) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        last: dict[Status, int] | None = None
        while True:
            since = self._generation()
            counts = self.counts()
            active = counts[Status.WAITING] + counts[Status.SCHEDULED] + counts[Status.RUNNING]
            if on_change is not None and counts != last:
                on_change(counts)
                last = counts
            if (
                not active
                or self._closed
                or (deadline is not None and time.monotonic() >= deadline)
            ):
                return active
            self._wait(since, deadline)

    # ---------------------------------------------------------- worker support
    def heartbeat(self, worker: str, ids: Collection[str]) -> set[str]:
        now = self._clock.now()
        prefix = worker + "/"
        with self._tx() as db:
            db.execute("UPDATE workers SET last_seen = ? WHERE id = ?", (now, worker))
            lost = set()
            for job_id in ids:
                row = self._one("SELECT status, worker FROM jobs WHERE id = ?", job_id)
                if (
                    row is None
                    or row["status"] != Status.RUNNING
                    or not (row["worker"] or "").startswith(prefix)
                ):
                    lost.add(job_id)
                else:
                    db.execute(
                        "UPDATE jobs SET lease_until = ? WHERE id = ?", (now + self._lease, job_id)
                    )
        return lost

    def recover_expired(self) -> int:
        """Return running jobs whose lease ran out (their worker died) to the queue."""
        now = self._clock.now()
        with self._tx() as db:
            rows = db.execute(
                "SELECT * FROM jobs WHERE status = 'running' AND lease_until < ?", (now,)
            ).fetchall()
            for row in rows:
                self._release(row)
                error = ErrorInfo("WorkerLost", f"the lease of worker {row['worker']} ran out")
                if row["attempts"] > row["retries"] + LOST_LEASE_ALLOWANCE:
                    self._end(row["id"], Status.FAILED, error=error)
                    continue
                # the attempt stays counted; the job goes back to the queue
                db.execute(
                    "UPDATE jobs SET status = 'waiting', lease_until = NULL, error = ?"
                    " WHERE id = ?",
                    (str(error), row["id"]),
                )
                self._consider(row["id"])
            db.execute("DELETE FROM workers WHERE last_seen < ?", (now - 3 * self._lease,))
        return len(rows)

    def register_worker(self, info: WorkerInfo) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO workers (id, host, pid, mode, slots, started, last_seen)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (info.id, info.host, info.pid, info.mode, info.slots, info.started, info.last_seen),
            )

    def unregister_worker(self, worker_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

    def workers(self) -> list[WorkerInfo]:
        since = self._clock.now() - self._lease
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM workers WHERE last_seen >= ? ORDER BY started", (since,)
            ).fetchall()
        return [WorkerInfo(**row) for row in rows]

    def set_stop_hook(self, hook: Callable[[str, str], object] | None) -> None:
        self._stop_hook = hook

    def wake(self) -> None:
        with self._lock:
            self._changed.notify_all()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._clock.unsubscribe(self.wake)
        self.wake()
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()

    def __repr__(self) -> str:
        return f"<SQLiteBackend {self.path} pid={os.getpid()} host={socket.gethostname()}>"
