"""The durable backend: one SQLite file (WAL), shared by producers and worker processes."""

from __future__ import annotations

from conveyor.backends.sqlite.backend import (
    BUSY_TIMEOUT,
    LOST_LEASE_ALLOWANCE,
    SQLiteBackend,
    envelope,
    load_error,
    process_identity,
    process_lives,
)
from conveyor.settings import DEFAULT_FILE_MODE

__all__ = [
    "BUSY_TIMEOUT",
    "DEFAULT_FILE_MODE",
    "LOST_LEASE_ALLOWANCE",
    "SQLiteBackend",
    "envelope",
    "load_error",
    "process_identity",
    "process_lives",
]
