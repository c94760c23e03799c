"""``conveyor worker APP``: run the jobs of APP's queue in this process until stopped."""

from __future__ import annotations

import click

import conveyor
from conveyor import logs
from conveyor.cli.app import app_argument, opened, spec_of
from conveyor.runner import WORKER_MODES, run_worker


@click.command()
@app_argument
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=None,
    help="Slots: threads, processes or concurrent coroutines "
    "(default: the queue's workers, else the CPU count).",
)
@click.option(
    "--mode",
    type=click.Choice(WORKER_MODES),
    default=None,
    help="Run jobs of this mode (default: the queue's mode).",
)
@click.option(
    "--max-jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Exit after this many jobs have run.",
)
@click.option(
    "--burst",
    is_flag=True,
    help="Exit once nothing is left that this worker can start (drain, then exit).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="What to log on standard error: info says what the worker is, what failed, was"
    " retried, refused, recovered, timed out or cancelled, and how its jobs ended; debug"
    " adds every finished job and the tracebacks.",
)
@click.option(
    "--log-format",
    type=click.Choice(logs.FORMATS),
    default="text",
    show_default=True,
    help="text: readable lines; json: one JSON object per line (time, level, logger,"
    " message, and the job's fields: job_id, task, attempt, outcome, error...).",
)
def worker(
    app: conveyor.Queue,
    workers: int | None,
    mode: str | None,
    max_jobs: int | None,
    burst: bool,
    log_level: str,
    log_format: str,
) -> None:
    """Run the jobs of APP's queue in this process until stopped.

    SIGTERM or Ctrl-C stops claiming and gives running jobs the queue's graceful_timeout to
    end; jobs still running then go back to the queue (their attempt not counted). A second
    Ctrl-C puts them back at once. Prints how the jobs it ran ended.

    --mode runs the jobs in threads, processes or coroutines: those the app puts in that
    mode, else (when it puts none in it) those of the queue's mode.

    \b
    APP is module:variable naming a conveyor.Queue, e.g. myapp:queue.
    """
    logs.configure(log_level, log_format)
    spec = spec_of(app)
    if not app.durable:
        app.close(wait=False)
        raise click.UsageError(
            f"{spec} is a {app.url} queue: its jobs live in the memory of the process that"
            " puts them, so a worker in another process has none to run (and a job put here"
            " would vanish with this process). Give the app a durable queue, e.g."
            " conveyor.Queue('sqlite:///jobs.db', workers=0), or run its jobs in its own"
            " process with conveyor.Queue(workers=N)."
        )
    with opened(app, spec) as queue:
        try:
            ran = run_worker(queue, workers=workers, mode=mode, max_jobs=max_jobs, burst=burst)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
    click.echo(ran.summary())
