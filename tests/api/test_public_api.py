"""The public names of the package, and the command line entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest

import conveyor

PUBLIC = [
    "ConveyorError",
    "DependencyCycle",
    "DuplicateJob",
    "InvalidJob",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobRecord",
    "MissingExtra",
    "NotSerializable",
    "PayloadRefused",
    "Queue",
    "QueueClosed",
    "QueueFull",
    "Status",
    "StorageError",
    "Task",
    "UnknownDependency",
    "UnknownJob",
    "UntrustedFunction",
    "__version__",
    "context",
    "plot",
    "progress",
]


def test_all_is_pinned_and_sorted():
    # given the package / then __all__ is exactly the public names, sorted
    assert conveyor.__all__ == PUBLIC
    assert sorted(conveyor.__all__) == conveyor.__all__


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_exists(name):
    # given a name in __all__ / then the package has it
    assert getattr(conveyor, name) is not None


def test_star_import_gives_exactly_the_public_names():
    # given a fresh namespace / when star-importing conveyor / then it gets the public names
    namespace: dict[str, object] = {}
    exec("from conveyor import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == PUBLIC


def test_error_tree():
    # given the errors / then they derive as documented, so users can catch them broadly
    for error in (
        conveyor.InvalidJob,
        conveyor.UnknownJob,
        conveyor.JobFailed,
        conveyor.JobCancelled,
        conveyor.QueueFull,
        conveyor.QueueClosed,
        conveyor.MissingExtra,
        conveyor.StorageError,
        conveyor.PayloadRefused,
    ):
        assert issubclass(error, conveyor.ConveyorError)
    for error in (
        conveyor.UnknownDependency,
        conveyor.DuplicateJob,
        conveyor.DependencyCycle,
        conveyor.NotSerializable,
    ):
        assert issubclass(error, conveyor.InvalidJob)
    assert issubclass(conveyor.UntrustedFunction, conveyor.NotSerializable)
    assert issubclass(conveyor.InvalidJob, ValueError)
    assert issubclass(conveyor.UnknownJob, KeyError)
    assert issubclass(conveyor.MissingExtra, ImportError)


def test_statuses():
    # given the Status enum / then it has the six documented values, usable as strings
    assert [s.value for s in conveyor.Status] == [
        "waiting",
        "scheduled",
        "running",
        "finished",
        "failed",
        "cancelled",
    ]
    assert conveyor.Status("finished") is conveyor.Status.FINISHED
    assert str(conveyor.Status.RUNNING) == "running"


def test_version_is_a_string():
    assert isinstance(conveyor.__version__, str)
    assert conveyor.__version__.count(".") >= 1


def test_python_dash_m_conveyor_help_exits_zero():
    # given the installed package / when running python -m conveyor --help
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # then it exits 0 and prints a usage text
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout
    assert "conveyor" in done.stdout
