"""The one settings class. Each value comes, first found, from: the keyword argument given to
``Queue``; the environment variable ``<QUEUE NAME>_<SETTING>`` for a named queue; the
environment variable ``CONVEYOR_<SETTING>``; the default written here.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from conveyor.errors import ConveyorError

#: seconds a claimed job stays claimed without a heartbeat (durable backends)
DEFAULT_LEASE = 60.0
#: seconds a stopping worker waits for its running jobs
DEFAULT_GRACEFUL_TIMEOUT = 30.0
#: jobs a worker on a durable backend claims beyond its free slots while its jobs are short
DEFAULT_PREFETCH = 8
#: permissions of a database file a durable backend creates (its -wal and -shm follow it)
DEFAULT_FILE_MODE = 0o600


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
        try:
            if queue_name != "default":
                prefix = queue_name.upper().replace("-", "_").replace(".", "_") + "_"
                named = {
                    name: os.environ[prefix + name.upper()]
                    for name in cls.model_fields
                    if prefix + name.upper() in os.environ
                }
                values = {**named, **values}
            return cls(**values)
        except ValidationError as exc:
            raise ConveyorError(f"invalid settings: {exc}") from exc


def check_module_pattern(item: Any) -> str:
    """A module name (``"myapp.jobs"``) or a package's submodules (``"myapp.*"``), stripped;
    raises ValueError for anything else (there is no pattern for every module)."""
    if not isinstance(item, str):
        raise ValueError(f"a module name must be a str, got {item!r}")
    name = item.strip()
    dotted = name.removesuffix(".*")
    if not dotted or not all(part.isidentifier() for part in dotted.split(".")):
        raise ValueError(
            f"{item!r} is not a module name: give names such as 'myapp.jobs', or 'myapp.*' for "
            "every submodule of the package myapp"
        )
    return name
