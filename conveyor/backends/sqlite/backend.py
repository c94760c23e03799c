"""The durable backend: one SQLite file (WAL), shared by producers and worker processes.

:class:`SQLiteBackend` is the Backend protocol's methods; each state change is one transaction
(:mod:`.storage`) in which :class:`~.engine.Engine` applies the rules of :mod:`conveyor.rules`
to the tables of :mod:`.schema`. Claimed jobs are decoded after COMMIT (:mod:`.decode`). The
other parts: records and events (:mod:`.reading`), version and wait (:mod:`.waiting`),
workers and leases (:mod:`.registry`), retry and purge (:mod:`.admin`).

With a secret, each job's envelope is signed at insert and checked at claim before anything is
imported or decoded; without one, reading a record never unpickles (see
:func:`~.decode.record`).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from conveyor import rules
from conveyor.backends.sqlite.admin import Admin
from conveyor.backends.sqlite.decode import claimed, envelope, load_error
from conveyor.backends.sqlite.engine import Engine, Row
from conveyor.backends.sqlite.registry import Registry
from conveyor.backends.sqlite.schema import FINISH, RETURNING
from conveyor.backends.sqlite.waiting import Waiting
from conveyor.clock import Clock
from conveyor.errors import InvalidJob, NotSerializable, QueueClosed, QueueFull
from conveyor.events import EventBus
from conveyor.job import TERMINAL, ErrorInfo, Status
from conveyor.records import ClaimedJob, Failed, Finished, JobSpec, Unrunnable
from conveyor.references import CannotLoad
from conveyor.serializer import Serializer
from conveyor.settings import DEFAULT_FILE_MODE


class SQLiteBackend(Admin, Waiting, Registry):
    """Jobs in one SQLite file; every rule applied inside one transaction per change."""

    durable = True
    #: other processes change the same jobs
    shared = True

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
        super().__init__(path, clock or Clock(), file_mode)
        self._bus = events or EventBus()
        self._max_size = max_size
        self.serializer = serializer or Serializer("json")
        self._resolver = resolver
        self._lease = lease
        self._result_ttl = result_ttl
        self._stop_hook: Callable[[str, str], object] | None = None
        self._engine = Engine(
            self._db, self._clock, lease=lease, result_ttl=result_ttl, event=self._event
        )

    # ------------------------------------------------------------------ submit
    def submit(
        self, specs: Sequence[JobSpec], *, block: bool = True, timeout: float | None = None
    ) -> list[str]:
        if self._closed:
            raise QueueClosed("the queue is closed; it takes no more jobs")
        deadline = None if timeout is None else time.monotonic() + timeout
        since = None  # taken (before a second look) only once the queue was seen full
        while True:
            with self._tx():
                now = self._clock.now()
                self._engine.tick(now)
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
                        self._insert(spec, now, aliases)
                    self._engine.cascade(self._engine.advance_joined())
                    break
            if since is None:
                since = self.version()
                continue
            self.wait(since, None if deadline is None else max(0.0, deadline - time.monotonic()))
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
        if not any(spec.options.unique for spec in specs):
            return [None] * len(specs)  # most puts: nothing to look up

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

    def _insert(self, spec: JobSpec, now: float, aliases: dict[str, str]) -> None:
        assert spec.ref is not None and spec.payload is not None  # _validate checked
        mac = None
        if self.serializer.signed:
            mac = self.serializer.sign_job(
                envelope(
                    spec.id, spec.ref, spec.task, spec.mode, spec.payload, spec.options.timeout
                )
            )
        self._engine.insert(spec, mac, now, aliases)

    # ------------------------------------------------------------------- claim
    def claim(self, worker: str, mode: str, limit: int = 1, *, ahead: int = 0) -> list[ClaimedJob]:
        """Start up to ``limit`` jobs of ``mode`` (the last ``ahead`` claimed ahead of the
        worker's slots); never blocks."""
        while True:
            with self._tx():
                rows = self._start_jobs(worker, mode, limit, ahead)
            if not rows:
                return []
            got = self._unpack(rows)
            if got:
                return got
            # every job claimed had a payload this worker cannot run: look again

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
        """``finish`` then ``claim``: one transaction for a busy slot; never blocks."""
        report = Finished(job_id, attempt, result)
        return self.finish_many_and_claim([report], worker, mode, limit, stop=stop)

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
                    self._finish(
                        report.job_id, report.attempt, result, report.started, report.ended
                    )
                stopping = limit <= 0 or (stop is not None and stop())
                rows = [] if stopping else self._start_jobs(worker, mode, limit, ahead)
        except QueueClosed:
            return []
        got = self._unpack(rows) if rows else []
        if rows and not got:  # every job claimed was refused: look for one that can run
            try:
                return self.claim(worker, mode, limit)
            except QueueClosed:
                return []
        return got

    def _start_jobs(self, worker: str, mode: str, limit: int, ahead: int = 0) -> list[Row]:
        """Start up to ``limit`` jobs, the last ``ahead`` of them marked as claimed ahead (no
        slot runs them yet); their rows, as they were before the claim (in a transaction)."""
        engine, now = self._engine, self._clock.now()
        engine.tick(now)
        rows: list[Row] = []
        while len(rows) < limit:
            row = engine.next_startable(mode)
            if row is None:
                break
            engine.start(row, worker, now, ahead=len(rows) >= limit - ahead)
            rows.append(row)
        return rows

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
                got.append(claimed(row, self.serializer, self._resolve))
            except CannotLoad as exc:
                got.extend(self._unrunnable(row, attempt, load_error(exc), refused=False))
            except Exception as exc:  # whatever it is, this job cannot run: never the worker
                error = ErrorInfo(type(exc).__name__, str(exc))
                got.extend(self._unrunnable(row, attempt, error, refused=True))
        return got

    def _unrunnable(
        self, row: dict[str, Any], attempt: int, error: ErrorInfo, *, refused: bool
    ) -> list[ClaimedJob]:
        """Fail the attempt of a job that cannot run here (for good if ``refused``); the job
        marked as such, or nothing if the attempt no longer held it."""
        with self._tx():
            held = self._engine.holding(row["id"], attempt)
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

    # ------------------------------------------------------- end of an attempt
    def _encode_result(self, result: Any) -> bytes | ErrorInfo:
        try:
            return self.serializer.dumps(result)
        except NotSerializable as exc:
            return ErrorInfo("NotSerializable", f"the job's result cannot be stored: {exc}")

    def finish(self, job_id: str, attempt: int, result: Any) -> bool:
        encoded = self._encode_result(result)
        with self._tx():
            return self._finish(job_id, attempt, encoded)

    def _finish(
        self,
        job_id: str,
        attempt: int,
        encoded: bytes | ErrorInfo,
        started: float | None = None,
        ended: float | None = None,
    ) -> bool:
        """End a running attempt with its encoded result (an ErrorInfo: it could not be
        encoded, the job fails); ``started`` and ``ended`` default to the claim and now (in a
        transaction)."""
        engine = self._engine
        if RETURNING and not isinstance(encoded, ErrorInfo):
            # one statement checks the claim and ends the job; the row it returns is the ended
            # job's, as the cascade wants it
            at = self._clock.now() if ended is None else ended
            cursor = self._db.execute(FINISH, (started, at, encoded, job_id, attempt))
            row = cursor.fetchone()
            cursor.close()
            if row is None:
                return False  # cancelled, recovered or timed out meanwhile: dropped
            engine.release(row)
            engine.cascade([job_id], row)
            return True
        row = engine.holding(job_id, attempt)
        if row is None:
            return False
        engine.release(row)
        if started is not None:
            self._db.execute("UPDATE jobs SET started = ? WHERE id = ?", (started, job_id))
        if isinstance(encoded, ErrorInfo):
            engine.end(job_id, Status.FAILED, error=encoded, row=row, at=ended)
        else:
            engine.end(job_id, Status.FINISHED, result=encoded, row=row, at=ended)
        return True

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
            row = self._engine.holding(job_id, attempt)
            if row is None:
                return None
            if started is not None:
                self._db.execute("UPDATE jobs SET started = ? WHERE id = ?", (started, job_id))
            return self._fail_row(row, error)

    def _fail_row(self, row: dict[str, Any], error: ErrorInfo, *, final: bool = False) -> Failed:
        """(In a transaction) end a running attempt as failed: its job retried if it has
        retries left (and not ``final``), else failed for good (cascading)."""
        self._engine.release(row)
        if not final and row["attempts"] <= row["retries"]:
            return Failed(self._engine.schedule_retry(row, error))
        self._engine.end(row["id"], Status.FAILED, error=error)
        return Failed()

    def requeue(self, job_id: str, attempt: int) -> bool:
        with self._tx():
            row = self._engine.holding(job_id, attempt)
            if row is None:
                return False
            self._engine.release(row)
            self._db.execute(
                "UPDATE jobs SET status = 'waiting', attempts = attempts - 1, worker = NULL,"
                " lease_until = NULL WHERE id = ?",
                (job_id,),
            )
            self._engine.consider(job_id)
        return True

    # ------------------------------------------------------------------ cancel
    def cancel(self, job_id: str, reason: str = "cancelled") -> bool:
        with self._tx():
            self._engine.tick(self._clock.now())
            row = self._job(job_id)
            if row["status"] in TERMINAL:
                return False
            if row["status"] == Status.RUNNING:
                self._engine.release(row)
                hook = self._stop_hook
                if hook is not None:
                    self._effects.append(lambda: hook(job_id, reason))
            self._engine.end(job_id, Status.CANCELLED, reason=reason)
        return True

    def set_stop_hook(self, hook: Callable[[str, str], object] | None) -> None:
        self._stop_hook = hook

    def __repr__(self) -> str:
        return f"<SQLiteBackend {self.path} pid={os.getpid()} host={socket.gethostname()}>"
