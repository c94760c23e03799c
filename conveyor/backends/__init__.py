"""Backends by URL scheme, each imported only when a queue asks for it."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from conveyor.errors import ConveyorError

if TYPE_CHECKING:
    from conveyor.backends.base import Backend
    from conveyor.clock import Clock
    from conveyor.events import EventBus
    from conveyor.settings import Settings

SCHEMES = ("memory",)


def from_url(url: str, *, clock: Clock, events: EventBus, settings: Settings) -> Backend:
    """Build the backend that ``url`` names (``memory://``)."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from conveyor.backends.memory import MemoryBackend

        return MemoryBackend(clock=clock, events=events, max_size=settings.max_size)
    raise ConveyorError(
        f"unsupported queue URL {url!r}; this version supports: "
        + ", ".join(f"{s}://" for s in SCHEMES)
    )
