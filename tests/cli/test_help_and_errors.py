"""The command line in this process (click's CliRunner): help texts, bad APP, bad options."""

from __future__ import annotations

import importlib
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from conveyor.cli import main

COMMANDS = ["worker", "status", "jobs", "enqueue", "cancel"]

APP_SOURCE = """
import conveyor

q = conveyor.Queue(workers={workers})
not_a_queue = 42

@q.task(name="add")
def add(a, b=0):
    return a + b

def double(x):
    return 2 * x
"""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def make_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """Write an app module (a memory queue) to a fresh folder made the current directory;
    return its importable name. Each gets a new name, so no test sees another's module."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI adds the current directory
    names: list[str] = []

    def make(workers: int = 0, source: str = APP_SOURCE) -> str:
        name = f"cliapp_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(source.format(workers=workers))
        names.append(name)
        return name

    yield make
    for name in names:
        module = sys.modules.pop(name, None)
        queue = getattr(module, "q", None)
        if queue is not None:
            queue.close(wait=False)


# ------------------------------------------------------------------------- help
def test_main_help_lists_every_command(runner):
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in [*COMMANDS, "demo"]:
        assert f"  {command} " in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_explains_app(runner, command):
    result = runner.invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "module:variable" in result.output
    assert f"Usage: main {command} [OPTIONS] APP" in result.output


def test_worker_help_names_its_options(runner):
    result = runner.invoke(main, ["worker", "--help"])
    for option in ["--workers", "-w", "--mode", "--max-jobs", "--burst"]:
        assert option in result.output
    assert "SIGTERM" in result.output


def test_enqueue_help_names_its_options(runner):
    result = runner.invoke(main, ["enqueue", "--help"])
    for option in ["--args", "--kwargs", "--id", "--priority", "--delay", "TASK"]:
        assert option in result.output


# -------------------------------------------------------------------- bad APP
@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("no_colon", "'no_colon' is not module:variable"),
        ("no_such_module_xyz:q", "module 'no_such_module_xyz' not found"),
    ],
)
def test_a_bad_app_is_a_clear_usage_error(runner, make_app, app, message):
    result = runner.invoke(main, ["status", app])
    assert result.exit_code == 2
    assert "Invalid value for 'APP'" in result.output
    assert message in result.output


def test_an_app_without_that_variable_is_named(runner, make_app):
    name = make_app()
    result = runner.invoke(main, ["status", f"{name}:missing"])
    assert result.exit_code == 2
    assert f"module {name!r} has no attribute 'missing'" in result.output


@pytest.mark.parametrize(("variable", "kind"), [("not_a_queue", "int"), ("add", "Task")])
def test_an_app_that_is_not_a_queue_says_what_it_is(runner, make_app, variable, kind):
    name = make_app()
    result = runner.invoke(main, ["jobs", f"{name}:{variable}"])
    assert result.exit_code == 2
    assert f"{name}:{variable} is a {kind}, not a conveyor.Queue" in result.output


def test_an_app_whose_import_fails_says_why(runner, make_app):
    name = make_app(source="raise RuntimeError('no config')\n")
    result = runner.invoke(main, ["status", f"{name}:q"])
    assert result.exit_code == 2
    assert f"importing {name!r} failed: RuntimeError: no config" in result.output


def test_a_missing_import_inside_the_app_is_not_reported_as_the_app_missing(runner, make_app):
    name = make_app(source="import no_such_dependency_xyz\n")
    result = runner.invoke(main, ["status", f"{name}:q"])
    assert result.exit_code == 2
    assert f"importing {name!r} failed" in result.output
    assert "no_such_dependency_xyz" in result.output


# --------------------------------------------------------------- bad options
def test_worker_refuses_the_inline_mode(runner, make_app):
    result = runner.invoke(main, ["worker", f"{make_app()}:q", "--mode", "inline"])
    assert result.exit_code == 2
    assert "'inline' is not one of" in result.output


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--args", "{", "Invalid value for --args: not JSON"),
        ("--args", '{"a": 1}', "Invalid value for --args: expected a JSON array"),
        ("--kwargs", "[1]", "Invalid value for --kwargs: expected a JSON object"),
    ],
)
def test_enqueue_refuses_bad_json(runner, make_app, option, value, message):
    result = runner.invoke(main, ["enqueue", f"{make_app()}:q", "add", option, value])
    assert result.exit_code == 2
    assert message in result.output


def test_enqueue_names_the_registered_tasks_when_one_is_unknown(runner, make_app):
    result = runner.invoke(main, ["enqueue", f"{make_app()}:q", "nope"])
    assert result.exit_code == 2
    assert "no task named 'nope' is registered with the queue (registered: add)" in result.output


def test_enqueue_reports_a_missing_function(runner, make_app):
    name = make_app()
    result = runner.invoke(main, ["enqueue", f"{name}:q", f"{name}:nope"])
    assert result.exit_code == 2
    assert f"module {name!r} has no 'nope'" in result.output


def test_enqueue_refuses_a_memory_queue_whose_job_would_vanish(runner, make_app):
    name = make_app()
    result = runner.invoke(
        main, ["enqueue", f"{name}:q", f"{name}:double", "--args", "[2]", "--id", "j1"]
    )
    assert result.exit_code == 2, result.output
    assert "is memory://" in result.output and "would vanish" in result.output


def test_cancel_of_an_unknown_job_fails_clearly(runner, make_app):
    result = runner.invoke(main, ["cancel", f"{make_app()}:q", "ghost"])
    assert result.exit_code == 1
    assert "no job 'ghost' in the queue" in result.output


def test_an_app_queue_with_workers_starts_none_when_the_command_line_imports_it(runner, make_app):
    # given an app whose queue has 2 worker slots of its own
    name = make_app(workers=2, source=APP_SOURCE.replace("Queue(", "Queue('sqlite:///jobs.db', "))
    # when the worker command imports it and runs in burst mode
    result = runner.invoke(main, ["worker", f"{name}:q", "--burst", "-w", "1"])
    # then the queue started none of its own (nothing to stop, no note), and keeps its slots
    # as the default of `conveyor worker`
    assert result.exit_code == 0, result.output
    assert "note:" not in result.output
    assert "0 finished, 0 failed" in result.output
    queue = sys.modules[name].q
    assert (queue.runs_workers, queue.embedded.modes, queue.slots) == (False, (), 2)


def test_a_queue_that_runs_workers_is_stopped_with_a_note(runner, make_app):
    # given an app imported before the command line, whose queue ran a job, so it runs its
    # 2 worker slots
    name = make_app(workers=2)
    sys.path.insert(0, os.getcwd())  # the fixture restores sys.path
    module = importlib.import_module(name)
    queue = module.q
    assert queue.embedded.modes == ()  # building the queue started none
    assert module.add.enqueue(1, 2).result(timeout=5) == 3
    assert queue.runs_workers and queue.embedded.modes == ("thread",)
    # when a command is given that queue
    result = runner.invoke(main, ["status", f"{name}:q"])
    # then its workers are stopped, with a note saying why
    assert result.exit_code == 0, result.output
    assert "started 2 worker slot(s) of its own" in result.output
    assert (queue.runs_workers, queue.embedded.modes) == (False, ())
