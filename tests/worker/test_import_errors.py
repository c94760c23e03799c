"""A job whose function cannot be loaded in the worker (its module raises at import, imports
a package that is missing, or no longer has the function) fails that job with the import's
real error, its module named, each attempt counted once; every slot of the worker lives on,
and a burst worker still drains the rest. Real ``python -m conveyor worker`` processes on a
SQLite file.

The test's producer imports a working version of the module (a put by reference checks that
the function is there); the module is then rewritten on disk, so the worker process imports
the broken one."""

from __future__ import annotations

import importlib
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import conveyor
from conveyor import Status
from tests.worker.real_workers import App, app, wait_until

WAIT = 30.0

TASKS = """
@q.task(name="pair")
def pair(folder, name):
    # both pair jobs must run at once: proof that two slots are alive
    Path(folder, f"{name}.start").touch()
    deadline = time.monotonic() + 20
    while len(list(Path(folder).glob("*.start"))) < 2:
        if time.monotonic() > deadline:
            raise TimeoutError("the other pair job never started")
        time.sleep(0.01)
    return name


@q.task(name="echo")
def echo(x):
    return x
"""

GOOD = """
def job(x):
    return x
"""

#: what the module becomes on disk before the worker starts; the error the job must carry
BROKEN = {
    "raises": (
        "import os\nraise RuntimeError('the database is unreachable at import')\n"
        "def job(x):\n    return x\n",
        "RuntimeError",
        "the database is unreachable at import",
    ),
    "missing-dependency": (
        "import no_such_dependency_xyz\n\ndef job(x):\n    return x\n",
        "ModuleNotFoundError",
        "No module named 'no_such_dependency_xyz'",
    ),
    "no-such-function": (
        "# the function was removed\n\ndef other(x):\n    return x\n",
        "LookupError",
        "no 'job' in module",
    ),
}


@pytest.fixture
def module_name() -> str:
    return f"tasks_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def made(tmp_path: Path, module_name: str) -> Iterator[App]:
    """An app that allows ``module_name`` (written working into the app's folder)."""
    (tmp_path / f"{module_name}.py").write_text(GOOD, encoding="utf-8")
    with app(tmp_path, TASKS, allow_modules=[module_name]) as made:
        yield made
    sys.modules.pop(module_name, None)


def load(folder: Path, name: str) -> ModuleType:
    """Import the working module in this process (the producer), as it is now."""
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))


def break_module(folder: Path, name: str, source: str) -> None:
    """Rewrite the module the worker will import (the producer keeps the working one)."""
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    for cached in (folder / "__pycache__").glob(f"{name}.*"):
        cached.unlink()


def burst(made: App, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", "worker", made.spec, "--burst", *args],
        cwd=made.folder,
        env=made.env(),
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
        check=False,
    )


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_job_whose_function_cannot_be_loaded_fails_with_the_real_error_once_per_attempt(
    made: App, module_name: str, kind: str
) -> None:
    # given a job (3 attempts at most) of a module that is broken by the time a worker runs
    # it, and jobs of registered tasks before and after it
    source, error_type, message = BROKEN[kind]
    q = made.module.q  # type: ignore[union-attr]
    tasks = made.module
    module = load(made.folder, module_name)
    before = [tasks.echo.enqueue(n) for n in range(3)]  # type: ignore[union-attr]
    broken = q.put(module.job, args=(1,), id="broken", retries=2)
    after = [tasks.echo.enqueue(n) for n in range(3, 6)]  # type: ignore[union-attr]
    break_module(made.folder, module_name, source)

    # when a burst worker with two slots runs
    done = burst(made, "-w", "2")

    # then it drained everything and exited cleanly
    assert done.returncode == 0, done.stderr
    assert [job.result(timeout=0) for job in before + after] == list(range(6))
    # and the broken job failed with the import's real error, its module named, after
    # exactly three attempts
    record = q.job(broken.id)
    assert (record.status, record.attempts) == (Status.FAILED, 3)
    assert record.error is not None
    assert record.error.startswith(f"{error_type}: ")
    assert message in record.error and repr(module_name) in record.error
    # and the worker said so for each attempt: two retried, the last failed for good
    lines = [line for line in done.stderr.splitlines() if "job broken " in line]
    retried = [line for line in lines if " failed: " in line and "; attempt " in line]
    final = [line for line in lines if "no retry left" in line]
    assert len(retried) == 2 and len(final) == 1, done.stderr
    assert all(error_type in line and repr(module_name) in line for line in lines)
    assert "(attempt 3, no retry left)" in final[0]
    # and its summary counts them
    assert done.stdout.strip() == "6 finished, 1 failed, 2 retried, 0 cancelled, 0 put back"


def test_a_worker_keeps_every_slot_after_an_import_error(made: App, module_name: str) -> None:
    # given a long-running worker with two slots, and a job whose module raises at import
    q = made.module.q  # type: ignore[union-attr]
    module = load(made.folder, module_name)
    broken = q.put(module.job, args=(1,), id="broken")
    break_module(made.folder, module_name, BROKEN["raises"][0])
    worker = made.worker("-w", "2")
    wait_until(lambda: q.status(broken.id) == Status.FAILED, WAIT, "the broken job failed")
    assert q.job(broken.id).attempts == 1

    # when two jobs that can only finish together are put
    pair = made.module.pair  # type: ignore[union-attr]
    jobs = [pair.enqueue(str(made.marks), name) for name in ("left", "right")]

    # then both run at once (both slots are alive) and finish
    assert [job.result(timeout=WAIT) for job in jobs] == ["left", "right"]
    assert worker.poll() is None  # the worker goes on
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(WAIT) == 0
    log = made.log(0)
    assert "RuntimeError: importing module" in log and "no retry left" in log
    assert "2 finished, 1 failed, 0 retried, 0 cancelled, 0 put back" in log


def test_an_import_error_is_not_a_refusal_of_trust(made: App, module_name: str) -> None:
    # the module is allowed: the error says what the import raised, not that it is untrusted
    q = made.module.q  # type: ignore[union-attr]
    module = load(made.folder, module_name)
    q.put(module.job, args=(1,), id="broken")
    break_module(made.folder, module_name, BROKEN["missing-dependency"][0])
    done = burst(made)
    assert done.returncode == 0, done.stderr
    error = q.job("broken").error or ""
    assert "UntrustedFunction" not in error and "not found" not in error
    assert "No module named 'no_such_dependency_xyz'" in error
    with conveyor.Queue(q.url, workers=0) as reader:
        assert reader.job("broken").status == Status.FAILED
