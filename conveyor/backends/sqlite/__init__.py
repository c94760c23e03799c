"""The durable backend: one SQLite file (WAL), shared by producers and worker processes.

Modules, one concept each: ``backend`` (the protocol's methods), ``engine`` (the rules, the
engine every backend shares), ``schema`` (tables, queries, stored plans), ``storage`` (the
file, transactions, waits), ``decode`` (claimed rows and records), ``reading`` (records,
counts, events), ``waiting`` (results, callbacks, idle), ``registry`` (workers, leases),
``admin`` (retry, purge).
"""

from __future__ import annotations

from conveyor.backends.sqlite.backend import SQLiteBackend
from conveyor.backends.sqlite.engine import LOST_LEASE_ALLOWANCE
from conveyor.backends.sqlite.registry import process_identity, process_lives
from conveyor.backends.sqlite.storage import BUSY_TIMEOUT
from conveyor.settings import DEFAULT_FILE_MODE

__all__ = [
    "BUSY_TIMEOUT",
    "DEFAULT_FILE_MODE",
    "LOST_LEASE_ALLOWANCE",
    "SQLiteBackend",
    "process_identity",
    "process_lives",
]
