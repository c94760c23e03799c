"""The settings model: a pydantic-settings class, imported only when a queue is built (see
:mod:`conveyor.settings`, which holds the defaults and re-exports :class:`Settings`). Each value
comes, first found, from: the keyword argument given to ``Queue``; the environment variable
``<QUEUE NAME>_<SETTING>`` for a named queue; the environment variable ``CONVEYOR_<SETTING>``;
the default.

A bad value raises :class:`conveyor.ConveyorError` with conveyor's own short message: the
setting, the value, where it came from, and what is allowed.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from conveyor.defaults import (
    ALLOWED,
    DEFAULT_FILE_MODE,
    DEFAULT_GRACEFUL_TIMEOUT,
    DEFAULT_LEASE,
    DEFAULT_PREFETCH,
    check_module_pattern,
)
from conveyor.errors import ConveyorError

#: the longest value an error message repeats
SHOWN_VALUE = 60


class Settings(BaseSettings):
    """Settings of one queue and its workers."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="forbid", frozen=True)

    lease: float = Field(DEFAULT_LEASE, gt=0, description="seconds a claim lasts unrenewed")
    graceful_timeout: float = Field(
        DEFAULT_GRACEFUL_TIMEOUT, ge=0, description="seconds to let running jobs end on stop"
    )
    max_jobs_per_process: int | None = Field(
        None, gt=0, description="replace a worker process after this many jobs (None: never)"
    )
    prefetch: int = Field(
        DEFAULT_PREFETCH,
        ge=0,
        description="jobs a worker claims beyond its free slots while jobs are short (durable)",
    )
    max_size: int | None = Field(
        None, gt=0, description="jobs not yet started before put waits (None: unbounded)"
    )
    result_ttl: float | None = Field(
        None, gt=0, description="seconds a result lives on durable backends (None: forever)"
    )
    serializer: Literal["json", "pickle", "msgpack"] | None = Field(
        None, description="payload encoding on durable backends (None: json)"
    )
    secret: SecretStr | None = Field(None, description="HMAC key signing every job and payload")
    allow_modules: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="modules whose functions workers of a durable queue may run besides its "
        'registered tasks ("pkg.*": every submodule of pkg)',
    )
    file_mode: int = Field(
        DEFAULT_FILE_MODE,
        description="permissions of a database file the queue creates (an existing file keeps "
        "its own); its -wal and -shm files follow it",
    )

    @field_validator("allow_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: Any) -> Any:
        """``"a.b, c.*"`` (an environment variable; a JSON list works too) -> ``("a.b",
        "c.*")``; check each name."""
        if isinstance(value, str) and value.strip().startswith("["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list of module names: {exc}") from None
        elif isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple | set | frozenset):
            raise ValueError(f"a list of module names, got {type(value).__name__}")
        return tuple(check_module_pattern(item) for item in value)

    @field_validator("file_mode", mode="before")
    @classmethod
    def _octal_mode(cls, value: Any) -> Any:
        """``"0640"`` or ``"0o640"`` (an environment variable) is octal; an int is taken as is
        (write ``0o640`` in Python). The owner must be able to read and write."""
        if isinstance(value, str):
            text = value.strip().lower().removeprefix("0o")
            try:
                value = int(text, 8)
            except ValueError:
                raise ValueError(f"an octal mode such as 0600, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"an int mode such as 0o600, got {value!r}")
        if not 0 <= value <= 0o777 or value & 0o600 != 0o600:
            raise ValueError(
                f"a mode from 0o600 to 0o777 (the owner reads and writes), got {value:#o}"
            )
        return value

    @classmethod
    def load(cls, queue_name: str = "default", **given: Any) -> Settings:
        """Build settings from arguments, then ``<NAME>_*`` and ``CONVEYOR_*`` variables."""
        unknown = sorted(set(given) - set(cls.model_fields))
        if unknown:
            raise TypeError(
                f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(cls.model_fields)}"
            )
        values = {k: v for k, v in given.items() if v is not None}
        sources = {name: "keyword argument" for name in values}
        if queue_name != "default":
            prefix = queue_name.upper().replace("-", "_").replace(".", "_") + "_"
            named = {
                name: os.environ[prefix + name.upper()]
                for name in cls.model_fields
                if prefix + name.upper() in os.environ
            }
            sources = {**{name: f"from {prefix}{name.upper()}" for name in named}, **sources}
            values = {**named, **values}
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConveyorError(_explain(exc, sources)) from None
        except SettingsError as exc:  # a variable pydantic-settings could not even read
            raise ConveyorError(f"invalid settings in the environment: {exc}") from None


def _explain(exc: ValidationError, sources: dict[str, str]) -> str:
    """``invalid setting lease = -1 (from CONVEYOR_LEASE): expected a number of seconds > 0``,
    one such clause per bad value: conveyor's words, not pydantic's."""
    clauses = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "?"
        source = sources.get(name) or f"from CONVEYOR_{name.upper()}"
        if error["type"] == "value_error":  # our own validators' messages say it all
            reason = str(error["msg"]).removeprefix("Value error, ")
            clauses.append(f"{name} ({source}): {reason}")
            continue
        value = "<hidden>" if name == "secret" else _shown(error["input"])
        allowed = ALLOWED.get(name, str(error["msg"]))
        clauses.append(f"{name} = {value} ({source}): expected {allowed}")
    if len(clauses) == 1:
        return "invalid setting " + clauses[0]
    return "invalid settings: " + "; ".join(clauses)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_VALUE else text[: SHOWN_VALUE - 3] + "..."
