"""The dashboard page of the HTTP API: ``mount_dashboard(app, queue)`` serves it at ``/``.

The page is plain HTML, CSS and JavaScript modules shipped in ``conveyor/web/static/`` (no
build step, no CDN, no font or script from another host). It reads the API of the same app
(``/api/...``) and its event stream; everything it shows of a job is put in the page as text,
never as markup, and a Content-Security-Policy lets the page load and fetch only from its own
origin.
"""

from __future__ import annotations

import html as markup
import json
import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

if TYPE_CHECKING:
    from fastapi import FastAPI

    from conveyor.queue import Queue

#: the folder of the page's files, inside the package
STATIC = Path(str(resources.files("conveyor.web") / "static"))
#: a value the server fills in the page
SLOT = re.compile(r"\{\{(queue|tasks)\}\}")
#: where the assets are served
PREFIX = "/static"

#: the page may load and fetch from its own origin only; no inline script, no plugin, no frame
POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def queue_label(queue: Queue) -> str:
    """What the page's header says of the queue: its name and its backend's scheme only (a
    URL may hold a password)."""
    scheme, _, _ = queue.url.partition(":")
    return f"{queue.name} \u00b7 {scheme or 'queue'}"


def page(queue: Queue) -> str:
    """The page's HTML, naming the queue and its registered tasks (for the task filter)."""
    text = (STATIC / "index.html").read_text(encoding="utf-8")
    values = {"queue": queue_label(queue), "tasks": json.dumps(sorted(queue.tasks))}
    return SLOT.sub(lambda m: markup.escape(values[m.group(1)], quote=True), text)


def mount_dashboard(app: FastAPI, queue: Queue) -> None:
    """Serve the dashboard of ``queue`` on ``app``: the page at ``/``, its files under
    ``/static``."""
    text = page(queue)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> HTMLResponse:
        return HTMLResponse(text, headers=HEADERS)

    app.mount(PREFIX, Assets(directory=STATIC), name="dashboard-static")


class Assets(StaticFiles):
    """The page's files, with the page's security headers."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(HEADERS)
        return response
