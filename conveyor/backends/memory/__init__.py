"""The in-process backend: the memory engine (:mod:`.engine`) under one lock (:mod:`.backend`).

Modules: ``state`` (the job and lane records), ``engine`` (the rules, the same engine as
SQLite's under the same names), ``admin`` (retrying an ended job, purging), ``locked`` (the
lock, versions, wait and wake, callbacks), ``reads`` (records, counts, pop, forget), ``backend``
(:class:`MemoryBackend`: the protocol's state changes), ``locking`` (the lock itself).
"""

from conveyor.backends.memory.backend import MemoryBackend

__all__ = ["MemoryBackend"]
