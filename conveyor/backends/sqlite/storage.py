"""The SQLite backend's file: one connection, one lock, write transactions, and waits.

Every state change is one ``BEGIN IMMEDIATE`` transaction (:meth:`Storage._tx`); payloads are
decoded after COMMIT, so the write lock is held only for the bookkeeping. Each commit wakes
this process's waits (:mod:`.waiting`) once the callbacks it collected have run.

A file this backend creates gets ``file_mode`` (0600 by default; SQLite gives its -wal and -shm
files the same). Every SQLite error surfaces as :class:`~conveyor.errors.StorageError` naming
the file, and a transaction that failed, even at COMMIT, is rolled back: nothing it did stays,
and the next one starts clean.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from conveyor.backends.sqlite.schema import SCHEMA, migrate, row_factory
from conveyor.clock import Clock
from conveyor.errors import QueueClosed, StorageError, UnknownJob

log = logging.getLogger("conveyor.backends.sqlite")

#: seconds a write transaction waits for another process's before it gives up
BUSY_TIMEOUT = 60.0
#: seconds between tries to begin a write transaction while another process holds the lock
NAP = 0.0002
WRITE_FAILED = "cannot write to the queue database"
READ_FAILED = "cannot read the queue database"


class Storage:
    """One SQLite file (WAL) and this process's connection to it, under one lock."""

    def __init__(self, path: str, clock: Clock, file_mode: int) -> None:
        self.path = path
        self._clock = clock
        self._db = self._open(path, file_mode)
        self._depth = 0  # how deep this process is in nested _tx blocks (under the lock)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._effects: list[Callable[[], object]] = []
        self._commits = 0  # this process's commits: its waiters' wake-up signal
        self._wakes = 0  # calls of wake(): every blocked wait returns
        self._closed = False
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

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under this process's lock (re-entrant inside it).

        After COMMIT, and outside the lock, it runs the callbacks the transaction collected
        (events, done callbacks), and only then wakes this process's waiters: a result seen
        by a waiter has had its events delivered. A transaction that changed no row (a claim
        that found nothing) wakes no one: a slot that waits for a change after its own empty
        claim would otherwise claim again at once, for ever.
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
            try:  # (not self._storage: two context managers fewer per transaction)
                self._begin()
            except sqlite3.Error as exc:
                raise StorageError(f"{WRITE_FAILED} {self.path!r}: {exc}") from exc
            self._depth = 1
            rows_before = self._db.total_changes
            try:
                yield self._db
                self._db.execute("COMMIT")  # if it fails: rolled back, a StorageError below
            except BaseException as exc:
                self._roll_back()
                if isinstance(exc, sqlite3.Error):
                    raise StorageError(f"{WRITE_FAILED} {self.path!r}: {exc}") from exc
                raise
            finally:
                self._depth = 0
            effects, self._effects = self._effects, []
            if not effects and self._db.total_changes == rows_before:
                return  # nothing changed: no waiter to wake
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

    def wake(self) -> None:
        """Make every blocked wait return now (see :mod:`.waiting`)."""
        with self._lock:
            self._wakes += 1
            self._changed.notify_all()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._clock.unsubscribe(self.wake)
        self.wake()
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()


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
