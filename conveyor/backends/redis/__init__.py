"""The distributed backend: jobs in Redis, every rule one Lua script (``pip install
'conveyor[redis]'``).

Modules, one concept each: ``backend`` (the protocol's methods), ``lua/engine.lua`` and
``lua/engine_end.lua`` (the rules, the engine every backend shares), ``scripts`` (loading and
calling the Lua), ``keys`` (the key schema), ``connection`` (the client, errors, a step's
events), ``decode`` (records), ``waiting`` (version, wait, events of other processes),
``reading`` (records, counts, admin), ``registry`` (workers, leases)."""

from __future__ import annotations

from conveyor.backends.redis.backend import RedisBackend
from conveyor.backends.redis.connection import RETRY_WAIT

__all__ = ["RETRY_WAIT", "RedisBackend"]
