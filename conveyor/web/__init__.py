"""The HTTP API of a queue, its event stream and Prometheus metrics (``pip install
'conveyor[web]'``); ``conveyor dashboard`` serves it.

::

    app.py      create_app(queue, token=...): the routes, auth, errors
    models.py   the pydantic bodies and responses (the OpenAPI spec)
    feed.py     the live event feed, one watcher per app on the Backend protocol
    metrics.py  /metrics: counts, depth, workers, wait and run time histograms
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from conveyor.queue import Queue

__all__ = ["create_app"]

#: the packages of the ``web`` extra
WEB_PACKAGES = frozenset({"fastapi", "starlette", "uvicorn", "sse_starlette", "prometheus_client"})


def create_app(queue: Queue, *, token: str | None = None, **options: Any) -> FastAPI:
    """The HTTP API of ``queue`` (see :func:`conveyor.web.app.create_app`)."""
    try:
        from conveyor.web.app import create_app as build
    except ImportError as exc:
        from conveyor.errors import MissingExtra

        if (exc.name or "").partition(".")[0] not in WEB_PACKAGES:
            raise

        raise MissingExtra(exc.name or "fastapi", "web", "the HTTP API") from exc
    return build(queue, token=token, **options)
