"""The memory engine's records: one job (:class:`Entry`), one lane.

Plain mutable objects with slots, private to the memory backend; what leaves the backend is a
:class:`~conveyor.job.JobRecord` (:meth:`Entry.record`) or a
:class:`~conveyor.records.ClaimedJob`.
"""

from __future__ import annotations

from typing import Any

from conveyor.job import JobOptions, JobRecord, Status
from conveyor.records import JobSpec
from conveyor.rules.plan import Shape

#: an entry in the ready index: (priority, seq, job id), the order of ``rules.order_key``
HeapItem = tuple[int, int, str]
#: ``Entry.where`` of a job in the ready index (a park key always holds a ``:``)
READY = "ready"


class Entry:
    """The mutable state of one job."""

    __slots__ = (
        "args",
        "attempts",
        "dependents",
        "due",
        "ended",
        "error",
        "id",
        "kwargs",
        "mode",
        "opts",
        "payload",
        "pending_deps",
        "plan",
        "progress",
        "progress_message",
        "result",
        "seq",
        "started",
        "status",
        "submitted",
        "task",
        "traceback",
        "where",
        "worker",
    )

    def __init__(self, spec: JobSpec, seq: int, now: float, plan: Shape) -> None:
        self.id = spec.id
        self.seq = seq
        self.task = spec.task
        self.mode = spec.mode
        self.args = spec.args
        self.kwargs = spec.kwargs
        self.payload = spec.payload
        self.opts: JobOptions = spec.options
        self.plan = plan
        self.status = Status.WAITING
        self.attempts = 0
        self.worker: str | None = None
        self.submitted = now
        self.started: float | None = None
        self.ended: float | None = None
        self.result: Any = None
        self.error: str | None = None
        self.traceback: str | None = None
        #: how far the running (or last) attempt got (``conveyor.progress``)
        self.progress: float | None = None
        self.progress_message: str | None = None
        #: dependencies not finished yet
        self.pending_deps = 0
        #: jobs waiting for this one (None: none; most jobs have none, and an empty list per
        #: job is one more object for the garbage collector to walk)
        self.dependents: list[str] | None = None
        #: when a scheduled job becomes waiting (its timer's time)
        self.due: float | None = None
        #: None, READY (in the ready index) or the park key it is parked on
        self.where: str | None = None

    def add_dependent(self, job_id: str) -> None:
        """Job ``job_id`` waits for this one."""
        if self.dependents is None:
            self.dependents = [job_id]
        else:
            self.dependents.append(job_id)

    def item(self) -> HeapItem:
        """Its place in the ready index, a lane's order or a park key's heap."""
        return (self.opts.priority, self.seq, self.id)

    def record(self) -> JobRecord:
        """A snapshot of the job, as the backend protocol returns it."""
        started, ended = self.started, self.ended
        stamp = JobRecord.timestamp
        opts = self.opts
        return JobRecord(
            id=self.id,
            task=self.task,
            status=self.status,
            args=self.args,
            kwargs=self.kwargs,
            priority=opts.priority,
            lane=opts.lane,
            after=opts.after,
            exclusive=opts.exclusive,
            incompatible=opts.incompatible,
            attempts=self.attempts,
            worker=self.worker,
            submitted=stamp(self.submitted),
            started=stamp(started),
            ended=stamp(ended),
            runtime=None if started is None or ended is None else max(0.0, ended - started),
            result=self.result,
            error=self.error,
            traceback=self.traceback,
            meta=dict(opts.meta),
            progress=self.progress,
            progress_message=self.progress_message,
        )


class Lane:
    """One sequential lane: members not yet started, by (priority, seq), and who holds it."""

    __slots__ = ("current", "heap", "previous", "previous_failed")

    def __init__(self) -> None:
        self.heap: list[HeapItem] = []
        #: the job that last started in the lane and has not ended (retries included)
        self.current: str | None = None
        self.previous: str | None = None
        self.previous_failed = False
