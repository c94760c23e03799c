"""The memory backend's reads: records, counts, ended jobs popped or forgotten.

None of them blocks: waiting is built once on ``version``/``wait``
(:mod:`conveyor.backends.waiting`). Each applies the timers that are due first.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from itertools import pairwise

from conveyor.backends.memory.locked import Locked
from conveyor.errors import InvalidJob, UnknownJob
from conveyor.job import TERMINAL, JobRecord, Outcome, Status


class Reads(Locked):
    """The protocol's reads (:class:`~conveyor.backends.base.Backend`)."""

    def get(self, job_id: str) -> JobRecord:
        with self._lock:
            self._engine.tick(self._clock.now())
            record = self._entry(job_id).record()
            effects = self._take_effects()
        self._run(effects)
        return record

    def query(
        self, status: Status | None = None, *, ids: Sequence[str] | None = None
    ) -> list[JobRecord]:
        """Records of all jobs, of one status, or of the jobs ``ids`` that exist (of that
        status, if given), in submission order."""
        with self._lock:
            self._engine.tick(self._clock.now())
            jobs = self._engine.jobs
            if ids is None:
                entries = list(jobs.values())
            else:
                entries = [entry for job_id in ids if (entry := jobs.get(job_id)) is not None]
                if any(a.seq >= b.seq for a, b in pairwise(entries)):
                    entries = sorted(set(entries), key=lambda entry: entry.seq)
            records = [e.record() for e in entries if status is None or e.status is status]
            effects = self._take_effects()
        self._run(effects)
        return records

    def outcomes(self, ids: Sequence[str]) -> list[Outcome]:
        """``(status, result, error)`` of each job of ``ids``, in that order; UnknownJob if
        one is gone."""
        with self._lock:
            self._engine.tick(self._clock.now())
            jobs = self._engine.jobs
            try:
                found = [jobs[job_id] for job_id in ids]
            except KeyError as exc:
                raise UnknownJob(exc.args[0]) from None
            outcomes = [(e.status, e.result, e.error) for e in found]
            effects = self._take_effects()
        self._run(effects)
        return outcomes

    def counts(self) -> dict[Status, int]:
        with self._lock:
            self._engine.tick(self._clock.now())
            counts = {status: self._engine.counts[status] for status in Status}
            effects = self._take_effects()
        self._run(effects)
        return counts

    def pop_ended(self, limit: int | None = None) -> list[JobRecord]:
        """Remove and return up to ``limit`` ended jobs, in the order they ended."""
        engine = self._engine
        with self._lock:
            engine.tick(self._clock.now())
            popped: list[JobRecord] = []
            while engine.ended and (limit is None or len(popped) < limit):
                entry = engine.jobs.get(engine.ended.popitem(last=False)[0])
                if entry is None or entry.status not in TERMINAL:
                    continue  # forgotten, or retried since it was queued here
                engine.drop(entry)
                popped.append(entry.record())
            effects = self._take_effects()
        self._run(effects)
        return popped

    def forget(self, job_ids: Collection[str], *, strict: bool = False) -> int:
        """Drop the ended jobs among ``job_ids``; return how many. With ``strict``, an
        unknown or active one raises (UnknownJob, InvalidJob) and nothing is dropped."""
        engine = self._engine
        with self._lock:
            entries = []
            for job_id in job_ids:
                entry = engine.jobs.get(job_id)
                if entry is not None and entry.status in TERMINAL:
                    entries.append(entry)
                elif not strict:
                    continue
                elif entry is None:
                    raise UnknownJob(job_id)
                else:
                    raise InvalidJob(f"job {job_id!r} is {entry.status.value}; cancel it first")
            for entry in entries:
                if entry.id in engine.jobs:  # an id named twice is dropped once
                    engine.drop(entry)
            dropped = len({entry.id for entry in entries})
            effects = self._take_effects()
        self._run(effects)
        return dropped
