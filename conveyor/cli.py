"""The ``conveyor`` command line: parse arguments, call the public API, print.

Commands that take ``APP`` (``module:variable``, a :class:`conveyor.Queue`) import the module
with the current directory on ``sys.path``, as ``python -m`` would.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click

import conveyor
from conveyor import demo as demo_pipeline
from conveyor.errors import ConveyorError, UnknownJob
from conveyor.job import MODES, JobRecord, Status
from conveyor.queue import workers_held
from conveyor.references import how_to_trust
from conveyor.runner import WORKER_MODES, run_worker
from conveyor.task import Task


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(conveyor.__version__, prog_name="conveyor")
def main() -> None:
    """conveyor: one Python job queue, from a script's threads to worker processes."""


# ------------------------------------------------------------------ loading APP
class AppType(click.ParamType):  # type: ignore[type-arg]
    """``module:variable`` -> the conveyor.Queue it names (imported on conversion)."""

    name = "APP"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, conveyor.Queue):
            return value
        if ctx is not None:
            ctx.meta["conveyor.app"] = str(value)
        module_name, _, attribute = str(value).partition(":")
        if not module_name or not attribute:
            self.fail(f"{value!r} is not module:variable (e.g. myapp:queue)", param, ctx)
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        try:
            with workers_held():  # the app's queue must not run jobs in this command's process
                module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                self.fail(
                    f"module {module_name!r} not found (looked in {cwd} and on sys.path)",
                    param,
                    ctx,
                )
            self.fail(f"importing {module_name!r} failed: {exc}", param, ctx)
        except Exception as exc:
            self.fail(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}", param, ctx)
        target: Any = module
        for part in attribute.split("."):
            if not hasattr(target, part):
                self.fail(f"module {module_name!r} has no attribute {attribute!r}", param, ctx)
            target = getattr(target, part)
        if not isinstance(target, conveyor.Queue):
            self.fail(f"{value} is a {type(target).__name__}, not a conveyor.Queue", param, ctx)
        return target


APP = AppType()


@contextlib.contextmanager
def opened(queue: conveyor.Queue, spec: str) -> Iterator[conveyor.Queue]:
    """Use ``queue`` from the command line: without its embedded workers, closed after.

    An app imported by the command line starts none (:func:`conveyor.queue.workers_held`);
    a queue whose module was imported before has them stopped here."""
    embedded = queue._workers
    if embedded:
        # They would run jobs in this command's process; what they claimed goes back.
        click.echo(
            f"note: {spec} started {queue.slots} worker slot(s) of its own; they are stopped"
            " here (build it with workers=0 for the command line)",
            err=True,
        )
        for worker in list(embedded.values()):
            worker.stop(0)
        embedded.clear()
    queue.runs_workers = False
    try:
        yield queue
    except ConveyorError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        queue.close(wait=False)


def app_argument(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("app", type=APP, metavar="APP")(fn)


def _spec(queue: conveyor.Queue) -> str:
    """The APP text the user typed (click hands commands the Queue it names)."""
    return str(click.get_current_context().meta.get("conveyor.app", queue.name))


# ---------------------------------------------------------------------- worker
@main.command()
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
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="What to log on standard error.",
)
def worker(
    app: conveyor.Queue,
    workers: int | None,
    mode: str | None,
    max_jobs: int | None,
    burst: bool,
    log_level: str,
) -> None:
    """Run the jobs of APP's queue in this process until stopped.

    SIGTERM or Ctrl-C stops claiming and gives running jobs the queue's graceful_timeout to
    end; jobs still running then go back to the queue (their attempt not counted). A second
    Ctrl-C puts them back at once. Prints how many jobs ran.

    \b
    APP is module:variable naming a conveyor.Queue, e.g. myapp:queue.
    """
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with opened(app, _spec(app)) as queue:
        try:
            ran = run_worker(queue, workers=workers, mode=mode, max_jobs=max_jobs, burst=burst)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
    click.echo(f"ran {ran} job(s)")


# ---------------------------------------------------------------------- status
@main.command()
@app_argument
def status(app: conveyor.Queue) -> None:
    """Show APP's jobs by status, the running jobs and the live workers.

    \b
    APP is module:variable naming a conveyor.Queue, e.g. myapp:queue.
    """
    with opened(app, _spec(app)) as queue:
        counts = queue.backend.counts()
        running = queue.jobs(Status.RUNNING)
        workers = queue.backend.workers()
    click.echo(f"queue {queue.name!r} at {queue.url}")
    click.echo("  ".join(f"{s.value} {counts.get(s, 0)}" for s in Status))
    click.echo(f"\nrunning jobs ({len(running)})")
    if running:
        click.echo(
            table(
                ["id", "task", "worker", "started"],
                [[r.id, r.task, r.worker or "", when(r.started)] for r in running],
            )
        )
    click.echo(f"\nworkers ({len(workers)})")
    if workers:
        click.echo(
            table(
                ["id", "host", "pid", "mode", "slots", "started", "last seen"],
                [
                    [
                        w.id,
                        w.host,
                        str(w.pid),
                        w.mode,
                        str(w.slots),
                        when(datetime.fromtimestamp(w.started)),
                        when(datetime.fromtimestamp(w.last_seen)),
                    ]
                    for w in workers
                ],
            )
        )


# ------------------------------------------------------------------------ jobs
@main.command()
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
def jobs(app: conveyor.Queue, status_: str | None, limit: int) -> None:
    """List APP's jobs: id, task, status, attempts, worker, times.

    Jobs are listed in submission order.

    \b
    APP is module:variable naming a conveyor.Queue, e.g. myapp:queue.
    """
    with opened(app, _spec(app)) as queue:
        records = queue.jobs(status_)
    shown = records[-limit:] if limit else records
    if not shown:
        click.echo("no jobs" + (f" {status_}" if status_ else ""))
        return
    click.echo(table(JOB_COLUMNS, [job_row(r) for r in shown]))
    if len(shown) < len(records):
        click.echo(f"({len(records) - len(shown)} earlier job(s) not shown; --limit 0 for all)")


JOB_COLUMNS = ["id", "task", "status", "attempts", "worker", "submitted", "started", "ended"]


def job_row(record: JobRecord) -> list[str]:
    return [
        record.id,
        record.task,
        record.status.value,
        str(record.attempts),
        record.worker or "",
        when(record.submitted),
        when(record.started),
        when(record.ended),
    ]


# --------------------------------------------------------------------- enqueue
@main.command()
@app_argument
@click.argument("task_name", metavar="TASK")
@click.option("--args", "args_json", default="[]", help="Positional arguments, a JSON array.")
@click.option("--kwargs", "kwargs_json", default="{}", help="Keyword arguments, a JSON object.")
@click.option("--id", "job_id", default=None, help="The job's id (default: generated).")
@click.option("--priority", type=int, default=None, help="Lower runs first (default 0).")
@click.option(
    "--delay", type=click.FloatRange(min=0), default=None, help="Start no sooner (seconds)."
)
def enqueue(
    app: conveyor.Queue,
    task_name: str,
    args_json: str,
    kwargs_json: str,
    job_id: str | None,
    priority: int | None,
    delay: float | None,
) -> None:
    """Put a job calling TASK on APP's queue; print its id.

    TASK is the name of a task registered with the queue (@queue.task), or module:function
    of a registered task or of a module the queue allows (allow_modules).

    \b
    APP is module:variable naming a conveyor.Queue, e.g. myapp:queue.
    """
    args = _json(args_json, list, "--args", "a JSON array, e.g. '[1, \"a\"]'")
    kwargs = _json(kwargs_json, dict, "--kwargs", "a JSON object, e.g. '{\"n\": 1}'")
    options: dict[str, Any] = {}
    if priority is not None:
        options["priority"] = priority
    if delay is not None:
        options["delay"] = delay
    with opened(app, _spec(app)) as queue:
        fn = find_task(queue, task_name)
        job = queue.put(fn, args, kwargs, id=job_id, **options)
    click.echo(job.id)


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
    ``module:qualname`` of a module the queue allows (checked before importing it)."""
    if ":" not in name:
        task = queue.tasks.get(name)
        if task is None:
            known = ", ".join(sorted(queue.tasks)) or "none"
            raise click.BadParameter(
                f"no task named {name!r} is registered with the queue (registered: {known});"
                " give module:function for a function of a module the queue allows",
                param_hint="TASK",
            )
        return task
    registered = queue._task_paths.get(name)
    if registered is not None:
        return registered
    module_name, _, qualname = name.partition(":")
    if queue.durable and module_name not in queue.allowed:
        # not imported: a durable queue's workers would refuse it anyway
        raise click.BadParameter(
            f"{name} is not a task registered with the queue and module {module_name!r} is not"
            f" allowed; {how_to_trust(module_name)}",
            param_hint="TASK",
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(
            f"cannot import {module_name!r}: {exc}", param_hint="TASK"
        ) from exc
    for part in qualname.split("."):
        if not hasattr(target, part):
            raise click.BadParameter(
                f"module {module_name!r} has no {qualname!r}", param_hint="TASK"
            )
        target = getattr(target, part)
    if not isinstance(target, Task) and not callable(target):
        raise click.BadParameter(f"{name} is not callable", param_hint="TASK")
    found: Callable[..., Any] = target
    return found


# ---------------------------------------------------------------------- cancel
@main.command()
@app_argument
@click.argument("job_id", metavar="ID")
def cancel(app: conveyor.Queue, job_id: str) -> None:
    """Cancel job ID of APP's queue, stopping it if it runs.

    Exits with code 1 if the job had already ended.

    \b
    APP is module:variable naming a conveyor.Queue, e.g. myapp:queue.
    """
    with opened(app, _spec(app)) as queue:
        try:
            cancelled = queue.cancel(job_id)
        except UnknownJob:
            raise click.ClickException(f"no job {job_id!r} in the queue") from None
        state = queue.status(job_id)
    if not cancelled:
        click.echo(f"job {job_id} had already ended ({state}); nothing to cancel", err=True)
        sys.exit(1)
    click.echo(f"cancelled {job_id}")


# ------------------------------------------------------------------------ demo
@main.command()
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=None,
    help="Worker slots (default: CPU count).",
)
@click.option(
    "--mode",
    type=click.Choice([m for m in MODES if m != "inline"]),
    default="thread",
    show_default=True,
    help="How jobs run.",
)
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("conveyor-demo"),
    show_default=True,
    help="Where to keep the queue file (queue.db) and the reports; a second run finds the first.",
)
@click.option(
    "--source",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Read the .py files under this folder (default: the standard library; test suites"
    " and site-packages are skipped).",
)
def demo(workers: int | None, mode: str, workdir: Path, source: Path | None) -> None:
    """Run a small real pipeline and show what ran where and when.

    It counts the lines and identifiers of Python source in batches, on a SQLite queue:
    `count` per batch (priority: the biggest first), `append` per batch in the sequential
    lane "report" after its count, and `summarise` after every append. Then a table shows
    where and when each job ran, and the rules are checked against it.
    """
    try:
        done = demo_pipeline.run(workers, mode, workdir, source, echo=click.echo)
    except ConveyorError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(demo_pipeline.show(done, source))


# -------------------------------------------------------------------- printing
def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns left-aligned to their widest cell, two spaces apart."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def when(moment: datetime | None) -> str:
    """A local time to the second, or empty."""
    return "" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")
