"""``conveyor enqueue APP TASK``: put a job from the command line, its arguments and put
options given as JSON and flags."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

import conveyor
from conveyor import operations
from conveyor.cli.app import app_argument, opened, spec_of
from conveyor.errors import InvalidJob


@click.command()
@app_argument
@click.argument("task_name", metavar="TASK")
@click.option("--args", "args_json", default="[]", help="Positional arguments, a JSON array.")
@click.option("--kwargs", "kwargs_json", default="{}", help="Keyword arguments, a JSON object.")
@click.option("--id", "job_id", default=None, help="The job's id (default: generated).")
@click.option(
    "--after", multiple=True, help="Start only once this job finished (repeat for several)."
)
@click.option("--lane", default=None, help="Run one at a time, in order, with this lane's jobs.")
@click.option(
    "--stop-on-lane-error",
    is_flag=True,
    help="Cancel this job if the job before it in its lane failed or was cancelled.",
)
@click.option("--priority", type=int, default=None, help="Lower runs first (default 0).")
@click.option("--delay", type=float, default=None, help="Start no sooner (seconds).")
@click.option(
    "--at", "at_text", default=None, help="Start no sooner than this ISO 8601 time or epoch."
)
@click.option("--timeout", type=float, default=None, help="Stop an attempt after (seconds).")
@click.option("--retries", type=int, default=None, help="Retries after a failed attempt.")
@click.option("--retry-delay", type=float, default=None, help="Seconds before a retry.")
@click.option("--backoff", type=float, default=None, help="Multiply the retry delay each time.")
@click.option("--expires", type=float, default=None, help="Cancel if not started in (seconds).")
@click.option(
    "--unique", default=None, help="A key: while a job with it is active, return that job."
)
@click.option("--exclusive", multiple=True, help="A group no two running jobs share (repeatable).")
@click.option(
    "--incompatible",
    multiple=True,
    help="A job id or task name that must not run at the same time (repeatable).",
)
@click.option("--meta", "meta_json", default=None, help="Metadata, a JSON object.")
def enqueue(
    app: conveyor.Queue,
    task_name: str,
    args_json: str,
    kwargs_json: str,
    job_id: str | None,
    at_text: str | None,
    meta_json: str | None,
    **put_options: Any,
) -> None:
    """Put a job calling TASK on APP's queue; print its id.

    TASK is the name of a task registered with the queue (@queue.task), or module:function
    of a registered task or of a module the queue allows (allow_modules). The options are
    put's (see the README); a bad value is refused (exit code 2) and nothing is put. With
    --unique, an active job holding the key is printed instead of a new one.

    \b
    APP is module:variable naming a conveyor.Queue, e.g. myapp:queue.
    """
    args = _json(args_json, list, "--args", "a JSON array, e.g. '[1, \"a\"]'")
    kwargs = _json(kwargs_json, dict, "--kwargs", "a JSON object, e.g. '{\"n\": 1}'")
    options = put_options_of(put_options, at_text)
    if meta_json is not None:
        options["meta"] = _json(meta_json, dict, "--meta", "a JSON object")
    with opened(app, spec_of(app)) as queue:
        find_task(queue, task_name)  # an unknown task is refused first
        if not queue.durable:
            raise click.UsageError(
                f"the queue of {spec_of(queue)} is {queue.url}: it lives in one process, so a job"
                " put here would vanish when this command exits; give the queue a durable URL"
                " (e.g. sqlite:///jobs.db) and run `conveyor worker` on it"
            )
        try:
            job = operations.submit(queue, task_name, args, kwargs, job_id=job_id, **options)
        except InvalidJob as exc:  # the user's values: a usage error, nothing was put
            raise click.UsageError(f"invalid job: {exc}") from None
    click.echo(job.id)


def put_options_of(given: dict[str, Any], at_text: str | None) -> dict[str, Any]:
    """The put options the user gave (unset ones left to put's defaults)."""
    options: dict[str, Any] = {}
    for name, value in given.items():
        if value is None or value == () or value is False:
            continue
        options[name] = list(value) if isinstance(value, tuple) else value
    if at_text is not None:
        options["at"] = parse_moment(at_text)
    return options


def parse_moment(text: str) -> datetime | float:
    """An ISO 8601 time (naive: local) or epoch seconds."""
    try:
        return operations.parse_moment(text)
    except InvalidJob:
        raise click.BadParameter(
            f"{text!r} is neither an ISO 8601 time (2030-01-02T03:04:05) nor epoch seconds",
            param_hint="--at",
        ) from None


def _json(text: str, kind: type, option: str, expected: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"not JSON ({exc}); expected {expected}", param_hint=option
        ) from None
    if not isinstance(value, kind):
        raise click.BadParameter(f"expected {expected}", param_hint=option)
    return value


def find_task(queue: conveyor.Queue, name: str) -> Callable[..., Any]:
    """A registered task by name or import path, or the function (or Task) at
    ``module:qualname`` of a module the queue allows (:func:`conveyor.operations.find_task`)."""
    try:
        return operations.find_task(queue, name)
    except operations.UnknownTask as exc:
        raise click.BadParameter(str(exc), param_hint="TASK") from None
