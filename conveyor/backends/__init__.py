"""Backends by URL scheme, each imported only when a queue asks for it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from conveyor.errors import ConveyorError

if TYPE_CHECKING:
    from conveyor.backends.base import Backend
    from conveyor.clock import Clock
    from conveyor.events import EventBus
    from conveyor.settings import Settings

SCHEMES = ("memory", "sqlite")

log = logging.getLogger("conveyor")


def from_url(
    url: str,
    *,
    clock: Clock,
    events: EventBus,
    settings: Settings,
    resolver: Callable[[str], Callable[..., Any]] | None = None,
) -> Backend:
    """Build the backend that ``url`` names: ``memory://`` or ``sqlite:///path/to.db``."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme == "memory":
        from conveyor.backends.memory import MemoryBackend

        return MemoryBackend(clock=clock, events=events, max_size=settings.max_size)
    if scheme == "sqlite":
        from conveyor.backends.sqlite import SQLiteBackend
        from conveyor.serializer import Serializer

        # sqlite:///relative/path.db, sqlite:////absolute/path.db (as SQLAlchemy reads them)
        path = unquote(url[len("sqlite://") :].split("?", 1)[0])
        path = "/" + path.lstrip("/") if path.startswith("//") else path.lstrip("/")
        if not path:
            raise ConveyorError(
                f"{url!r} names no file; use sqlite:///relative.db or sqlite:////absolute/path.db"
            )
        secret = settings.secret.get_secret_value() if settings.secret else None
        serializer = Serializer(settings.serializer or "json", secret)
        backend = SQLiteBackend(
            path, clock=clock, events=events, max_size=settings.max_size,
            serializer=serializer, resolver=resolver, lease=settings.lease,
            result_ttl=settings.result_ttl, file_mode=settings.file_mode,
        )  # fmt: skip
        if not serializer.trusts_reads:
            log.warning(
                "queue %s stores pickle payloads without a secret: whoever can write %s can "
                "make its workers run any code (unpickling runs code); set secret=... "
                "(CONVEYOR_SECRET) to sign and check every job",
                url,
                path,
            )
        return backend
    raise ConveyorError(
        f"unsupported queue URL {url!r}; this version supports: "
        + ", ".join(f"{s}://" for s in SCHEMES)
    )
