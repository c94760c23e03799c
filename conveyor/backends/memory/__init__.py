"""The in-process backend: the memory engine (:mod:`.engine`) under one lock (:mod:`.backend`).

Modules: ``state`` (the job, lane and latch records), ``engine`` (the rules, the same engine
as SQLite's under the same names), ``admin`` (retrying an ended job, purging), ``locked`` (the
lock, wake-ups and callbacks), ``reads`` (records, counts, waits), ``backend``
(:class:`MemoryBackend`: the protocol's state changes), ``locking`` (the lock itself).
"""

from conveyor.backends.memory.backend import MemoryBackend

__all__ = ["MemoryBackend"]
