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

SCHEMES = ("memory", "sqlite", "redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")

log = logging.getLogger("conveyor")


def from_url(
    url: str,
    *,
    clock: Clock,
    events: EventBus,
    settings: Settings,
    name: str = "default",
) -> Backend:
    """Build the backend that ``url`` names: ``memory://``, ``sqlite:///path/to.db``, or
    ``redis://host:port/db`` (also ``rediss://``, ``unix:///path/to.sock?db=0``, and
    ``redis+cluster://host:port`` for a Redis Cluster), where the queue ``name`` keeps its
    jobs under its own keys."""
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
    if scheme in REDIS_SCHEMES:
        return _redis(url, clock=clock, events=events, settings=settings, name=name)
    raise ConveyorError(
        f"unsupported queue URL {url!r}; this version supports: "
        + ", ".join(f"{s}://" for s in SCHEMES)
    )


def _redis(url: str, *, clock: Clock, events: EventBus, settings: Settings, name: str) -> Backend:
    """The Redis backend (the extra ``conveyor[redis]``)."""
    try:
        from conveyor.backends.redis import RedisBackend
    except ImportError as exc:
        raise ConveyorError(
            f"queue URL {url.split('@')[-1]!r} needs the Redis client: pip install"
            f" 'conveyor[redis]' ({exc})"
        ) from None
    from conveyor.serializer import Serializer

    secret = settings.secret.get_secret_value() if settings.secret else None
    serializer = Serializer(settings.serializer or "json", secret)
    backend = RedisBackend(
        url, name=name, clock=clock, events=events, max_size=settings.max_size,
        serializer=serializer, lease=settings.lease, result_ttl=settings.result_ttl,
    )  # fmt: skip
    if not serializer.trusts_reads:
        log.warning(
            "queue %r stores pickle payloads in Redis without a secret: whoever can write to"
            " the server can make its workers run any code (unpickling runs code); set"
            " secret=... (CONVEYOR_SECRET) to sign and check every job",
            name,
        )
    return backend


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
