"""The SQLite backend's tables, indexes and hot queries, how a plan is stored, how rows are read.

The ready, parked, timer and lease queries name their partial index (``INDEXED BY``), so a
claim or a timer never scans the jobs table; ``tests/backends/test_sqlite.py`` pins the plans.
A job's :class:`~conveyor.rules.plan.Plan` is stored in its row (``needs``, ``holds``,
``frees``: JSON); a file of an older version gets those columns, computed from each row's
exclusive groups, incompatible names and its task's limit, when it is opened (:func:`migrate`).
"""

from __future__ import annotations

import functools
import json
import sqlite3
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, NamedTuple

from conveyor.rules.plan import DECL, JOB, Need, Plan, compile_plan, key, plan_shape

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
    ahead INTEGER NOT NULL DEFAULT 0,  -- claimed ahead of a slot, not started yet
    lost INTEGER NOT NULL DEFAULT 0,  -- times taken back from a worker whose lease ran out
    worker TEXT,
    lease_until REAL,
    submitted REAL NOT NULL,
    started REAL,
    ended REAL,
    result BLOB,
    error TEXT,
    traceback TEXT,
    progress REAL,  -- how far the latest attempt got (0 to 1): conveyor.progress
    progress_message TEXT,
    mac BLOB,  -- with a secret: the job envelope's HMAC (see Serializer.sign_job)
    needs TEXT NOT NULL,  -- the plan (JSON), in check order: [key or [key, capacity, park], ...]
    holds TEXT NOT NULL,  -- the counted keys it holds while it runs: [key, ...]
    frees TEXT NOT NULL  -- the park keys its end may free: [key, ...]
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
CREATE TABLE IF NOT EXISTS capacities (
    park TEXT PRIMARY KEY, key TEXT NOT NULL, capacity INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unique_keys (
    key TEXT PRIMARY KEY, job TEXT NOT NULL, until REAL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, mode TEXT NOT NULL,
    slots INTEGER NOT NULL, started REAL NOT NULL, last_seen REAL NOT NULL,
    proc_start TEXT, lease REAL) WITHOUT ROWID;
"""

#: columns added since the first release: (table, column, definition), added to older files
ADDED_COLUMNS = (
    ("jobs", "mac", "BLOB"),
    ("jobs", "ahead", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "lost", "INTEGER NOT NULL DEFAULT 0"),
    ("workers", "proc_start", "TEXT"),
    ("workers", "lease", "REAL"),  # the worker's own lease (NULL: a worker of an older version)
    ("jobs", "needs", "TEXT"),  # the plan: filled in by migrate() as it adds them
    ("jobs", "holds", "TEXT"),
    ("jobs", "frees", "TEXT"),
    ("jobs", "progress", "REAL"),
    ("jobs", "progress_message", "TEXT"),
)

INSERT_JOB = """
INSERT INTO jobs (id, task, mode, ref, payload, status, priority, lane, stop_on_lane_error,
    after, exclusive, incompatible, timeout, retries, retry_delay, backoff, due, expires_at,
    unique_key, unique_for, meta, submitted, ready, mac, needs, holds, frees, pending_deps)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
#: records a running attempt's progress, if the attempt is still the one that runs
PROGRESS = """
UPDATE jobs SET progress = ?, progress_message = ?
WHERE id = ? AND status = 'running' AND attempts = ?"""
RETURNING = sqlite3.sqlite_version_info >= (3, 35)
LANE_TOP = "SELECT job FROM lane_members WHERE lane = ? ORDER BY priority, seq LIMIT 1"
#: whether a park key is free, in one statement: the count of the key it stands for (itself,
#: unless ``capacities`` names another) is below that key's capacity (1, unless named there)
IS_FREE = """
SELECT coalesce((SELECT count FROM held WHERE key = coalesce(c.key, p.park)), 0)
    < coalesce(c.capacity, 1) AS free
FROM (SELECT ? AS park) AS p LEFT JOIN capacities AS c ON c.park = p.park"""
SET_CAPACITY = "INSERT OR REPLACE INTO capacities (park, key, capacity) VALUES (?, ?, ?)"


def migrate(db: sqlite3.Connection) -> None:
    """Add the columns of :data:`ADDED_COLUMNS` that a file made by an older version lacks
    (inside the caller's write transaction); a file without plans gets every job's."""
    added = set()
    for table, column, definition in ADDED_COLUMNS:
        present = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            added.add((table, column))
    if ("jobs", "needs") in added:
        _compile_stored_plans(db)


def _compile_stored_plans(db: sqlite3.Connection) -> None:
    """Compile the plan of every job of a file made before plans were stored, from its
    exclusive groups, incompatible names and its task's limit (from the ``limits`` table those
    versions kept; ``capacities`` replaces it, and it is left as it is)."""
    tables = {row["name"] for row in db.execute("SELECT name FROM sqlite_master")}
    limits: dict[str, int] = {}
    if "limits" in tables:
        limits = {row["task"]: row["max"] for row in db.execute("SELECT task, max FROM limits")}
    rows = db.execute("SELECT seq, id, task, exclusive, incompatible FROM jobs").fetchall()
    for row in rows:
        plan = compile_plan(
            row["id"],
            row["task"],
            exclusive=tuple(names(row["exclusive"])),
            incompatible=tuple(names(row["incompatible"])),
            max_concurrency=limits.get(row["task"]),
        )
        db.execute(
            "UPDATE jobs SET needs = ?, holds = ?, frees = ? WHERE seq = ?",
            (*plan_columns(plan), row["seq"]),
        )
        db.executemany(SET_CAPACITY, capacities(plan))


def plan_columns(plan: Plan) -> tuple[str, str, str]:
    """A plan as its row stores it: ``needs``, ``holds``, ``frees`` (JSON lists, written
    without ``json.dumps``). A need is stored as its key when it waits on that key at capacity
    1 (most needs), else as ``[key, capacity, park]``."""
    needs = ",".join(map(_need, plan.needs))
    holds = ",".join(map(_quote, plan.holds))
    frees = ",".join(map(_quote, plan.frees))
    return f"[{needs}]", f"[{holds}]", f"[{frees}]"


def _need(need: Need) -> str:
    if need.park == need.key and need.capacity == 1:
        return _quote(need.key)
    return f"[{_quote(need.key)},{int(need.capacity)},{_quote(need.park)}]"


def capacities(plan: Plan) -> list[tuple[str, str, int]]:
    """The ``capacities`` rows of a plan: ``(park, key, capacity)`` of each need that waits
    on another key than it counts, or allows more than one holder; ``is_free`` reads them."""
    return [
        (need.park, need.key, need.capacity)
        for need in plan.needs
        if need.park != need.key or need.capacity != 1
    ]


class ShapeColumns(NamedTuple):
    """The columns of a kind of job's plan without the two keys naming the job (see
    :func:`job_columns`), and its ``capacities`` rows (the job's own need has none)."""

    before: str  # the needs before the job's ``decl:<id>``, each followed by a comma
    after: str  # the needs after it, each preceded by a comma
    holds: str  # the ``holds`` column
    frees: str  # the frees after the job's ``job:<id>``, each preceded by a comma
    capacities: tuple[tuple[str, str, int], ...]


@functools.lru_cache(maxsize=1024)
def shape_columns(
    task: str, exclusive: tuple[str, ...], incompatible: tuple[str, ...], limit: int | None
) -> ShapeColumns:
    """The columns shared by every job of one kind (``plan_shape``'s arguments): a submit
    builds only the two keys naming its job."""
    before, after, holds, frees = plan_shape(task, exclusive, incompatible, limit)
    return ShapeColumns(
        "".join(_need(need) + "," for need in before),
        "".join("," + _need(need) for need in after),
        f"[{','.join(map(_quote, holds))}]",
        "".join("," + _quote(name) for name in frees),
        tuple(
            (need.park, need.key, need.capacity)
            for need in (*before, *after)
            if need.park != need.key or need.capacity != 1
        ),
    )


def job_columns(job_id: str, shape: ShapeColumns) -> tuple[str, str, str]:
    """``plan_columns`` of job ``job_id``'s plan, from the columns of its kind."""
    own = _quote(_DECL + job_id)
    return (
        f"[{shape.before}{own}{shape.after}]",
        shape.holds,
        f"[{_quote(_JOB + job_id)}{shape.frees}]",
    )


_DECL, _JOB = key(DECL, ""), key(JOB, "")


@functools.lru_cache(maxsize=4096)
def held_keys(column: str) -> tuple[str, ...]:
    """A job's ``holds`` column as keys; cached, since the jobs of a task with the same
    options hold the same keys (read twice per job: at its start and at its end)."""
    return tuple(json.loads(column))


def names(column: str) -> list[str]:
    """A JSON list column; most jobs have none, so skip the decoder for "[]"."""
    return [] if column == "[]" else list(json.loads(column))


def to_json(value: tuple[str, ...] | dict[str, Any]) -> str:
    """``json.dumps``, with the empty list and dict (most jobs' options) for free."""
    if not value:
        return "{}" if isinstance(value, dict) else "[]"
    return json.dumps(value)


def row_factory(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {d[0]: value for d, value in zip(cursor.description, row, strict=True)}
