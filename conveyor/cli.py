"""The ``conveyor`` command line: parse arguments, call the public API, print.

Commands that take ``APP`` (``module:variable``, a :class:`conveyor.Queue`) import the module
with the current directory on ``sys.path``, as ``python -m`` would.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

import conveyor
from conveyor import demo as demo_pipeline
from conveyor import logs
from conveyor.errors import ConveyorError, InvalidJob, UnknownJob
from conveyor.job import MODES, JobRecord, Status
from conveyor.queue import workers_held
from conveyor.records import HISTORY
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


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for scripts (see docs/cli.md)."
)


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
    spec = _spec(app)
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


# ---------------------------------------------------------------------- status
@main.command()
@app_argument
@json_option
def status(app: conveyor.Queue, as_json: bool = False) -> None:
    """Show APP's jobs by status, the running jobs and the workers (alive or lost).

    \b
    APP is module:variable naming a conveyor.Queue, e.g. myapp:queue.
    """
    with opened(app, _spec(app)) as queue:
        counts = queue.backend.counts()
        running = queue.jobs(Status.RUNNING)
        workers = queue.backend.workers(include_lost=True)
        now = queue.clock.now()
    lost = {w.id for w in workers if w.lost(now, queue.settings.lease)}
    if as_json:
        click.echo(status_json(queue, counts, running, workers, lost))
        return
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
@json_option
def jobs(app: conveyor.Queue, status_: str | None, limit: int, as_json: bool) -> None:
    """List APP's jobs: id, task, status, attempts, worker, times, and (when one has it) the
    error's first line: why a job failed or was cancelled.

    Jobs are listed in submission order. Long ids and text are cut short and control
    characters escaped; `conveyor show` and --json give them whole.

    \b
    APP is module:variable naming a conveyor.Queue, e.g. myapp:queue.
    """
    with opened(app, _spec(app)) as queue:
        records = queue.jobs(status_)
    shown = records[-limit:] if limit else records
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
    if len(shown) < len(records):
        click.echo(f"({len(records) - len(shown)} earlier job(s) not shown; --limit 0 for all)")


JOB_COLUMNS = [
    "id", "task", "status", "attempts", "worker", "submitted", "started", "ended", "error",
]  # fmt: skip


def job_row(record: JobRecord) -> list[str]:
    return [
        cell(record.id),
        cell(record.task),
        record.status.value,
        str(record.attempts),
        cell(record.worker or ""),
        when(record.submitted),
        when(record.started),
        when(record.ended),
        cell(first_line(record.error), ERROR_WIDTH),
    ]


# --------------------------------------------------------------------- enqueue
@main.command()
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
    with opened(app, _spec(app)) as queue:
        fn = find_task(queue, task_name)
        if not queue.durable:
            raise click.UsageError(
                f"the queue of {_spec(queue)} is {queue.url}: it lives in one process, so a job"
                " put here would vanish when this command exits; give the queue a durable URL"
                " (e.g. sqlite:///jobs.db) and run `conveyor worker` on it"
            )
        try:
            job = queue.put(fn, args, kwargs, id=job_id, **options)
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
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
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


# ------------------------------------------------------------------------ show
@main.command()
@app_argument
@click.argument("job_id", metavar="ID")
@json_option
def show(app: conveyor.Queue, job_id: str, as_json: bool) -> None:
    """Show job ID of APP's queue: status, task, arguments, attempts, times, worker, result,
    and the error with its traceback (and how it ended before, if it was retried).

    \b
    APP is module:variable naming a conveyor.Queue, e.g. myapp:queue.
    """
    with opened(app, _spec(app)) as queue:
        try:
            record = queue.job(job_id)
        except UnknownJob:
            raise click.ClickException(f"no job {job_id!r} in the queue") from None
    if as_json:
        click.echo(dumps(record_json(record)))
        return
    click.echo(describe(record))


def describe(record: JobRecord) -> str:
    """One job, a field a line; the traceback and earlier ends in full below."""
    fields: list[tuple[str, str]] = [
        ("id", escaped(record.id)),
        ("status", record.status.value),
        ("task", escaped(record.task)),
        ("args", escaped(shown_value(list(record.args)))),
        ("kwargs", escaped(shown_value(record.kwargs))),
        ("attempts", str(record.attempts)),
        ("priority", str(record.priority)),
    ]
    for name, value in [
        ("lane", record.lane),
        ("after", ", ".join(record.after)),
        ("exclusive", ", ".join(record.exclusive)),
        ("incompatible", ", ".join(record.incompatible)),
    ]:
        if value not in (None, ""):
            fields.append((name, escaped(str(value))))
    fields += [
        ("worker", escaped(record.worker or "")),
        ("submitted", when(record.submitted)),
        ("started", when(record.started)),
        ("ended", when(record.ended)),
        ("runtime", "" if record.runtime is None else f"{record.runtime:.3f} s"),
    ]
    if record.status is Status.FINISHED:
        fields.append(("result", escaped(shown_value(record.result))))
    if record.error:
        fields.append(("error", escaped(record.error)))
    meta = {k: v for k, v in record.meta.items() if k != HISTORY}
    if meta:
        fields.append(("meta", escaped(shown_value(meta))))
    width = max(len(name) for name, _ in fields)
    lines = [f"{name:<{width}}  {value}".rstrip() for name, value in fields]
    if record.traceback:
        lines += ["", "traceback:", record.traceback.rstrip()]
    for n, earlier in enumerate(history_of(record), 1):
        lines += [
            "",
            f"earlier end {n}: {earlier.get('status')} after {earlier.get('attempts')}"
            f" attempt(s), ended {earlier.get('ended')}, retried {earlier.get('retried')}",
        ]
        if earlier.get("error"):
            lines.append(f"  error: {escaped(str(earlier['error']))}")
        if earlier.get("traceback"):
            lines.append(str(earlier["traceback"]).rstrip())
    return "\n".join(lines)


def history_of(record: JobRecord) -> list[dict[str, Any]]:
    """How a retried job ended before (oldest first)."""
    history = record.meta.get(HISTORY)
    return [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []


# ----------------------------------------------------------------------- retry
@main.command()
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
    with opened(app, _spec(app)) as queue:
        if all_failed:
            job_ids = tuple(
                r.id for r in queue.jobs(Status.FAILED) if task_name is None or r.task == task_name
            )
        for job_id in job_ids:
            try:
                queue.retry(job_id)
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


# ----------------------------------------------------------------------- purge
@main.command()
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
    with opened(app, _spec(app)) as queue:
        count = queue.purge(statuses or None, task=task_name, older_than=age)
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


# ---------------------------------------------------------------------- forget
@main.command()
@app_argument
@click.argument("job_id", metavar="ID")
def forget(app: conveyor.Queue, job_id: str) -> None:
    """Drop ended job ID of APP's queue and its result. Exits with code 1 if the job is
    unknown or has not ended (cancel it first).

    \b
    APP is module:variable naming a conveyor.Queue, e.g. myapp:queue.
    """
    with opened(app, _spec(app)) as queue:
        try:
            queue.forget(job_id)
        except UnknownJob:
            raise click.ClickException(f"no job {job_id!r} in the queue") from None
    click.echo(f"forgot {escaped(job_id)}")


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


# ------------------------------------------------------------------------ JSON
def dumps(data: Any) -> str:
    """JSON for scripts: ASCII, values JSON cannot hold as their repr."""
    return json.dumps(data, ensure_ascii=True, default=repr, indent=2)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 with its UTC offset, or None."""
    return None if moment is None else moment.isoformat()


def record_json(record: JobRecord) -> dict[str, Any]:
    """A job for ``--json``: every JobRecord field, times as ISO 8601 (UTC), and
    ``history`` (earlier ends of a retried job)."""
    data = record.as_dict()
    for name in ("submitted", "started", "ended"):
        data[name] = iso(getattr(record, name))
    data["args"] = list(record.args)
    data["after"], data["exclusive"] = list(record.after), list(record.exclusive)
    data["incompatible"] = list(record.incompatible)
    data["meta"] = {k: v for k, v in record.meta.items() if k != HISTORY}
    data["history"] = history_of(record)
    return data


def status_json(
    queue: conveyor.Queue,
    counts: dict[Status, int],
    running: list[JobRecord],
    workers: Sequence[Any],
    lost: Collection[str] = (),
) -> str:
    """``conveyor status --json``: the queue, counts by status, running jobs, workers (with
    their state: ``alive``, or ``lost`` once their own lease ran out unrenewed)."""
    return dumps(
        {
            "queue": queue.name,
            "url": queue.url,
            "counts": {s.value: counts.get(s, 0) for s in Status},
            "running": [record_json(r) for r in running],
            "workers": [
                {
                    "id": w.id,
                    "host": w.host,
                    "pid": w.pid,
                    "mode": w.mode,
                    "slots": w.slots,
                    "started": iso(datetime.fromtimestamp(w.started, UTC)),
                    "last_seen": iso(datetime.fromtimestamp(w.last_seen, UTC)),
                    "state": "lost" if w.id in lost else "alive",
                }
                for w in workers
            ],
        }
    )


# ------------------------------------------------------------------ table cells
#: the widest a table cell gets (ids, task names, workers); longer ones end in an ellipsis
CELL_WIDTH = 40
#: the widest the error column gets
ERROR_WIDTH = 60


def escaped(text: str) -> str:
    """``text`` with control characters (newlines, tabs, escapes) written as ``\\n`` etc., so
    one value stays on one line and cannot move the terminal's cursor."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def cell(text: str, width: int = CELL_WIDTH) -> str:
    """``text`` escaped and cut to ``width`` characters (an ellipsis marks the cut)."""
    text = escaped(text)
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def first_line(text: str | None) -> str:
    """The first non-empty line of ``text`` ("" for None)."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def shown_value(value: Any) -> str:
    """A value as JSON when it is JSON data, else its repr."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)
