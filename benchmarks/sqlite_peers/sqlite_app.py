"""The importable app of benchmarks/sqlite.py: the no-op job, the Huey app, the conveyor worker.

Worker processes import this module by name (``sqlite_app``, with ``benchmarks/sqlite_peers`` on
``PYTHONPATH``): conveyor finds the job as ``sqlite_app:noop`` (every conveyor queue here
allows this module: ``ALLOW_MODULES``); ``huey_consumer`` loads ``sqlite_app.huey``. Where each
queue's file lives comes from the environment, so that every run can use a fresh temporary
directory:

- ``BENCH_HUEY_DB``: the Huey SQLite file (``huey`` is None without it), and
  ``BENCH_HUEY_SYNCHRONOUS``: ``normal`` to give Huey conveyor's ``PRAGMA synchronous``
  (unset: Huey's default, SQLite's FULL: an fsync per commit).
- ``BENCH_CONVEYOR_URL``: the conveyor queue URL; ``q`` (a producer queue, for
  ``conveyor worker sqlite_app:q``) is None without it.
"""

from __future__ import annotations

import os
from typing import Any

#: what conveyor queues on the benchmark's file may run: this module's functions (``noop``)
ALLOW_MODULES = [__name__]
HUEY_DB_VAR = "BENCH_HUEY_DB"
HUEY_SYNCHRONOUS_VAR = "BENCH_HUEY_SYNCHRONOUS"
CONVEYOR_URL_VAR = "BENCH_CONVEYOR_URL"


def noop(x: Any) -> Any:
    """The job of both queues: return the argument."""
    return x


def build_huey(filename: str, synchronous: str | None = None) -> tuple[Any, Any]:
    """A ``SqliteHuey`` on ``filename`` (results stored) and ``noop`` registered as its task.

    The task's name is ``sqlite_app.noop`` whichever process builds it, so a producer's app and
    the consumer's app agree. ``synchronous="normal"`` sets ``PRAGMA synchronous=NORMAL`` on
    every connection Huey opens, as conveyor does (Huey itself offers only FULL or OFF).
    """
    from huey import SqliteHuey  # type: ignore[import-untyped]
    from huey.storage import SqliteStorage  # type: ignore[import-untyped]

    storage_class = SqliteStorage
    if synchronous == "normal":

        class NormalSyncStorage(SqliteStorage):  # type: ignore[misc]
            def _create_connection(self) -> Any:
                conn = super()._create_connection()
                conn.execute("PRAGMA synchronous=NORMAL")
                return conn

        storage_class = NormalSyncStorage
    elif synchronous is not None:
        raise ValueError(f"synchronous must be None or 'normal', got {synchronous!r}")
    huey = SqliteHuey(filename=filename, results=True, immediate=False, storage_class=storage_class)
    return huey, huey.task()(noop)


def run_conveyor_worker(url: str) -> None:
    """A queue on ``url`` with one embedded worker thread: run jobs until none is waiting,
    scheduled or running, then stop."""
    import conveyor

    q = conveyor.Queue(url, workers=1, allow_modules=ALLOW_MODULES)
    try:
        q.wait()
    finally:
        q.close()


huey: Any = None
huey_noop: Any = None
if HUEY_DB_VAR in os.environ:
    huey, huey_noop = build_huey(
        os.environ[HUEY_DB_VAR], os.environ.get(HUEY_SYNCHRONOUS_VAR) or None
    )

q: Any = None
if CONVEYOR_URL_VAR in os.environ:
    import conveyor

    q = conveyor.Queue(os.environ[CONVEYOR_URL_VAR], workers=0, allow_modules=ALLOW_MODULES)
