"""The SQLite backend's worker registry and leases: workers, heartbeats, and jobs taken back
from workers whose lease ran out (the engine's ``take_back``).

A lease is judged by time, except one held by a worker still alive on this host: whether a
worker process lives is read from ``/proc`` (:func:`process_lives`), so a pid reused by another
process does not count.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Collection
from pathlib import Path

from conveyor.backends.sqlite.engine import Engine, Lost
from conveyor.backends.sqlite.lanes import Row
from conveyor.backends.sqlite.storage import READ_FAILED, Storage
from conveyor.job import Status
from conveyor.records import WorkerInfo

log = logging.getLogger("conveyor.backends.sqlite")


class Registry(Storage):
    """Workers, their heartbeats, and the recovery of their lost leases."""

    _engine: Engine
    _lease: float

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
                _log_taken_back(row, self._engine.take_back(row), by)
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


def _log_taken_back(row: Row, outcome: Lost, by: str | None) -> None:
    """Log a job taken back (naming ``by``, the worker that recovered it)."""
    log.warning(
        "%sjob %s (task %s, attempt %d) recovered: %s; %s",
        f"{by}: " if by else "",
        row["id"],
        row["task"],
        row["attempts"],
        outcome.error.message,
        f"failed for good: its workers were lost {outcome.lost} time(s)"
        if outcome.final
        else "it waits to run again",
        extra={
            "job_id": row["id"],
            "task": row["task"],
            "attempt": row["attempts"],
            "lost_worker": row["worker"],
            "outcome": "failed" if outcome.final else "waiting",
        },
    )


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
