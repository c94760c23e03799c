"""The bodies and responses of the HTTP API, as pydantic models (they make its OpenAPI spec).

A job record's fields are those of :func:`conveyor.operations.record_json`; a record may carry
more (``extra="allow"``), so fields added to JobRecord show up without a change here.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.job import Status


class SubmitJob(BaseModel):
    """``POST /api/jobs``: a registered task by name, its JSON arguments and put options
    (left out: put's default). Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, description="A task registered with the queue, by name.")
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    id: str | None = Field(default=None, description="The job's id (default: generated).")
    priority: int | None = Field(default=None, description="Lower runs first (default 0).")
    lane: str | int | None = None
    stop_on_lane_error: bool | None = None
    after: list[str] | None = Field(default=None, description="Ids of jobs to finish first.")
    exclusive: list[str] | None = None
    incompatible: list[str] | None = None
    timeout: float | None = Field(default=None, description="Seconds an attempt may run.")
    expires: float | None = Field(default=None, description="Cancel if not started in (s).")
    retries: int | None = None
    retry_delay: float | None = None
    backoff: float | None = None
    delay: float | None = Field(default=None, description="Start no sooner (seconds).")
    at: float | str | None = Field(default=None, description="Epoch seconds or ISO 8601.")
    unique: bool | str | None = None
    unique_for: float | None = None
    meta: dict[str, Any] | None = None


class Submitted(BaseModel):
    """A job put: its id and status."""

    id: str
    status: Status


class JobRecordModel(BaseModel):
    """Everything known about one job; times in ISO 8601 (UTC)."""

    model_config = ConfigDict(extra="allow")

    id: str
    task: str
    status: Status
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    priority: int = 0
    lane: str | int | None = None
    after: list[str] = Field(default_factory=list)
    exclusive: list[str] = Field(default_factory=list)
    incompatible: list[str] = Field(default_factory=list)
    attempts: int = 0
    worker: str | None = None
    submitted: str | None = None
    started: str | None = None
    ended: str | None = None
    runtime: float | None = None
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    progress: float | None = Field(
        default=None, description="The running attempt's last conveyor.progress() value, 0 to 1."
    )
    progress_message: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    history: list[dict[str, Any]] = Field(
        default_factory=list, description="How a retried job ended before, oldest first."
    )


class JobPage(BaseModel):
    """One page of jobs, newest submitted first: ``total`` match the filter."""

    jobs: list[JobRecordModel]
    total: int
    limit: int
    offset: int


class JobResult(BaseModel):
    """An ended job's outcome: its result (finished), else the error and traceback."""

    status: Status
    result: Any = None
    error: str | None = None
    traceback: str | None = None


class Cancelled(BaseModel):
    """Whether a cancel ended the job (False: it had already ended)."""

    cancelled: bool


class PurgeRequest(BaseModel):
    """``POST /api/purge``: which jobs to drop (default: the ended ones)."""

    model_config = ConfigDict(extra="forbid")

    statuses: list[Status] | None = Field(
        default=None, description="Default finished, failed, cancelled; never running."
    )
    task: str | None = None
    older_than: float | None = Field(
        default=None, ge=0, description="Only jobs that ended more than this many seconds ago."
    )


class Purged(BaseModel):
    """How many jobs a purge dropped."""

    purged: int


class Counts(BaseModel):
    """How many jobs are in each status."""

    waiting: int
    scheduled: int
    running: int
    finished: int
    failed: int
    cancelled: int


class WorkerModel(BaseModel):
    """A worker of the queue; ``state`` is ``lost`` once it was silent past its lease."""

    id: str
    host: str
    pid: int
    mode: str
    slots: int
    started: str | None
    last_seen: str | None
    state: str


class ErrorBody(BaseModel):
    """Why a request was refused."""

    detail: str


def plain(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON data: containers copied, non-finite floats and anything JSON cannot
    hold as their repr (an in-process job may return any Python object)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth > 50:
        return repr(value)
    if isinstance(value, dict):
        return {str(key): plain(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item, depth + 1) for item in value]
    return repr(value)
