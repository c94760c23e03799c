"""The Lua scripts of the Redis backend: the engine (``lua/engine.lua``) in front of each entry
script, registered once per client and called by SHA (redis-py's ``Script`` loads a script
again when the server answers NOSCRIPT, e.g. after a restart or SCRIPT FLUSH)."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from redis.commands.core import Script

#: the entry scripts, one per state change (``lua/<name>.lua``)
ENTRIES = (
    "submit", "claim", "requeue", "cancel", "heartbeat", "recover", "read", "pop", "forget",
    "purge", "retry",
)  # fmt: skip


@functools.cache
def source(name: str) -> str:
    """The text of ``lua/<name>.lua``."""
    return (resources.files(__package__) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


@functools.cache
def text(entry: str) -> str:
    """What runs for ``entry``: the engine, then the entry script."""
    return source("engine") + "\n" + source(entry)


class Scripts:
    """The entry scripts registered on one client (each call is one EVALSHA)."""

    def __init__(self, client: Any) -> None:
        self.by_name: dict[str, Script] = {
            name: client.register_script(text(name)) for name in ENTRIES
        }

    def __getitem__(self, name: str) -> Script:
        return self.by_name[name]
