"""The distributed backend: one queue's jobs on a Redis server (or one slot of a cluster).

:class:`RedisBackend` is the Backend protocol's methods; every state change is one Lua script
call (:mod:`.scripts`: the engine of ``lua/engine*.lua`` in front of each entry script), so every
rule is atomic across any number of workers on any number of hosts. Payloads and results are
stored as the bytes they came as, with the job envelope's ``mac`` (its worker checks and
decodes them). The other parts: the key schema (:mod:`.keys`), the connection and the events of
a step (:mod:`.connection`), version and wait (:mod:`.waiting`), records and admin
(:mod:`.reading`), workers and leases (:mod:`.registry`).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

from conveyor import rules
from conveyor.backends.redis import keys
from conveyor.backends.redis.connection import shown
from conveyor.backends.redis.listener import EVERY
from conveyor.backends.redis.registry import Registry
from conveyor.clock import Clock
from conveyor.errors import (
    DependencyCycle,
    DuplicateJob,
    InvalidJob,
    QueueClosed,
    QueueFull,
    UnknownDependency,
)
from conveyor.events import EventBus
from conveyor.job import JobOptions
from conveyor.records import (
    Cancelled,
    ClaimedJob,
    Finished,
    JobSpec,
    Recorded,
    Report,
    Reported,
    envelope,
)
from conveyor.rules.plan import compile_plan
from conveyor.serializer import Serializer
from conveyor.tracking import check as check_progress

#: the most jobs one engine call submits: a bigger batch without max_size goes in several
#: calls (a Lua call holds the whole server while it runs: 1,000 jobs take about 50 ms)
SUBMIT_BATCH = 1000
#: a report recorded; one dropped (its attempt no longer held the job); a cancel too late
HELD, DROPPED, NOT_ACTIVE = Recorded(True), Recorded(False), Cancelled(False)
#: claimed job fields in a claim's answer
CLAIMED_FIELDS = 8


class RedisBackend(Registry):
    """Jobs of one queue in Redis; every rule applied inside one Lua script per change."""

    durable = True
    #: other processes (and hosts) change the same jobs
    shared = True

    def __init__(
        self,
        url: str,
        *,
        name: str = "default",
        clock: Clock | None = None,
        events: EventBus | None = None,
        max_size: int | None = None,
        serializer: Serializer | None = None,
        lease: float = 60.0,
        result_ttl: float | None = None,
    ) -> None:
        super().__init__(
            url, name=name, clock=clock or Clock(), events=events or EventBus(),
            serializer=serializer or Serializer("json"), lease=lease, result_ttl=result_ttl,
        )  # fmt: skip
        self._max_size = max_size
        self._start_listening()
        self._clock.subscribe(self.wake)

    # ------------------------------------------------------------------ submit
    def submit(
        self, specs: Sequence[JobSpec], *, block: bool = True, timeout: float | None = None
    ) -> list[str]:
        if self._closed:
            raise QueueClosed("the queue is closed; it takes no more jobs")
        if not specs:
            return []
        self._validate(specs)
        if self._max_size is None and len(specs) > SUBMIT_BATCH:
            # one engine call holds the server: a big batch goes in calls of SUBMIT_BATCH jobs
            # (each all or nothing; dependencies on earlier ones are known by then)
            ids: list[str] = []
            for start in range(0, len(specs), SUBMIT_BATCH):
                ids += self._submit(specs[start : start + SUBMIT_BATCH], block, timeout)
            return ids
        return self._submit(specs, block, timeout)

    def _submit(self, specs: Sequence[JobSpec], block: bool, timeout: float | None) -> list[str]:
        """One engine call for ``specs`` (waiting for room under max_size if ``block``)."""
        args: list[Any] = [-1 if self._max_size is None else self._max_size, len(specs)]
        for spec in specs:
            args += self._fields(spec)
        deadline = None if timeout is None else time.monotonic() + timeout
        since = None  # taken (before a second look) only once the queue was seen full
        while True:
            answer = self.run("submit", *args)
            kind = answer[0]
            if kind == b"ok":
                return [job_id.decode() for job_id in answer[1:]]
            if kind == b"duplicate":
                raise DuplicateJob(
                    f"job id {answer[1].decode()!r} is already in the queue; pick another id"
                )
            if kind == b"unknown":
                raise UnknownDependency(
                    f"unknown dependency {answer[1].decode()!r} of job {answer[2].decode()!r};"
                    " put it first or drop it"
                )
            pending = int(answer[1])
            if not block:
                raise QueueFull(
                    f"the queue holds {pending} jobs not yet started (max_size={self._max_size});"
                    " wait, or put with block=True"
                )
            if deadline is not None and time.monotonic() >= deadline:
                raise QueueFull(f"no room under max_size={self._max_size} before the timeout")
            if since is None:
                since = self.version(EVERY)  # room is made by claims too
                continue
            limit = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.wait(since, limit, mode=EVERY)
            since = None

    def _validate(self, specs: Sequence[JobSpec]) -> None:
        """What needs no look at the queue: payloads, and dependencies on the job itself or
        in a cycle within the batch (ids taken and unknown dependencies: submit.lua)."""
        for spec in specs:
            if spec.ref is None or not isinstance(spec.payload, bytes):
                raise InvalidJob(f"job {spec.id!r} has no function reference or encoded payload")
            for dep in spec.options.after:
                if dep == spec.id:
                    raise DependencyCycle(f"job {spec.id!r} cannot depend on itself")
        if len(specs) > 1 and any(spec.options.after for spec in specs):
            cycle = rules.find_cycle({spec.id: spec.options.after for spec in specs})
            if cycle:
                raise DependencyCycle("dependency cycle: " + " -> ".join(cycle))

    def _fields(self, spec: JobSpec) -> list[Any]:
        """A spec as submit.lua reads it (SPEC there: the same order; '' for none)."""
        assert spec.ref is not None and isinstance(spec.payload, bytes)  # _validate checked
        opts: JobOptions = spec.options
        mac: bytes | None = None
        if self.serializer.signed:
            mac = self.serializer.sign_job(
                envelope(
                    spec.id, spec.ref, spec.task, spec.mode, spec.payload, spec.options.timeout
                )
            )
        plan = compile_plan(
            spec.id,
            spec.task,
            exclusive=opts.exclusive,
            incompatible=opts.incompatible,
            max_concurrency=spec.max_concurrency,
        )
        needs = [
            need.key if need.park == need.key and need.capacity == 1 else list(need)
            for need in plan.needs
        ]
        caps = [
            [need.park, need.key, need.capacity]
            for need in plan.needs
            if need.park != need.key or need.capacity != 1
        ]
        return [
            spec.id, spec.task, spec.mode, spec.ref, spec.payload, str(opts.priority),
            keys.rank(opts.priority), "" if opts.lane is None else json.dumps(opts.lane),
            "1" if opts.stop_on_lane_error else "", _json(opts.after), _json(opts.exclusive),
            _json(opts.incompatible), _num(opts.timeout), str(opts.retries) if opts.retries else "",
            _num(opts.retry_delay or None), "" if opts.backoff == 1 else repr(opts.backoff),
            _num(opts.at), _num(opts.expires_at), opts.unique or "", _num(opts.unique_for),
            json.dumps(opts.meta) if opts.meta else "", mac or b"", json.dumps(needs),
            json.dumps(list(plan.holds)), json.dumps(list(plan.frees)), json.dumps(caps),
        ]  # fmt: skip

    # ------------------------------------------------------------------- claim
    def claim(self, worker: str, mode: str, limit: int = 1, *, ahead: int = 0) -> list[ClaimedJob]:
        """Start up to ``limit`` jobs of ``mode`` (the last ``ahead`` claimed ahead of the
        worker's slots); never blocks."""
        if limit <= 0:
            return []
        return self.report((), worker=worker, mode=mode, claim=limit, ahead=ahead).claimed

    def report(
        self,
        reports: Sequence[Report],
        *,
        worker: str,
        mode: str,
        claim: int = 0,
        ahead: int = 0,
        started: Sequence[tuple[str, int]] = (),
    ) -> Reported:
        """Every report, then a claim that does not wait, in one script; the jobs claimed
        ahead, and those of ``started`` (now run by a slot), marked as such. A job handed over
        to the slot while it idled (:mod:`.markers`) is its first claim: with nothing else to
        write or claim, no script runs."""
        self._slot[mode] = worker
        first: list[ClaimedJob] = []
        if claim > 0 and self._handed:
            job = self._handed.pop(worker, None)
            if job is not None:
                first.append(job)
                claim -= 1
                if not claim and not reports and not started:
                    return Reported([], first)
        self._idle.pop(worker, None)  # the script ends its registration
        args: list[Any] = [worker, mode, max(0, claim), ahead, len(started)]
        for job_id, attempt in started:
            args += [job_id, attempt]
        args.append(len(reports))
        for report in reports:
            if isinstance(report, Finished):
                if not isinstance(report.result, bytes):
                    raise TypeError(
                        f"a durable job's result is stored encoded, got {type(report.result)}"
                    )
                args += ["F", report.job_id, report.attempt, report.result,
                         _num(report.started), _num(report.ended), "", "", ""]  # fmt: skip
            else:
                args += ["X", report.job_id, report.attempt, "", _num(report.started),
                         _num(report.ended), str(report.error), report.error.traceback or "",
                         "1" if report.final else ""]  # fmt: skip
        recorded, claimed = self.run("claim", *args)
        return Reported(
            [
                HELD
                if value == b"1"
                else DROPPED
                if value == b"0"
                else Recorded(True, float(value))
                for value in recorded
            ],
            first
            + [
                _claimed(claimed[i : i + CLAIMED_FIELDS])
                for i in range(0, len(claimed), CLAIMED_FIELDS)
            ],
        )

    def requeue(self, job_id: str, attempt: int) -> bool:
        return bool(self.run("requeue", job_id, attempt))

    def progress(
        self, job_id: str, attempt: int, fraction: float, message: str | None = None
    ) -> bool:
        """Record a running attempt's progress: one call of ``lua/progress.lua`` checks the
        attempt and sets the fields (see :meth:`Backend.progress`)."""
        fraction, message = check_progress(fraction, message)
        flag = "0" if message is None else "1"
        return bool(self.run("progress", job_id, attempt, repr(fraction), flag, message or ""))

    # ------------------------------------------------------------------ cancel
    def cancel(self, job_id: str, reason: str = "cancelled") -> Cancelled:
        answer = self.run("cancel", job_id, reason)
        kind = answer[0]
        if kind == b"unknown":
            from conveyor.errors import UnknownJob

            raise UnknownJob(job_id)
        if kind == b"ended":
            return NOT_ACTIVE
        slot = answer[1]
        return Cancelled(True, None if slot is None else slot.decode())

    # ------------------------------------------------------------------- close
    def close(self) -> None:
        """Release the connections; every blocked wait returns, later calls raise
        QueueClosed."""
        if self._closed:
            return
        self.release_slots("")  # every slot of this backend
        if not self._shut():
            return
        self._clock.unsubscribe(self.wake)
        self._stop_listening()
        self.redis.close()

    def __repr__(self) -> str:
        return (
            f"<RedisBackend {shown(self.url)} queue={self.name!r} pid={os.getpid()}"
            f" host={socket.gethostname()}>"
        )


def _json(names: tuple[str, ...]) -> str:
    return json.dumps(list(names)) if names else "[]"


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _claimed(fields: Sequence[Any]) -> ClaimedJob:
    job_id, attempt, task, mode, ref, payload, timeout, mac = fields
    return ClaimedJob(
        job_id.decode(), int(attempt), task.decode(), mode.decode(), ref.decode(), payload,
        None if timeout is None else float(timeout), mac,
    )  # fmt: skip
