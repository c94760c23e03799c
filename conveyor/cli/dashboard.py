"""``conveyor dashboard APP``: serve APP's queue over HTTP (:mod:`conveyor.web`) with uvicorn."""

from __future__ import annotations

import ipaddress
import signal

import click

import conveyor
from conveyor.cli.app import app_argument, spec_of
from conveyor.errors import ConveyorError

#: the environment variable that may hold the token
TOKEN_ENV = "CONVEYOR_TOKEN"


def is_loopback(host: str) -> bool:
    """True if ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> str:
    """What to say on start; a UsageError for a host others can reach with no token."""
    if token:
        return f"changes (POST) need the bearer token; reads are open to whoever reaches {host}"
    if not is_loopback(host):
        raise click.UsageError(
            f"no token: the API would let anyone who reaches {host} change the queue; give"
            f" --token (or {TOKEN_ENV}), or bind to 127.0.0.1"
        )
    return "no token: bound to loopback only, so only this machine can reach it"


@click.command()
@app_argument
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    default=None,
    help=f"Bearer token that changes (POST) need (or {TOKEN_ENV}). Without one the server"
    " binds to loopback only.",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="warning",
    show_default=True,
    help="uvicorn's log level.",
)
def dashboard(app: conveyor.Queue, host: str, port: int, token: str | None, log_level: str) -> None:
    """Serve APP's queue over HTTP: the JSON API under /api, server-sent events at
    /api/events, Prometheus metrics at /metrics, the OpenAPI spec at /openapi.json.

    On a durable queue (SQLite, Redis) jobs run in `conveyor worker` processes; on memory://
    the queue's own workers run them in this process.

    \b
    APP is module:variable naming a conveyor.Queue, e.g. myapp:queue.
    """
    if token == "":
        raise click.BadParameter("the token must not be empty", param_hint="--token")
    note = check_binding(host, token)
    try:
        import uvicorn

        from conveyor.web import create_app
    except ImportError as exc:
        raise click.ClickException(
            f"conveyor dashboard needs the web extra ({exc}): pip install 'conveyor[web]'"
        ) from None
    queue = app
    if queue.durable:
        queue.embedded.stop(wait=False)  # a producer: `conveyor worker` runs the jobs
    try:
        web = create_app(queue, token=token)
    except ConveyorError as exc:
        raise click.ClickException(str(exc)) from exc
    runs = "`conveyor worker` processes" if queue.durable else "this process's workers"
    click.echo(
        f"conveyor dashboard: {spec_of(queue)} ({queue.url}) at http://{host}:{port}/ ;"
        f" jobs run in {runs}; {note}",
        err=True,
    )
    # uvicorn stops gracefully on SIGINT and SIGTERM, then raises the signal again for the
    # handler it found: this one, so that a stop asked for ends the command with status 0
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, lambda _signum, _frame: None)
    try:
        uvicorn.run(web, host=host, port=port, log_level=log_level)
    finally:
        queue.close(wait=False)
    click.echo("conveyor dashboard: stopped", err=True)
