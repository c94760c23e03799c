"""Loading APP (``module:variable`` naming a :class:`conveyor.Queue`) and using its queue.

The module is imported with the current directory on ``sys.path``, as ``python -m`` would.
Importing it starts no workers: a queue starts its own only when a call needs them (see
:mod:`conveyor.embedded`). A command then uses the queue as a producer (:func:`opened`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

import conveyor
from conveyor.errors import ConveyorError


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
    """Use ``queue`` from the command line as a producer: it runs no job in this process
    (its own workers are stopped and none starts, even when a job that ``conveyor worker``
    runs here puts another through it); closed after. ConveyorError becomes a click error.

    Its workers may have started already: the app's module put or waited for jobs when it
    was imported (or was imported before). Those are stopped with a note; on a durable
    queue, the jobs they were running go back to it."""
    started = queue.embedded.modes
    if started:
        click.echo(
            f"note: {spec} started {queue.slots} worker slot(s) of its own (it put or waited"
            " for jobs when it was imported); they are stopped here (put jobs under"
            ' `if __name__ == "__main__":`, or build the queue with workers=0)',
            err=True,
        )
    queue.embedded.stop(wait=False)
    try:
        yield queue
    except ConveyorError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        queue.close(wait=False)


def app_argument(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The ``APP`` argument of a command: the command receives the Queue."""
    return click.argument("app", type=APP, metavar="APP")(fn)


def spec_of(queue: conveyor.Queue) -> str:
    """The APP text the user typed (click hands commands the Queue it names)."""
    return str(click.get_current_context().meta.get("conveyor.app", queue.name))


#: ``--json`` of the commands that print jobs
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for scripts (see docs/cli.md)."
)
