"""The settings' defaults and what each setting takes: plain constants, imported by the light
:mod:`conveyor.settings` and by the pydantic model in :mod:`conveyor.settings_model` alike."""

from __future__ import annotations

from typing import Any

#: seconds a claimed job stays claimed without a heartbeat (durable backends)
DEFAULT_LEASE = 60.0
#: seconds a stopping worker waits for its running jobs
DEFAULT_GRACEFUL_TIMEOUT = 30.0
#: jobs a worker on a durable backend claims beyond its free slots while its jobs are short
DEFAULT_PREFETCH = 8
#: permissions of a database file a durable backend creates (its -wal and -shm follow it)
DEFAULT_FILE_MODE = 0o600

#: what each setting takes, as error messages say it
ALLOWED = {
    "lease": "a number of seconds > 0",
    "graceful_timeout": "a number of seconds >= 0",
    "max_jobs_per_process": "an int >= 1 (unset: never)",
    "prefetch": "an int >= 0 (0: no batching)",
    "max_size": "an int >= 1 (unset: unbounded)",
    "result_ttl": "a number of seconds > 0 (unset: forever)",
    "serializer": "'json', 'pickle' or 'msgpack'",
    "secret": "a string",
    "allow_modules": "module names: a list such as ['myapp.jobs', 'math'], or in an environment"
    " variable myapp.jobs,math",
    "file_mode": "a mode from 0o600 to 0o777 (in an environment variable octal, such as 0640)",
}


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
