"""The Lua of the Redis backend, as one Redis function library.

The library is the engine (``lua/engine.lua``) followed by each entry script (``lua/<entry>.lua``)
registered as a function ``conveyor_<version>_<entry>`` that first calls the engine's ``begin``.
It is loaded once per server (``FUNCTION LOAD``) and called by name (``FCALL``): the engine's
functions are built once, at load, not at every call as a script sent with EVAL/EVALSHA would
rebuild them (measured: about 30 us of closures per call, against 3 us for the call itself).
``<version>`` is a digest of the library's text, so two versions of conveyor share a server
without clashing. A server that lost the library (a restart without persistence, a
``FUNCTION FLUSH``) answers "Function not found": the library is loaded again and the call
made again (:meth:`Library.call`).
"""

from __future__ import annotations

import functools
import hashlib
import threading
from importlib import resources
from typing import Any

import redis

#: the entry scripts, one per state change (``lua/<name>.lua``)
ENTRIES = (
    "submit", "claim", "requeue", "cancel", "heartbeat", "recover", "read", "pop", "forget",
    "purge", "retry",
)  # fmt: skip
_VERSION = "@VERSION@"


@functools.cache
def source(name: str) -> str:
    """The text of ``lua/<name>.lua``."""
    return (resources.files(__package__) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


@functools.cache
def library() -> tuple[str, str]:
    """The library's version (a digest of its text) and its text."""
    parts = ["#!lua name=conveyor_" + _VERSION, source("engine")]
    for entry in ENTRIES:
        parts.append(
            f"redis.register_function('{function_name(_VERSION, entry)}', function(KEYS, ARGV)\n"
            f"begin(ARGV)\n{source(entry)}\nend)"
        )
    template = "\n".join(parts)
    version = hashlib.sha1(template.encode(), usedforsecurity=False).hexdigest()[:12]
    return version, template.replace(_VERSION, version)


def function_name(version: str, entry: str) -> str:
    """The name the library registers ``entry`` under."""
    return f"conveyor_{version}_{entry}"


class Library:
    """The library on one client: loaded if the server lacks it, each entry called by name."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self.version, self.text = library()
        self.names = {entry: function_name(self.version, entry) for entry in ENTRIES}
        self._lock = threading.Lock()
        self.load()

    def load(self) -> None:
        """Load the library unless the server has it already."""
        with self._lock:
            try:
                self._client.function_load(self.text)
            except redis.ResponseError as exc:
                if "already exists" not in str(exc):
                    raise

    def call(self, entry: str, key: str, args: list[Any]) -> Any:
        """``FCALL`` the function of ``entry`` with one key (the queue's: it routes the call
        to the queue's slot) and ``args``; the library is loaded again if the server lost it."""
        name = self.names[entry]
        try:
            return self._client.fcall(name, 1, key, *args)
        except redis.ResponseError as exc:
            if "Function not found" not in str(exc):
                raise
        self.load()
        return self._client.fcall(name, 1, key, *args)
