"""The one settings class. Each value comes, first found, from: the keyword argument given to
``Queue``; the environment variable ``<QUEUE NAME>_<SETTING>`` for a named queue; the
environment variable ``CONVEYOR_<SETTING>``; the default written here.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from conveyor.errors import ConveyorError

#: seconds a claimed job stays claimed without a heartbeat (durable backends)
DEFAULT_LEASE = 60.0
#: seconds a stopping worker waits for its running jobs
DEFAULT_GRACEFUL_TIMEOUT = 30.0
#: jobs a worker on a durable backend claims beyond its free slots while its jobs are short
DEFAULT_PREFETCH = 8


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
    secret: SecretStr | None = Field(None, description="HMAC key signing every payload")

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
