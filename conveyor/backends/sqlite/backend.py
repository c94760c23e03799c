"""The durable backend: one SQLite file (WAL), shared by producers and worker processes.

Every state change is one ``BEGIN IMMEDIATE`` transaction; inside it :class:`~conveyor.backends.
sqlite_rules.Rules` applies the rules of DESIGN §2 to the tables of
:mod:`~conveyor.backends.sqlite_schema`. Payloads are decoded after COMMIT, so the write lock is
held only for the bookkeeping.

Other processes' changes are seen by watching ``PRAGMA data_version``; waits in this process are
woken at once by this process's own commits.

A file this backend creates gets ``file_mode`` (0600 by default; SQLite gives its -wal and -shm
files the same). Every SQLite error surfaces as :class:`~conveyor.errors.StorageError` naming
the file, and a transaction that failed, even at COMMIT, is rolled back: nothing it did stays,
and the next one starts clean. With a secret, each job's envelope is signed at insert and
checked at claim before anything is imported or decoded; without one, reading a record never
unpickles (see :meth:`SQLiteBackend._record`).
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
import traceback
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

from conveyor import rules
from conveyor.backends.sqlite.engine import Rules
from conveyor.backends.sqlite.schema import (
    EXPIRED_RESULT,
    INSERT_JOB,
    NEXT_TIMER,
    SCHEMA,
    migrate,
    names,
    row_factory,
    to_json,
)
from conveyor.clock import Clock
from conveyor.errors import (
    InvalidJob,
    NotSerializable,
    PayloadRefused,
    QueueClosed,
    QueueFull,
    StorageError,
    UnknownJob,
)
from conveyor.events import EventBus
from conveyor.job import TERMINAL, ErrorInfo, JobRecord, Status
from conveyor.records import (
    ClaimedJob,
    Failed,
    Finished,
    JobSpec,
    Unrunnable,
    WorkerInfo,
    ended_before,
    history_entry,
    with_history,
)
from conveyor.references import CannotLoad
from conveyor.serializer import NOT_DECODED, Serializer
from conveyor.settings import DEFAULT_FILE_MODE

log = logging.getLogger("conveyor.backends.sqlite")

#: seconds between looks at ``PRAGMA data_version`` while waiting for another process
POLL_INTERVAL = 0.005
#: seconds a write transaction waits for another process's before it gives up
BUSY_TIMEOUT = 60.0
#: seconds between tries to begin a write transaction while another process holds the lock
NAP = 0.0002
#: a job whose worker vanished this many times more than its retries allow is failed
LOST_LEASE_ALLOWANCE = 5
WRITE_FAILED = "cannot write to the queue database"
READ_FAILED = "cannot read the queue database"
#: what a record shows for arguments it did not decode (an unsigned pickle)
HIDDEN_ARGS: tuple[Any, ...] = (NOT_DECODED,)
HIDDEN_KWARGS: dict[str, Any] = {"<not decoded>": NOT_DECODED}


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
        file_mode: int = DEFAULT_FILE_MODE,
    ) -> None:
        self.path = path
        self._clock = clock or Clock()
        self._bus = events or EventBus()
        self._max_size = max_size
        self.serializer = serializer or Serializer("json")
        self._resolver = resolver
        self._lease = lease
        self._result_ttl = result_ttl
        self._db = self._open(path, file_mode)
        self._depth = 0  # how deep this process is in nested _tx blocks (under the lock)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stop_hook: Callable[[str, str], object] | None = None
        self._callbacks: dict[str, list[Callable[[JobRecord], object]]] = {}
        self._watcher: threading.Thread | None = None
        self._effects: list[Callable[[], object]] = []
        self._commits = 0  # this process's commits: its waiters' wake-up signal
        self._closed = False
        self._rules = Rules(
            self._db, self._clock, lease=lease, result_ttl=result_ttl, event=self._event
        )
        try:
            with self._lock, self._storage("cannot use the queue database"):
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("PRAGMA busy_timeout=60000")
                with self._tx():
                    self._create_schema()
        except BaseException:
            self._db.close()
            raise
        self._clock.subscribe(self.wake)

    def _open(self, path: str, file_mode: int) -> sqlite3.Connection:
        """Connect to ``path``, first creating the file with ``file_mode`` if it is new (an
        existing file keeps its mode); StorageError naming the path if that fails."""
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                _create_file(path, file_mode)
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot use the queue database {path!r}: {exc}") from exc
        db.row_factory = row_factory
        return db

    def _create_schema(self) -> None:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                self._db.execute(statement)
        migrate(self._db)

    @contextlib.contextmanager
    def _storage(self, what: str) -> Iterator[None]:
        """Turn an SQLite error into a StorageError naming the file."""
        try:
            yield
        except sqlite3.Error as exc:
            raise StorageError(f"{what} {self.path!r}: {exc}") from exc

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
            if self._depth:
                self._depth += 1
                try:
                    yield self._db
                finally:
                    self._depth -= 1
                return
            with self._storage(WRITE_FAILED):
                self._begin()
            self._depth = 1
            try:
                yield self._db
                with self._storage(WRITE_FAILED):
                    self._db.execute("COMMIT")
            except BaseException as exc:
                self._roll_back()
                if isinstance(exc, sqlite3.Error):
                    raise StorageError(f"{WRITE_FAILED} {self.path!r}: {exc}") from exc
                raise
            finally:
                self._depth = 0
            effects, self._effects = self._effects, []
        for effect in effects:
            try:
                effect()
            except Exception:
                log.exception("a callback of the sqlite backend failed")
        with self._lock:
            self._commits += 1
            self._changed.notify_all()

    def _roll_back(self) -> None:
        """Undo a failed transaction, whether a statement or COMMIT failed (SQLITE_FULL may
        leave the transaction open, or SQLite may have rolled it back itself)."""
        self._effects.clear()
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("ROLLBACK failed on %s; the next transaction retries it", self.path)

    def _begin(self) -> None:
        """BEGIN IMMEDIATE, waiting for another process's write transaction in short naps.

        SQLite's own busy handler sleeps 1, 2, 5 ... 100 ms between tries, so a worker process
        whose partner commits every few hundred microseconds can starve; here a waiter retries
        every NAP seconds. The busy timeout is off only around this statement: reads and the
        statements of a transaction keep SQLite's.
        """
        db = self._db
        if db.in_transaction:  # a ROLLBACK that failed earlier: end that transaction first
            db.execute("ROLLBACK")
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
                self._rules.tick(now)
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
        assert spec.ref is not None and spec.payload is not None  # _validate checked
        mac = self.serializer.sign_job(
            envelope(spec.id, spec.ref, spec.task, spec.mode, spec.payload, opts.timeout)
        )
        cursor = db.execute(
            INSERT_JOB,
            (
                spec.id, spec.task, spec.mode, spec.ref, spec.payload,
                Status.SCHEDULED.value if scheduled else Status.WAITING.value,
                opts.priority, lane, int(opts.stop_on_lane_error), to_json(opts.after),
                to_json(opts.exclusive), to_json(opts.incompatible), opts.timeout,
                opts.retries, opts.retry_delay, opts.backoff, opts.at if scheduled else None,
                opts.expires_at, opts.unique, opts.unique_for, to_json(opts.meta), now, ready,
                mac,
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
        self._event("queued", spec.id)
        failed: dict[str, Any] | None = None
        pending = 0
        for dep_id in rules.dependencies(opts.after, aliases):
            dep = self._one("SELECT id, status FROM jobs WHERE id = ?", dep_id)
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
            self._rules.end(
                spec.id,
                Status.CANCELLED,
                reason=rules.cascade_reason(failed["id"], failed["status"]),
            )
        elif lane is not None:
            if not pending:  # a lane job joins the lane's order once its dependencies finished
                row = {"id": spec.id, "lane": lane, "priority": opts.priority, "seq": seq}
                self._rules.cascade(self._rules.join_lane(row))
        elif not ready:
            self._rules.consider(spec.id)

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
                    rows = self._rules.claim(worker, mode, limit)
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
        """``finish`` then ``claim``: one transaction for a busy slot (a second one only to
        wait when nothing may start)."""
        report = Finished(job_id, attempt, result)
        got = self.finish_many_and_claim([report], worker, mode, limit, stop=stop)
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
        ahead: int = 0,
        started: Sequence[tuple[str, int]] = (),
    ) -> list[ClaimedJob]:
        """Every ``finish``, then a ``claim`` that does not wait, in one transaction; the jobs
        claimed ahead, and those of ``started`` (now run by a slot), marked as such."""
        encoded = [(f, self._encode_result(f.result)) for f in finished]
        try:
            with self._tx() as db:
                if started:
                    owner = worker.rpartition("/")[0] + "/"
                    db.executemany(
                        "UPDATE jobs SET ahead = 0 WHERE id = ? AND attempts = ?"
                        " AND status = 'running' AND substr(worker, 1, ?) = ?",
                        [(job_id, attempt, len(owner), owner) for job_id, attempt in started],
                    )
                for report, result in encoded:
                    self._rules.finish(
                        report.job_id, report.attempt, result, report.started, report.ended
                    )
                stopping = limit <= 0 or (stop is not None and stop())
                rows = [] if stopping else self._rules.claim(worker, mode, limit, ahead)
        except QueueClosed:
            return []
        got = self._unpack(rows) if rows else []
        if rows and not got:  # every job claimed was refused: look for one that can run
            return self.claim(worker, mode, limit, timeout=0, stop=stop)
        return got

    def _unpack(self, rows: list[dict[str, Any]]) -> list[ClaimedJob]:
        """Claimed rows as jobs to run, decoded outside the transaction (the write lock is not
        held for it). The checks go in this order: the signature (with a secret) before any
        import or decode, the trust before any import. A job that fails one is refused:
        failed for good (no retry can mend a forged, untrusted or corrupt job). A job whose
        function cannot be loaded (importing its module raised, or it has no such function)
        has a failed attempt, retried if it has retries left. Either way the worker lives, and
        gets the job back marked :class:`Unrunnable`, so that it can say so."""
        got: list[ClaimedJob] = []
        for row in rows:
            attempt = row["attempts"] + 1
            try:
                self.serializer.verify_job(
                    row["mac"],
                    envelope(
                        row["id"], row["ref"], row["task"], row["mode"], row["payload"],
                        row["timeout"],
                    ),
                )  # fmt: skip
                fn = self._resolve(row["ref"])
                args, kwargs = self.serializer.loads(row["payload"])
                args, kwargs = tuple(args), dict(kwargs)
            except CannotLoad as exc:
                refused = self._unrunnable(row, attempt, load_error(exc), refused=False)
                got.extend(refused)
                continue
            except Exception as exc:  # whatever it is, this job cannot run: never the worker
                error = ErrorInfo(type(exc).__name__, str(exc))
                got.extend(self._unrunnable(row, attempt, error, refused=True))
                continue
            timeout = row["timeout"]
            got.append(
                ClaimedJob(
                    row["id"], attempt, row["task"], row["mode"], fn, args, kwargs, None, timeout
                )
            )
        return got

    def _unrunnable(
        self, row: dict[str, Any], attempt: int, error: ErrorInfo, *, refused: bool
    ) -> list[ClaimedJob]:
        """Fail the attempt of a job that cannot run here (for good if ``refused``); the job
        marked as such, or nothing if the attempt no longer held it."""
        with self._tx():
            held = self._rules.holding(row["id"], attempt)
            outcome = None if held is None else self._fail_row(held, error, final=refused)
        if outcome is None:
            return []
        why = Unrunnable(error, outcome, refused)
        job = ClaimedJob(row["id"], attempt, row["task"], row["mode"], None, (), {}, None, None)
        job.unrunnable = why
        return [job]

    def _resolve(self, ref: str) -> Callable[..., Any]:
        if self._resolver is not None:
            return self._resolver(ref)
        from conveyor.references import Allowed, resolve

        return resolve(ref, Allowed())  # no queue to say what it trusts: nothing

    # --------------------------------------------------------- end of an attempt
    def _encode_result(self, result: Any) -> bytes | ErrorInfo:
        try:
            return self.serializer.dumps(result)
        except NotSerializable as exc:
            return ErrorInfo("NotSerializable", f"the job's result cannot be stored: {exc}")

    def finish(self, job_id: str, attempt: int, result: Any) -> bool:
        encoded = self._encode_result(result)
        with self._tx():
            return self._rules.finish(job_id, attempt, encoded)

    def fail(
        self,
        job_id: str,
        attempt: int,
        error: ErrorInfo,
        exception: BaseException | None = None,
        *,
        started: float | None = None,
    ) -> Failed | None:
        with self._tx():
            row = self._rules.holding(job_id, attempt)
            if row is None:
                return None
            if started is not None:
                self._db.execute("UPDATE jobs SET started = ? WHERE id = ?", (started, job_id))
            return self._fail_row(row, error)

    def _fail_row(self, row: dict[str, Any], error: ErrorInfo, *, final: bool = False) -> Failed:
        """(In a transaction) end a running attempt as failed: its job retried if it has
        retries left (and not ``final``), else failed for good (cascading)."""
        self._rules.release(row)
        if not final and row["attempts"] <= row["retries"]:
            return Failed(self._rules.retry(row, error))
        self._rules.end(row["id"], Status.FAILED, error=error)
        return Failed()

    def requeue(self, job_id: str, attempt: int) -> bool:
        with self._tx():
            row = self._rules.holding(job_id, attempt)
            if row is None:
                return False
            self._rules.release(row)
            self._db.execute(
                "UPDATE jobs SET status = 'waiting', attempts = attempts - 1, worker = NULL,"
                " lease_until = NULL WHERE id = ?",
                (job_id,),
            )
            self._rules.consider(job_id)
        return True

    # ------------------------------------------------------------------ cancel
    def cancel(self, job_id: str, reason: str = "cancelled") -> bool:
        with self._tx():
            self._rules.tick(self._clock.now())
            row = self._job(job_id)
            if row["status"] in TERMINAL:
                return False
            if row["status"] == Status.RUNNING:
                self._rules.release(row)
                hook = self._stop_hook
                if hook is not None:
                    self._effects.append(lambda: hook(job_id, reason))
            self._rules.end(job_id, Status.CANCELLED, reason=reason)
        return True

    # ------------------------------------------------------ the rules' bookkeeping
    def _event(self, name: str, job_id: str) -> None:
        callbacks = (
            self._callbacks.pop(job_id, None)
            if name in ("finished", "failed", "cancelled")
            else None
        )
        wanted = self._bus.wants(name)
        if not (wanted or callbacks):
            return
        record = self._record(self._job(job_id), results=True)
        if wanted:
            self._effects.append(lambda: self._bus.emit(name, record))
        for callback in callbacks or ():
            self._effects.append(lambda cb=callback: cb(record))  # type: ignore[misc]

    # ----------------------------------------------------------------- reading
    def _record(self, row: dict[str, Any], *, results: bool = False) -> JobRecord:
        """A row as a record. Payloads that reading could make run code (pickle without a
        secret) are not decoded: the arguments never, the result only when ``results`` (the
        caller asked for results: ``result()``, ``map``, ``get``/``collect``, events of the
        process that stored it); :data:`~conveyor.serializer.NOT_DECODED` stands in."""
        stamp = JobRecord.timestamp
        trusted = self.serializer.trusts_reads
        if trusted:
            try:
                args, kwargs = self.serializer.loads(row["payload"])
            except PayloadRefused:
                args, kwargs = (), {}
        else:
            args, kwargs = HIDDEN_ARGS, HIDDEN_KWARGS
        result = None
        if row["result"] is not None and row["status"] == Status.FINISHED:
            if trusted or results:
                try:
                    result = self.serializer.loads(row["result"])
                except PayloadRefused as exc:
                    result = exc
            else:
                result = NOT_DECODED
        started, ended = row["started"], row["ended"]
        return JobRecord(
            id=row["id"], task=row["task"], status=Status(row["status"]), args=tuple(args),
            kwargs=dict(kwargs), priority=row["priority"],
            lane=None if row["lane"] is None else json.loads(row["lane"]),
            after=tuple(json.loads(row["after"])), exclusive=tuple(names(row["exclusive"])),
            incompatible=tuple(names(row["incompatible"])), attempts=row["attempts"],
            worker=row["worker"], submitted=stamp(row["submitted"]), started=stamp(started),
            ended=stamp(ended),
            runtime=None if started is None or ended is None else max(0.0, ended - started),
            result=result, error=row["error"], traceback=row["traceback"],
            meta=json.loads(row["meta"]),
        )  # fmt: skip

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
                self._rules.tick(self._clock.now())

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

    def pop_finished(
        self, limit: int | None = None, *, timeout: float | None = 0
    ) -> list[JobRecord]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            since = self._generation()
            with self._tx() as db:
                self._rules.tick(self._clock.now())
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
            record = self._get(job_id, results=True)
            outcomes.append((record.status, record.result, record.error))
        return outcomes

    def wait_done(self, job_id: str, timeout: float | None = None) -> JobRecord:
        self.wait_results([job_id], timeout)
        return self._get(job_id, results=True)

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

    def recover_expired(self, *, by: str | None = None) -> int:
        """Return running jobs whose lease ran out (their worker died) to the queue.

        A lease is judged by time, except one held by a worker that is still alive on this
        host and silent since the lease ran out (a job holding the GIL starves its heartbeat):
        no job runs twice while its owner lives. A job claimed ahead that no slot started gets
        its attempt back; every loss counts in ``lost``, so a job that keeps killing its
        worker is failed after ``retries + LOST_LEASE_ALLOWANCE`` of them. Each job taken back
        is logged (naming ``by``, the worker that recovers it); workers silent for three of
        their own leases whose process is gone leave the registry.
        """
        now = self._clock.now()
        recovered = 0
        with self._tx() as db:
            rows = db.execute(
                "SELECT * FROM jobs WHERE status = 'running' AND lease_until < ?", (now,)
            ).fetchall()
            for row in rows:
                if self._owner_lives(row["worker"], row["lease_until"]):
                    continue
                self._take_back(row, by)
                recovered += 1
            stale = db.execute(
                "SELECT id, host, pid, proc_start FROM workers"
                " WHERE last_seen < ? - 3 * coalesce(lease, ?)",
                (now, self._lease),
            ).fetchall()
            for worker in stale:
                if not process_lives(worker["host"], worker["pid"], worker["proc_start"]):
                    db.execute("DELETE FROM workers WHERE id = ?", (worker["id"],))
        return recovered

    def _owner_lives(self, worker: str | None, lease_until: float) -> bool:
        """Whether the worker holding a lease that ran out still lives on this host and has
        not beaten since (a beat that left the job out gave it up)."""
        if not worker:
            return False
        owner = self._one(
            "SELECT host, pid, proc_start, last_seen FROM workers WHERE id = ?",
            worker.rpartition("/")[0],
        )
        if owner is None or owner["last_seen"] > lease_until:
            return False
        return process_lives(owner["host"], owner["pid"], owner["proc_start"])

    def _take_back(self, row: dict[str, Any], by: str | None = None) -> None:
        """Return a job whose worker is gone to the queue, or fail it once it was lost too
        often; an attempt claimed ahead and never started is not counted."""
        self._rules.release(row)
        attempts, lost = row["attempts"] - row["ahead"], row["lost"] + 1
        self._db.execute(
            "UPDATE jobs SET attempts = ?, lost = ?, ahead = 0 WHERE id = ?",
            (attempts, lost, row["id"]),
        )
        note = " (claimed ahead, never started: attempt not counted)" if row["ahead"] else ""
        error = ErrorInfo("WorkerLost", f"the lease of worker {row['worker']} ran out{note}")
        bound = row["retries"] + LOST_LEASE_ALLOWANCE
        final = attempts > bound or lost > bound
        log.warning(
            "%sjob %s (task %s, attempt %d) recovered: %s; %s",
            f"{by}: " if by else "",
            row["id"],
            row["task"],
            row["attempts"],
            error.message,
            f"failed for good: its workers were lost {lost} time(s)"
            if final
            else "it waits to run again",
            extra={
                "job_id": row["id"],
                "task": row["task"],
                "attempt": row["attempts"],
                "lost_worker": row["worker"],
                "outcome": "failed" if final else "waiting",
            },
        )
        if final:
            self._rules.end(row["id"], Status.FAILED, error=error)
            return
        self._db.execute(
            "UPDATE jobs SET status = 'waiting', lease_until = NULL, error = ? WHERE id = ?",
            (str(error), row["id"]),
        )
        self._rules.consider(row["id"])

    def register_worker(self, info: WorkerInfo) -> None:
        """Record a worker, its lease, and what tells its process from a later one with its
        pid."""
        here = info.host == socket.gethostname()
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO workers"
                " (id, host, pid, mode, slots, started, last_seen, proc_start, lease)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (info.id, info.host, info.pid, info.mode, info.slots, info.started,
                 info.last_seen, process_identity(info.pid) if here else None, info.lease),
            )  # fmt: skip

    def unregister_worker(self, worker_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

    def workers(self, *, include_lost: bool = False) -> list[WorkerInfo]:
        """The workers seen within their own lease (this backend's for a worker of an older
        version, which recorded none); with ``include_lost``, the silent ones too."""
        alive = "1" if include_lost else "last_seen >= ? - coalesce(lease, ?)"
        args = () if include_lost else (self._clock.now(), self._lease)
        with self._lock, self._storage(READ_FAILED):
            rows = self._db.execute(
                "SELECT id, host, pid, mode, slots, started, last_seen, lease FROM workers"
                f" WHERE {alive} ORDER BY started",
                args,
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

    # ------------------------------------------------------------ retry, purge
    def retry(self, job_id: str) -> None:
        """Put a failed or cancelled job back to waiting (see :meth:`Backend.retry`)."""
        with self._tx() as db:
            now = self._clock.now()
            self._rules.tick(now)
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
                self._rules.cascade(self._rules.advance_lane(lane))
            else:
                self._rules.consider(job_id)

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
        if Status.RUNNING in statuses:
            raise InvalidJob("running jobs are never purged; cancel them first")
        if not statuses:
            return 0
        with self._tx() as db:
            self._rules.tick(self._clock.now())
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
                    self._rules.end(row["id"], Status.CANCELLED, reason="purged")
            db.executemany("DELETE FROM jobs WHERE id = ?", [(row["id"],) for row in chosen])
        return len(chosen)


def load_error(exc: CannotLoad) -> ErrorInfo:
    """A job function that could not be loaded, as its error: the type of what importing its
    module raised (LookupError: no such function), the module named, the import's traceback."""
    cause = exc.__cause__
    if cause is None:
        return ErrorInfo("LookupError", str(exc))
    return ErrorInfo(type(cause).__qualname__, str(exc), "".join(traceback.format_exception(cause)))


def envelope(
    job_id: str, ref: str, task: str, mode: str, payload: bytes, timeout: float | None
) -> list[bytes]:
    """The fields of a job that a worker obeys, as its signature covers them."""
    texts = [job_id, ref, task, mode, "none" if timeout is None else float(timeout).hex()]
    fields = [text.encode("utf-8", "surrogatepass") for text in texts]
    return [*fields[:4], bytes(payload), fields[4]]


def _create_file(path: str, mode: int) -> None:
    """Create ``path`` empty with exactly ``mode`` (whatever the umask), unless it exists;
    SQLite then makes it a database and gives its -wal and -shm files the same mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


# ------------------------------------------------------------- worker processes
def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (Linux), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the command name may hold spaces
    return fields if len(fields) > 19 else None


def process_identity(pid: int) -> str | None:
    """What tells process ``pid`` of this host from a later one given the same pid: the boot
    and its start time (Linux ``/proc``); None where that cannot be read."""
    fields = _stat(pid)
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return None
    return None if fields is None else f"{boot}:{fields[19]}"


def process_lives(host: str, pid: int, identity: str | None) -> bool:
    """Whether the worker process ``pid`` recorded on ``host`` (with ``identity``, see
    :func:`process_identity`) still runs: only a process of this host can be checked, and a
    zombie (killed, not yet reaped) is dead."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        pass  # it exists, owned by another user
    except OSError:
        return False
    if identity is None:
        return True
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X") and process_identity(pid) == identity
