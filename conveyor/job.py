"""The job model: statuses, validated put options, and the JobRecord snapshot."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from conveyor.errors import InvalidJob


class Status(StrEnum):
    """Where a job is in its life."""

    WAITING = "waiting"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


#: A job in one of these will not change again.
TERMINAL = frozenset({Status.FINISHED, Status.FAILED, Status.CANCELLED})
#: A job in one of these still has work ahead of it.
ACTIVE = frozenset({Status.WAITING, Status.SCHEDULED, Status.RUNNING})
#: Not started yet (what ``max_size`` counts).
PENDING = frozenset({Status.WAITING, Status.SCHEDULED})

MODES = ("thread", "process", "async", "inline")


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What went wrong in one attempt, in a form that crosses processes."""

    type: str
    message: str
    traceback: str | None = None

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


def _names(value: str | Iterable[str] | None, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    names = tuple(value)
    for name in names:
        if not isinstance(name, str) or not name:
            raise InvalidJob(f"{what} must be non-empty strings, got {name!r}")
    return names


def _ids(value: Iterable[Any] | str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or hasattr(value, "id"):
        value = [value]
    ids = []
    for item in value:
        item_id = getattr(item, "id", item)  # a Job handle stands for its id
        if not isinstance(item_id, str) or not item_id:
            raise InvalidJob(f"after= takes job ids or Job handles, got {item!r}")
        ids.append(item_id)
    return tuple(ids)


def _seconds(value: float | None, what: str, *, allow_zero: bool = True) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise InvalidJob(f"{what} must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidJob(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def _timestamp(value: datetime | float | None, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.astimezone()  # naive means local time, as datetime.now() gives
        return value.timestamp()
    return _seconds(value, what)


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Put options, checked once when the job is put (not when it runs).

    ``at`` and ``expires_at`` are absolute epoch seconds: ``delay`` and a relative ``expires``
    are turned into them by :meth:`resolve` against the queue's clock.
    """

    priority: int = 0
    after: tuple[str, ...] = ()
    exclusive: tuple[str, ...] = ()
    incompatible: tuple[str, ...] = ()
    lane: str | int | None = None
    stop_on_lane_error: bool = False
    timeout: float | None = None
    retries: int = 0
    retry_delay: float = 0.0
    backoff: float = 1.0
    at: float | None = None
    expires_at: float | None = None
    unique: str | None = None
    unique_for: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        *,
        now: float,
        priority: int = 0,
        after: Iterable[Any] | str | None = (),
        exclusive: str | Iterable[str] | None = (),
        incompatible: str | Iterable[str] | None = (),
        lane: str | int | None = None,
        stop_on_lane_error: bool = False,
        timeout: float | None = None,
        expires: float | datetime | None = None,
        retries: int = 0,
        retry_delay: float = 0,
        backoff: float = 1.0,
        delay: float | None = None,
        at: float | datetime | None = None,
        unique: str | bool | None = None,
        unique_for: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> JobOptions:
        """Check every option and return them normalised; raise InvalidJob on bad input."""
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise InvalidJob(f"priority must be an int (lower runs first), got {priority!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidJob(f"retries must be an int >= 0, got {retries!r}")
        if lane is not None and (isinstance(lane, bool) or not isinstance(lane, str | int)):
            raise InvalidJob(f"lane must be a str or an int, got {lane!r}")
        if delay is not None and at is not None:
            raise InvalidJob("give delay= or at=, not both")
        backoff_value = _seconds(backoff, "backoff")
        if backoff_value is None or backoff_value < 1:
            raise InvalidJob(f"backoff must be >= 1 (a multiplier per retry), got {backoff!r}")
        start_at = _timestamp(at, "at")
        delay_s = _seconds(delay, "delay")
        if delay_s:
            start_at = now + delay_s
        expires_at: float | None
        if isinstance(expires, datetime):
            expires_at = _timestamp(expires, "expires")
        else:
            relative = _seconds(expires, "expires")
            expires_at = None if relative is None else now + relative
        unique_key: str | None
        if unique is None or unique is False:
            unique_key = None
        elif unique is True:
            unique_key = ""  # the queue derives the key from task and arguments
        elif isinstance(unique, str) and unique:
            unique_key = unique
        else:
            raise InvalidJob(f"unique must be True or a non-empty key string, got {unique!r}")
        if unique_for is not None and unique_key is None:
            raise InvalidJob("unique_for= needs unique= (True or a key)")
        if meta is not None and not isinstance(meta, dict):
            raise InvalidJob(f"meta must be a dict, got {type(meta).__name__}")
        return cls(
            priority=priority,
            after=_ids(after),
            exclusive=_names(exclusive, "exclusive groups"),
            incompatible=_names(incompatible, "incompatible names"),
            lane=lane,
            stop_on_lane_error=bool(stop_on_lane_error),
            timeout=_seconds(timeout, "timeout", allow_zero=False),
            retries=retries,
            retry_delay=_seconds(retry_delay, "retry_delay") or 0.0,
            backoff=backoff_value,
            at=start_at,
            expires_at=expires_at,
            unique=unique_key,
            unique_for=_seconds(unique_for, "unique_for"),
            meta=dict(meta or {}),
        )

    def replace(self, **changes: Any) -> JobOptions:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _dt(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A snapshot of one job.

    Set by the user at put: id, task, args, kwargs, priority, lane, after, exclusive,
    incompatible, meta. Set by conveyor: status, attempts, worker, submitted, started, ended,
    runtime (seconds of the last attempt), result, error (``"Type: message"`` of a failure, or
    why a job was cancelled) and traceback.
    """

    id: str
    task: str
    status: Status
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    lane: str | int | None = None
    after: tuple[str, ...] = ()
    exclusive: tuple[str, ...] = ()
    incompatible: tuple[str, ...] = ()
    attempts: int = 0
    worker: str | None = None
    submitted: datetime | None = None
    started: datetime | None = None
    ended: datetime | None = None
    runtime: float | None = None
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The record as a plain dict (status as its string value)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["status"] = self.status.value
        return data

    @staticmethod
    def timestamp(value: float | None) -> datetime | None:
        """Epoch seconds to an aware UTC datetime (None stays None)."""
        return _dt(value)
