"""The Redis backend's worker registry and leases: workers, heartbeats, and jobs taken back
from workers whose lease ran out (the engine's ``take_back``, in ``recover.lua``).

As on SQLite (:mod:`conveyor.backends.sqlite.registry`), a lease is judged by time, except one
held by a worker still alive on this host (read from ``/proc``): no job runs twice while its
owner lives.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Collection
from typing import Any

import redis

from conveyor.backends.redis.reading import Reading
from conveyor.backends.sqlite.registry import process_identity, process_lives
from conveyor.records import WorkerInfo

log = logging.getLogger("conveyor.backends.redis")

#: the most expired leases looked at in one recovery
RECOVER_BATCH = 1000


class Registry(Reading):
    """Workers, their heartbeats, and the recovery of their lost leases."""

    def register_worker(self, info: WorkerInfo) -> None:
        """Record a worker, its lease, and what tells its process from a later one with its
        pid (one HSET per hash: each atomic)."""
        here = info.host == socket.gethostname()
        data = {
            "id": info.id, "host": info.host, "pid": info.pid, "mode": info.mode,
            "slots": info.slots, "started": info.started, "lease": info.lease,
            "proc_start": process_identity(info.pid) if here else None,
        }  # fmt: skip

        def write(r: redis.Redis) -> None:
            pipe = r.pipeline(transaction=True)
            pipe.hset(self.key("workers"), info.id, json.dumps(data))
            pipe.hset(self.key("seen"), info.id, repr(info.last_seen))
            pipe.execute()

        self.read(write, "cannot register a worker of")
        self._local_workers.add(info.id)

    def unregister_worker(self, worker_id: str) -> None:
        def write(r: redis.Redis) -> None:
            pipe = r.pipeline(transaction=True)
            pipe.hdel(self.key("workers"), worker_id)
            pipe.hdel(self.key("seen"), worker_id)
            pipe.execute()

        self.release_slots(worker_id)
        self.read(write, "cannot unregister a worker of")
        self._local_workers.discard(worker_id)

    def _registered(self) -> list[tuple[dict[str, Any], float]]:
        """Every worker's record and last heartbeat."""

        def read(r: redis.Redis) -> Any:
            pipe = r.pipeline(transaction=True)
            pipe.hgetall(self.key("workers"))
            pipe.hgetall(self.key("seen"))
            return pipe.execute()

        found, seen = self.read(read)
        workers = []
        for worker_id, data in found.items():
            last = seen.get(worker_id)
            if last is not None:
                workers.append((json.loads(data), float(last)))
        return workers

    def workers(self, *, include_lost: bool = False) -> list[WorkerInfo]:
        """The workers seen within their own lease; with ``include_lost``, the silent ones
        too."""
        now = self._clock.now()
        infos = []
        for data, last_seen in self._registered():
            lease = data.get("lease")
            if include_lost or last_seen >= now - (self._lease if lease is None else lease):
                data.pop("proc_start", None)
                infos.append(WorkerInfo(**data, last_seen=last_seen))
        return sorted(infos, key=lambda info: info.started)

    def heartbeat(self, worker: str, ids: Collection[str]) -> set[str]:
        lost = {job_id.decode() for job_id in self.run("heartbeat", worker, *ids)}
        stops = self._stops
        for job_id in ids:
            stops.pop(job_id, None)  # the beat answered for it
        return lost

    def stops_pending(self, worker: str) -> bool:
        """Whether a running job of ``worker`` was cancelled by another process since its last
        heartbeat (heard on the channel): its heartbeat then beats at once and stops it."""
        prefix = worker + "/"
        return any(slot.startswith(prefix) for slot in list(self._stops.values()))

    def recover_expired(self, *, by: str | None = None) -> int:
        """Return running jobs whose lease ran out (their worker died) to the queue (see
        :meth:`conveyor.backends.sqlite.SQLiteBackend.recover_expired`)."""
        now = self._clock.now()

        def expired(r: redis.Redis) -> list[tuple[str, bytes | None, bytes | None]]:
            ids: list[bytes] = r.zrangebyscore(  # type: ignore[assignment]
                self.key("leases"), "-inf", f"({now!r}", 0, RECOVER_BATCH
            )
            if not ids:
                return []
            pipe = r.pipeline(transaction=False)
            for job_id in ids:
                pipe.hmget(self.key("j:" + job_id.decode()), "worker", "lease_until")
            return [
                (job_id.decode(), worker, until)
                for job_id, (worker, until) in zip(ids, pipe.execute(), strict=True)
            ]

        candidates = self.read(expired)
        registered = {data["id"]: (data, seen) for data, seen in self._registered()}
        args: list[Any] = []
        for job_id, worker, until in candidates:
            if until is None:
                continue
            if self._owner_lives(registered, worker, float(until)):
                continue
            args += [job_id, until]
        recovered = 0
        if args:
            answer = self.run("recover", *args, now=now)
            for i in range(0, len(answer), 7):
                job_id, task, attempt, worker, message, lost, final = answer[i : i + 7]
                _log_taken_back(
                    job_id.decode(), task.decode(), int(attempt),
                    None if worker is None else worker.decode(), message.decode(), int(lost),
                    bool(final), by,
                )  # fmt: skip
                recovered += 1
        for worker_id, (data, seen) in registered.items():
            lease = data.get("lease") or self._lease
            if seen < now - 3 * lease and not process_lives(
                data["host"], data["pid"], data.get("proc_start")
            ):
                self.unregister_worker(worker_id)
        return recovered

    @staticmethod
    def _owner_lives(
        registered: dict[str, tuple[dict[str, Any], float]], worker: bytes | None, until: float
    ) -> bool:
        """Whether the worker holding a lease that ran out still lives on this host and has
        not beaten since (a beat that left the job out gave it up)."""
        if not worker:
            return False
        owner = registered.get(worker.decode().rpartition("/")[0])
        if owner is None or owner[1] > until:
            return False
        data = owner[0]
        return process_lives(data["host"], data["pid"], data.get("proc_start"))


def _log_taken_back(
    job_id: str,
    task: str,
    attempt: int,
    worker: str | None,
    message: str,
    lost: int,
    final: bool,
    by: str | None,
) -> None:
    log.warning(
        "%sjob %s (task %s, attempt %d) recovered: %s; %s",
        f"{by}: " if by else "",
        job_id,
        task,
        attempt,
        message,
        f"failed for good: its workers were lost {lost} time(s)"
        if final
        else "it waits to run again",
        extra={
            "job_id": job_id,
            "task": task,
            "attempt": attempt,
            "lost_worker": worker,
            "outcome": "failed" if final else "waiting",
        },
    )
