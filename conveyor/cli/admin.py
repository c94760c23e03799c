"""The commands that change jobs already put: ``cancel``, ``retry``, ``purge``, ``forget``."""

from __future__ import annotations

import sys

import click

import conveyor
from conveyor import operations
from conveyor.cli.app import app_argument, opened, spec_of
from conveyor.cli.output import escaped
from conveyor.errors import InvalidJob, UnknownJob
from conveyor.job import Status


@click.command()
@app_argument
@click.argument("job_id", metavar="ID")
def cancel(app: conveyor.Queue, job_id: str) -> None:
    """Cancel job ID of APP's queue, stopping it if it runs.

    Exits with code 1 if the job had already ended.

    \b
    APP is module:variable naming a conveyor.Queue, e.g. myapp:queue.
    """
    with opened(app, spec_of(app)) as queue:
        try:
            cancelled = operations.cancel(queue, job_id)
        except UnknownJob:
            raise click.ClickException(f"no job {job_id!r} in the queue") from None
        state = queue.status(job_id)
    if not cancelled:
        click.echo(f"job {job_id} had already ended ({state}); nothing to cancel", err=True)
        sys.exit(1)
    click.echo(f"cancelled {job_id}")


@click.command()
@app_argument
@click.argument("job_ids", metavar="[ID]...", nargs=-1)
@click.option("--failed", "all_failed", is_flag=True, help="Retry every failed job.")
@click.option("--task", "task_name", default=None, help="With --failed: only jobs of this task.")
def retry(
    app: conveyor.Queue, job_ids: tuple[str, ...], all_failed: bool, task_name: str | None
) -> None:
    """Put failed or cancelled jobs of APP's queue back to waiting: the jobs ID..., or with
    --failed every failed job (of --task).

    Attempts start again from 0; how each job ended is kept in its history (`conveyor show`).
    A job whose dependency failed or was cancelled is refused: retry the dependency first.
    Exits with code 1 if a job could not be retried.

    \b
    APP is module:variable naming a conveyor.Queue, e.g. myapp:queue.
    """
    if bool(job_ids) == all_failed:
        raise click.UsageError("give job ids or --failed (not both)")
    if task_name is not None and not all_failed:
        raise click.UsageError("--task goes with --failed")
    refused = 0
    with opened(app, spec_of(app)) as queue:
        if all_failed:
            job_ids = tuple(operations.failed_ids(queue, task_name))
        for job_id in job_ids:
            try:
                operations.retry(queue, job_id)
            except UnknownJob:
                click.echo(f"cannot retry {escaped(job_id)}: no such job in the queue", err=True)
                refused += 1
            except InvalidJob as exc:
                click.echo(f"cannot retry {escaped(job_id)}: {exc}", err=True)
                refused += 1
            else:
                click.echo(f"retried {escaped(job_id)}")
    if all_failed:
        click.echo(f"retried {len(job_ids) - refused} failed job(s)")
    if refused:
        sys.exit(1)


@click.command()
@app_argument
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in Status if s is not Status.RUNNING]),
    help="Only jobs in this status (repeatable; default: finished, failed and cancelled)."
    " Waiting and scheduled jobs are cancelled first, with their dependents.",
)
@click.option("--task", "task_name", default=None, help="Only jobs of this task.")
@click.option(
    "--older-than",
    default=None,
    metavar="AGE",
    help="Only jobs that ended (or, not started, were submitted) more than AGE ago:"
    " seconds, or a number with s, m, h or d (90s, 15m, 1h, 7d).",
)
def purge(
    app: conveyor.Queue, statuses: tuple[str, ...], task_name: str | None, older_than: str | None
) -> None:
    """Drop jobs of APP's queue and their results; print how many. Running jobs are never
    purged.

    \b
    APP is module:variable naming a conveyor.Queue, e.g. myapp:queue.
    """
    age = None if older_than is None else parse_age(older_than)
    with opened(app, spec_of(app)) as queue:
        count = operations.purge(queue, statuses or None, task=task_name, older_than=age)
    click.echo(f"purged {count} job(s)")


AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h``, ``7d`` -> seconds."""
    number, unit = text.strip(), "s"
    if number[-1:].lower() in AGE_UNITS:
        number, unit = number[:-1], number[-1].lower()
    try:
        seconds = float(number) * AGE_UNITS[unit]
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise click.BadParameter(
            f"{text!r} is not an age (seconds, or 90s, 15m, 1h, 7d)", param_hint="--older-than"
        )
    return seconds


@click.command()
@app_argument
@click.argument("job_id", metavar="ID")
def forget(app: conveyor.Queue, job_id: str) -> None:
    """Drop ended job ID of APP's queue and its result. Exits with code 1 if the job is
    unknown or has not ended (cancel it first).

    \b
    APP is module:variable naming a conveyor.Queue, e.g. myapp:queue.
    """
    with opened(app, spec_of(app)) as queue:
        try:
            queue.forget(job_id)
        except UnknownJob:
            raise click.ClickException(f"no job {job_id!r} in the queue") from None
    click.echo(f"forgot {escaped(job_id)}")
