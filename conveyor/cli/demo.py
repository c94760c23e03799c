"""``conveyor demo``: run a small real pipeline and show what ran where and when."""

from __future__ import annotations

from pathlib import Path

import click

from conveyor import demo as demo_pipeline
from conveyor import demo_report
from conveyor.errors import ConveyorError
from conveyor.job import MODES


@click.command()
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
    click.echo(demo_report.show(done, source))
    click.echo(demo_report.picture(done))
    click.echo(demo_report.dashboard(done))
