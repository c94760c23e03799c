"""The ``conveyor`` command line: parse arguments, call the public API, print."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

import conveyor
from conveyor import demo as demo_pipeline
from conveyor.job import MODES


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(conveyor.__version__, prog_name="conveyor")
def main() -> None:
    """conveyor: one Python job queue, from a script's threads to a fleet of hosts."""


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
    default=None,
    help="Where to write the report (default: a temporary folder).",
)
def demo(workers: int | None, mode: str, workdir: Path | None) -> None:
    """Run a small real pipeline over the standard library and show what ran when.

    Jobs: `count` per batch of files (priorities: biggest first), `append` per batch in the
    sequential lane "report" after its count, and `summarise` after every append.
    """
    folder = workdir or Path(tempfile.mkdtemp(prefix="conveyor-demo-"))
    summary, records = demo_pipeline.run(workers, mode, folder)
    click.echo(timeline(records))
    click.echo(
        f"\n{summary['batches']} batches, {summary['files']:,} files, {summary['lines']:,} lines,"
        f" {summary['chars']:,} characters of the standard library; report in {folder}"
    )
    click.echo(
        "most common identifiers: " + ", ".join(f"{word} ({n:,})" for word, n in summary["words"])
    )


def timeline(records: list[conveyor.JobRecord]) -> str:
    """A table of what ran when: start and end in ms after the first submit, worker, status."""
    if not records:
        return "no jobs"
    origin = min(r.submitted for r in records if r.submitted is not None)
    rows = [f"{'job':<12} {'status':<9} {'start ms':>9} {'end ms':>8} {'lane':<7} worker"]
    for record in sorted(records, key=lambda r: (r.started or origin, r.id)):
        start = (record.started - origin).total_seconds() * 1000 if record.started else None
        end = (record.ended - origin).total_seconds() * 1000 if record.ended else None
        rows.append(
            f"{record.id:<12} {record.status.value:<9} "
            f"{'' if start is None else f'{start:9.1f}':>9} "
            f"{'' if end is None else f'{end:8.1f}':>8} {record.lane or '':<7} "
            f"{(record.worker or '').rsplit('/', 1)[-1]}"
        )
    return "\n".join(rows)
