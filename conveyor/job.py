"""The job model: statuses, validated put options, and the JobRecord snapshot."""

from __future__ import annotations

import dataclasses
import json
import math
import traceback
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

#: the longest duration an option may give (delay, timeout, expires, retry_delay, unique_for),
#: and how far ahead ``at`` may lie: 100 years, within what every backend's clock and every
#: blocking wait can hold (``threading.TIMEOUT_MAX`` is about 292 years)
MAX_SECONDS = 100 * 365.25 * 86400
#: integers (priority, an int lane) are stored as 64-bit signed integers
MIN_INT, MAX_INT = -(2**63), 2**63 - 1
#: the most retries a job may ask for
MAX_RETRIES = 1_000_000


#: how a job stands, as a caller waiting for its result reads it: status, result, error
Outcome = tuple[Status, Any, "str | None"]


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What went wrong in one attempt, in a form that crosses processes."""

    type: str
    message: str
    traceback: str | None = None

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type

    @classmethod
    def of(cls, exc: BaseException) -> ErrorInfo:
        """Describe ``exc`` so it can cross processes: type, message, traceback text."""
        text = "".join(traceback.format_exception(exc))
        return cls(type(exc).__qualname__, str(exc), text)


def check_name(value: Any, what: str) -> str:
    """Return ``value`` if it can name a job, group, lane or key on every backend: a non-empty
    ``str`` that UTF-8 can encode (no lone surrogate) and holds no NUL; else raise InvalidJob."""
    if not isinstance(value, str) or not value:
        raise InvalidJob(f"{what} must be a non-empty string, got {_short(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidJob(
            f"{what} must be valid text, got {_short(value)} (a lone surrogate at index "
            f"{exc.start}: UTF-8 cannot store it)"
        ) from None
    if "\x00" in value:
        raise InvalidJob(f"{what} must not contain NUL characters, got {_short(value)}")
    return value


def status_of(value: Status | str) -> Status:
    """``value`` as a Status; InvalidJob naming the statuses if it is none."""
    try:
        return Status(value)
    except ValueError:
        known = ", ".join(s.value for s in Status)
        raise InvalidJob(f"unknown status {value!r} (one of {known})") from None


def purge_statuses(value: Status | str | Iterable[Status | str]) -> set[Status]:
    """The statuses a purge names: one, or several."""
    if isinstance(value, str):
        return {status_of(value)}
    return {status_of(s) for s in value}


def age(value: Any) -> float:
    """An ``older_than``: a number of seconds, at least 0; InvalidJob otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidJob(f"older_than must be a number of seconds, got {value!r}")
    if not value >= 0:
        raise InvalidJob(f"older_than must be >= 0 seconds, got {value!r}")
    return float(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _names(value: str | Iterable[str] | None, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (check_name(value, what),)
    return tuple(check_name(name, what) for name in value)


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
        ids.append(check_name(item_id, "a dependency id in after="))
    return tuple(ids)


def _number(value: Any, what: str) -> float:
    """A finite float from an int or float (not a bool); else InvalidJob."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidJob(f"{what} must be a number of seconds, got {_short(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InvalidJob(f"{what} must be a finite number, got {_short(value)}")
    return number


def _seconds(value: float | None, what: str, *, allow_zero: bool = True) -> float | None:
    if value is None:
        return None
    seconds = _number(value, what)
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise InvalidJob(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    if seconds > MAX_SECONDS:
        raise InvalidJob(
            f"{what} must be at most {MAX_SECONDS:.0f} seconds (100 years), got {value!r}"
        )
    return seconds


def _timestamp(value: datetime | float | None, what: str, now: float) -> float | None:
    """Epoch seconds of an ``at``/``expires`` moment, no further ahead than MAX_SECONDS."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.astimezone()  # naive means local time, as datetime.now() gives
        timestamp = value.timestamp()
    else:
        timestamp = _number(value, what)
        if timestamp < 0:
            raise InvalidJob(f"{what} must be epoch seconds >= 0, got {value!r}")
    if timestamp > now + MAX_SECONDS:
        raise InvalidJob(
            f"{what} must lie at most 100 years ({MAX_SECONDS:.0f} seconds) ahead, got {value!r}"
        )
    return timestamp


def _integer(value: Any, what: str, low: int, high: int, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJob(f"{what} must be an int{hint}, got {_short(value)}")
    if not low <= value <= high:
        raise InvalidJob(f"{what} must be between {low} and {high}, got {_short(value)}")
    return value


def check_meta(meta: Any) -> dict[str, Any]:
    """A copy of ``meta`` if it is JSON data (a dict with ``str`` keys of str, int, float,
    bool, None, lists and dicts, every number finite), which every backend stores as it is."""
    if not isinstance(meta, dict):
        raise InvalidJob(f"meta must be a dict, got {type(meta).__name__}")
    try:
        text = json.dumps(meta, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
        copy: dict[str, Any] = json.loads(text)
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is one
        raise InvalidJob(f"meta must be JSON data (str keys, finite numbers): {exc}") from None
    if copy != meta or _has_foreign_keys(meta):
        raise InvalidJob(
            "meta must be JSON data: keys must be str, and values str, int, float, bool, "
            "None, lists or dicts (tuples and subclasses do not come back as they went in)"
        )
    return copy


def _has_foreign_keys(value: Any) -> bool:
    if isinstance(value, dict):
        return any(type(key) is not str or _has_foreign_keys(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_foreign_keys(item) for item in value)
    return False


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
        _integer(priority, "priority", MIN_INT, MAX_INT, " (lower runs first)")
        _integer(retries, "retries", 0, MAX_RETRIES)
        if isinstance(lane, int) and not isinstance(lane, bool):
            _integer(lane, "lane", MIN_INT, MAX_INT)
        elif lane is not None:
            if not isinstance(lane, str):
                raise InvalidJob(f"lane must be a str or an int, got {_short(lane)}")
            check_name(lane, "lane")
        if delay is not None and at is not None:
            raise InvalidJob("give delay= or at=, not both")
        backoff_value = _number(backoff, "backoff")
        if backoff_value < 1:
            raise InvalidJob(f"backoff must be >= 1 (a multiplier per retry), got {backoff!r}")
        start_at = _timestamp(at, "at", now)
        delay_s = _seconds(delay, "delay")
        if delay_s:
            start_at = now + delay_s
        expires_at: float | None
        if isinstance(expires, datetime):
            expires_at = _timestamp(expires, "expires", now)
        else:
            relative = _seconds(expires, "expires")
            expires_at = None if relative is None else now + relative
        unique_key: str | None
        if unique is None or unique is False:
            unique_key = None
        elif unique is True:
            unique_key = ""  # the queue derives the key from task and arguments
        elif isinstance(unique, str) and unique:
            unique_key = check_name(unique, "unique")
        else:
            raise InvalidJob(f"unique must be True or a non-empty key string, got {unique!r}")
        if unique_for is not None and unique_key is None:
            raise InvalidJob("unique_for= needs unique= (True or a key)")
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
            meta={} if meta is None else check_meta(meta),
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
    why a job was cancelled) and traceback. Set by the job (``conveyor.progress``): progress
    (0 to 1) and progress_message, of the latest attempt (None until it reports any; cleared
    when an attempt starts, kept when it ends).
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
    progress: float | None = None
    progress_message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The record as a plain dict (status as its string value)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["status"] = self.status.value
        return data

    @staticmethod
    def timestamp(value: float | None) -> datetime | None:
        """Epoch seconds to an aware UTC datetime (None stays None)."""
        return _dt(value)
