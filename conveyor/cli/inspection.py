"""The commands that look at a queue and change nothing: ``status``, ``jobs``, ``show``."""

from __future__ import annotations

from datetime import datetime

import click

import conveyor
from conveyor import operations
from conveyor.cli.app import app_argument, json_option, opened, spec_of
from conveyor.cli.output import (
    JOB_COLUMNS,
    describe,
    dumps,
    job_row,
    progress_cell,
    status_json,
    table,
    when,
)
from conveyor.errors import UnknownJob
from conveyor.job import Status
from conveyor.operations import record_json


@click.command()
@app_argument
@json_option
def status(app: conveyor.Queue, as_json: bool = False) -> None:
    """Show APP's jobs by status, the running jobs and the workers (alive or lost).

    \b
    APP is module:variable naming a conveyor.Queue, e.g. myapp:queue.
    """
    with opened(app, spec_of(app)) as queue:
        counts = queue.backend.counts()
        running = queue.jobs(Status.RUNNING)
        workers = operations.workers(queue)
        lost = operations.lost_workers(queue, workers)
    if as_json:
        click.echo(status_json(queue, counts, running, workers, lost))
        return
    click.echo(f"queue {queue.name!r} at {queue.url}")
    click.echo("  ".join(f"{s.value} {counts.get(s, 0)}" for s in Status))
    click.echo(f"\nrunning jobs ({len(running)})")
    if running:
        click.echo(
            table(
                ["id", "task", "worker", "started", "progress"],
                [
                    [r.id, r.task, r.worker or "", when(r.started), progress_cell(r)]
                    for r in running
                ],
            )
        )
    alive = len(workers) - len(lost)
    click.echo(f"\nworkers ({alive} alive, {len(lost)} lost)" if lost else f"\nworkers ({alive})")
    if workers:
        click.echo(
            table(
                ["id", "host", "pid", "mode", "slots", "started", "last seen", "state"],
                [
                    [
                        w.id,
                        w.host,
                        str(w.pid),
                        w.mode,
                        str(w.slots),
                        when(datetime.fromtimestamp(w.started)),
                        when(datetime.fromtimestamp(w.last_seen)),
                        "lost" if w.id in lost else "alive",
                    ]
                    for w in workers
                ],
            )
        )
    if lost:
        click.echo(
            "(a lost worker was silent longer than its lease: it died or hangs, and its"
            " running jobs go back to the queue)"
        )


@click.command()
@app_argument
@click.option(
    "--status",
    "status_",
    type=click.Choice([s.value for s in Status]),
    default=None,
    help="Only jobs in this status.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Show the N most recently submitted (0: all).",
)
@json_option
def jobs(app: conveyor.Queue, status_: str | None, limit: int, as_json: bool) -> None:
    """List APP's jobs: id, task, status, attempts, worker, times, and (when one has it) the
    error's first line: why a job failed or was cancelled.

    Jobs are listed in submission order. Long ids and text are cut short and control
    characters escaped; `conveyor show` and --json give them whole.

    \b
    APP is module:variable naming a conveyor.Queue, e.g. myapp:queue.
    """
    with opened(app, spec_of(app)) as queue:
        page = operations.list_jobs(queue, status_, limit=limit)  # the newest first
    shown = page.jobs[::-1]
    if as_json:
        click.echo(dumps([record_json(r) for r in shown]))
        return
    if not shown:
        click.echo("no jobs" + (f" {status_}" if status_ else ""))
        return
    rows = [job_row(r) for r in shown]
    columns = JOB_COLUMNS
    if not any(row[-1] for row in rows):  # no job to explain: no error column
        columns, rows = columns[:-1], [row[:-1] for row in rows]
    click.echo(table(columns, rows))
    if len(shown) < page.total:
        click.echo(f"({page.total - len(shown)} earlier job(s) not shown; --limit 0 for all)")


@click.command()
@app_argument
@click.argument("job_id", metavar="ID")
@json_option
def show(app: conveyor.Queue, job_id: str, as_json: bool) -> None:
    """Show job ID of APP's queue: status, task, arguments, attempts, times, worker, result,
    and the error with its traceback (and how it ended before, if it was retried).

    \b
    APP is module:variable naming a conveyor.Queue, e.g. myapp:queue.
    """
    with opened(app, spec_of(app)) as queue:
        try:
            record = queue.job(job_id)
        except UnknownJob:
            raise click.ClickException(f"no job {job_id!r} in the queue") from None
    if as_json:
        click.echo(dumps(record_json(record)))
        return
    click.echo(describe(record))
