"""Backends by URL scheme, each imported only when a queue asks for it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
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

        path = sqlite_path(url)
        secret = settings.secret.get_secret_value() if settings.secret else None
        serializer = Serializer(settings.serializer or "json", secret)
        backend = SQLiteBackend(
            path, clock=clock, events=events, max_size=settings.max_size,
            serializer=serializer, lease=settings.lease,
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


def sqlite_path(url: str) -> str:
    """The file a ``sqlite:`` URL names, as SQLAlchemy reads them: ``sqlite:///jobs.db`` is
    ``jobs.db`` in the working directory, ``sqlite:////var/lib/jobs.db`` is ``/var/lib/jobs.db``.

    A URL without the ``//`` (``sqlite:jobs.db``, ``sqlite:/var/jobs.db``) is refused, saying
    how to write it: one spelling per file, never a file named after part of the URL."""
    rest = url[len("sqlite:") :]
    if not rest.startswith("//"):
        raise ConveyorError(
            f"queue URL {url!r} lacks the // after sqlite:; write sqlite:///{rest} (three"
            " slashes, then the path: sqlite:///jobs.db is jobs.db in the working directory,"
            " sqlite:////var/lib/jobs.db the absolute path /var/lib/jobs.db)"
        )
    path = unquote(rest[2:].split("?", 1)[0])
    path = "/" + path.lstrip("/") if path.startswith("//") else path.lstrip("/")
    if not path:
        raise ConveyorError(
            f"{url!r} names no file; use sqlite:///relative.db or sqlite:////absolute/path.db"
        )
    return path
