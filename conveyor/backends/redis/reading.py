"""What the Redis backend reports (records, counts, outcomes), ended jobs popped or forgotten,
and the administrator's retry and purge. Each is one script: the timers due are applied first,
in the same step."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

from conveyor import rules
from conveyor.backends.redis.decode import Hash, record, result_of, snapshot
from conveyor.backends.redis.waiting import Waiting
from conveyor.errors import InvalidJob, UnknownJob
from conveyor.job import JobRecord, Outcome, Status
from conveyor.records import history_entry, with_history

#: the most jobs read in one script call (a longer list is read in several)
READ_BATCH = 1000


class Reading(Waiting):
    """Records, counts, outcomes; pop_ended, forget; retry and purge."""

    def _hashes(self, ids: Sequence[str]) -> list[Hash | None]:
        """The hashes of ``ids`` (None for a job that does not exist), in that order."""
        ended = self._ended(ids)
        if ended is not None:  # the last message carried them, and nothing changed since
            self._settle()
            return list(ended)
        found: list[Hash | None] = []
        for start in range(0, len(ids), READ_BATCH):
            answer = self.run("read", "ids", *ids[start : start + READ_BATCH])
            found += [snapshot(flat) if flat else None for flat in answer]
        self._settle()
        return found

    def get(self, job_id: str) -> JobRecord:
        """The job's record; an unsigned pickle's arguments and result are not decoded."""
        (h,) = self._hashes([job_id])
        if h is None:
            raise UnknownJob(job_id)
        return record(h, self.serializer)

    def query(
        self, status: Status | None = None, *, ids: Sequence[str] | None = None
    ) -> list[JobRecord]:
        """Records in submission order; for ``ids``, results decoded."""
        if ids is None:
            args = ("all",) if status is None else ("status", status.value)
            answer = self.run("read", *args)
            self._settle()
            return [record(snapshot(flat), self.serializer) for flat in answer]
        unique = list(dict.fromkeys(ids))
        hashes = [h for h in self._hashes(unique) if h is not None]
        if status is not None:
            hashes = [h for h in hashes if h["status"] == status.value.encode()]
        hashes.sort(key=lambda h: int(h["seq"]))
        return [record(h, self.serializer, results=True) for h in hashes]

    def outcomes(self, ids: Sequence[str]) -> list[Outcome]:
        """``(status, result, error)`` of each job of ``ids``, in that order (results
        decoded); UnknownJob if one is gone."""
        outcomes: list[Outcome] = []
        for start in range(0, len(ids), READ_BATCH):
            chunk = ids[start : start + READ_BATCH]
            answer = self.run("read", "outcomes", *chunk)
            self._settle()
            for i, job_id in enumerate(chunk):
                status, result, error = answer[3 * i : 3 * i + 3]
                if status is None:
                    raise UnknownJob(job_id)
                h: Hash = {"status": status}
                if result is not None:
                    h["result"] = result
                outcomes.append(
                    (
                        Status(status.decode()),
                        result_of(h, self.serializer, True),
                        None if error is None else error.decode("utf-8", "surrogatepass"),
                    )
                )
        return outcomes

    def counts(self) -> dict[Status, int]:
        answer = self.run("read", "counts")
        self._settle()
        return {Status(answer[i].decode()): int(answer[i + 1]) for i in range(0, len(answer), 2)}

    def pop_ended(self, limit: int | None = None) -> list[JobRecord]:
        """Remove and return up to ``limit`` ended jobs, in the order they ended."""
        if limit is not None and limit <= 0:
            return []
        answer = self.run("pop", -1 if limit is None else limit)
        self._settle()
        return [record(snapshot(flat), self.serializer, results=True) for flat in answer]

    def forget(self, job_ids: Collection[str], *, strict: bool = False) -> int:
        """Drop the ended jobs among ``job_ids``; return how many. With ``strict``, an
        unknown or active one raises (UnknownJob, InvalidJob) and nothing is dropped."""
        ids = list(job_ids)
        if not ids:
            return 0
        answer = self.run("forget", int(strict), *ids)
        kind = answer[0]
        if kind == b"unknown":
            raise UnknownJob(answer[1].decode())
        if kind == b"active":
            raise InvalidJob(f"job {answer[1].decode()!r} is {answer[2].decode()}; cancel it first")
        return int(answer[1])

    # ------------------------------------------------------------------ admin
    def retry(self, job_id: str) -> None:
        """Put a failed or cancelled job back to waiting (see :meth:`Backend.retry`)."""
        while True:
            (h,) = self._hashes([job_id])
            if h is None:
                raise UnknownJob(job_id)
            status = h["status"].decode()
            if status not in (Status.FAILED, Status.CANCELLED):
                raise InvalidJob(
                    f"job {job_id!r} is {status}; only failed or cancelled jobs can be retried"
                )
            now = self._clock.now()
            entry = history_entry(
                status,
                _text(h.get("error")),
                _text(h.get("traceback")),
                int(h.get("attempts", b"0")),
                float(h["ended"]) if "ended" in h else None,
                now,
            )
            meta = json.dumps(with_history(json.loads(h.get("meta", b"{}")), entry))
            answer = self.run("retry", job_id, h.get("ended", b""), meta, now=now)
            kind = answer[0]
            if kind == b"ok":
                return
            if kind == b"changed":
                continue
            if kind == b"unknown":
                raise UnknownJob(job_id)
            if kind == b"status":
                raise InvalidJob(
                    f"job {job_id!r} is {answer[1].decode()}; only failed or cancelled jobs"
                    " can be retried"
                )
            if kind == b"dependency":
                dep = answer[1].decode()
                raise InvalidJob(
                    f"job {job_id!r} depends on {dep!r}, which {answer[2].decode()}; "
                    f"retry {dep!r} first"
                )
            raise InvalidJob(
                f"job {job_id!r} cannot be retried: job {answer[1].decode()!r} holds its unique"
                f" key {answer[2].decode()!r}"
            )

    def purge(
        self,
        statuses: Collection[Status],
        task: str | None = None,
        before: float | None = None,
    ) -> int:
        """Drop matching jobs; return how many (see :meth:`Backend.purge`)."""
        rules.check_purge(statuses)
        if not statuses:
            return 0
        wanted = sorted(status.value for status in statuses)
        return int(self.run("purge", task or "", "" if before is None else repr(before), *wanted))


def _text(value: Any) -> str | None:
    return None if value is None else bytes(value).decode("utf-8", "surrogatepass")
