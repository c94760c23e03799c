"""The ``conveyor`` command line: parse arguments, call the public API, print.

Commands that take ``APP`` (``module:variable``, a :class:`conveyor.Queue`) import the module
with the current directory on ``sys.path``, as ``python -m`` would (:mod:`conveyor.cli.app`).

::

    app.py         loading APP, using its queue as a producer
    worker.py      worker
    inspection.py  status, jobs, show
    enqueue.py     enqueue
    admin.py       cancel, retry, purge, forget
    dashboard.py   dashboard (the HTTP API, conveyor.web)
    demo.py        demo
    output.py      tables, cells, job descriptions, --json
"""

from __future__ import annotations

import click

import conveyor
from conveyor.cli.admin import cancel, forget, purge, retry
from conveyor.cli.dashboard import dashboard
from conveyor.cli.demo import demo
from conveyor.cli.enqueue import enqueue
from conveyor.cli.inspection import jobs, show, status
from conveyor.cli.worker import worker

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(conveyor.__version__, prog_name="conveyor")
def main() -> None:
    """conveyor: one Python job queue, from a script's threads to worker processes."""


for command in (
    worker, status, jobs, enqueue, cancel, show, retry, purge, forget, dashboard, demo
):  # fmt: skip
    main.add_command(command)
