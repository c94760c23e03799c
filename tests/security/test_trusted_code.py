"""Only trusted code runs on a durable queue: registered tasks and allowed modules' functions.

The attacker here can write the SQLite file (a plain ``sqlite3`` connection edits the rows) but
not the code: the worker is a real ``conveyor worker`` process running the app's own module.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import conveyor
from conveyor.runner import run_worker
from tests.security import jobs
from tests.security.conftest import JOBS, Plant

Command = Callable[..., subprocess.CompletedProcess[str]]

APP = """
import conveyor

q = conveyor.Queue({url!r}, workers=0, **{settings!r})
"""

#: how the queue stores jobs -> the error a job with a changed function reference fails with
VARIANTS = {
    "json": ({}, "UntrustedFunction"),
    "json+secret": ({"secret": "s3cret"}, "PayloadRefused"),
    "pickle+secret": ({"serializer": "pickle", "secret": "s3cret"}, "PayloadRefused"),
}


def db_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


@contextlib.contextmanager
def raw(url: str) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the queue's file, as an intruder has; committed, closed."""
    db = sqlite3.connect(db_path(url))
    try:
        with db:
            yield db
    finally:
        db.close()


def edit(url: str, sql: str, *args: Any) -> None:
    """Change one row of the file as an intruder would."""
    with raw(url) as db:
        assert db.execute(sql, args).rowcount == 1


def failure(q: conveyor.Queue, job_id: str) -> conveyor.JobFailed:
    with pytest.raises(conveyor.JobFailed) as failed:
        q.result(job_id, timeout=0)
    return failed.value


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_changed_function_reference_is_refused_before_anything_is_imported(
    variant: str, url: str, tmp_path: Path, plant: Plant, conveyor_command: Command
) -> None:
    extra, refused_as = VARIANTS[variant]
    settings = {"allow_modules": [JOBS], **extra}
    imported, ran = tmp_path / "imported", tmp_path / "ran"
    tripwire = plant.tripwire("tripwire", imported)  # importing it writes `imported`
    with conveyor.Queue(url, workers=0, **settings) as q:
        # the refused jobs come first: a worker that claims them goes on to the next
        q.put(jobs.echo, args=("x",), id="forged", retries=3)
        q.put(jobs.echo, args=(f"touch {ran}",), id="shell", retries=3)
        q.put(jobs.echo, args=("fine",), id="fine")
    edit(url, "UPDATE jobs SET ref = ? WHERE id = 'forged'", f"{tripwire}:boom")
    edit(url, "UPDATE jobs SET ref = 'os:system' WHERE id = 'shell'")

    done = conveyor_command(APP.format(url=url, settings=settings))

    assert done.returncode == 0, done.stderr
    assert not imported.exists(), "the worker imported a module named only by the row"
    assert not ran.exists(), "the worker ran os.system"
    with conveyor.Queue(url, workers=0, **settings) as q:
        assert q.result("fine", timeout=0) == "fine"
        for job_id in ("forged", "shell"):
            error = failure(q, job_id)
            assert error.error_type == refused_as
            assert q.job(job_id).attempts == 1  # failed for good: no retry can mend it
        if refused_as == "UntrustedFunction":
            message = failure(q, "shell").error
            assert "'os:system'" in message and "nothing was imported" in message
            assert "@q.task" in message and "allow_modules=['os']" in message


def test_a_signed_payload_copied_into_another_job_is_refused(
    url: str, conveyor_command: Command
) -> None:
    settings = {"allow_modules": [JOBS], "secret": "s3cret"}
    with conveyor.Queue(url, workers=0, **settings) as q:
        for job_id in ("a", "b", "c"):
            q.put(jobs.echo, args=(job_id,), id=job_id)
    with raw(url) as db:
        payload, mac = db.execute("SELECT payload, mac FROM jobs WHERE id = 'a'").fetchone()
    edit(url, "UPDATE jobs SET payload = ? WHERE id = 'b'", payload)
    edit(url, "UPDATE jobs SET payload = ?, mac = ? WHERE id = 'c'", payload, mac)

    done = conveyor_command(APP.format(url=url, settings=settings))

    assert done.returncode == 0, done.stderr
    with conveyor.Queue(url, workers=0, **settings) as q:
        assert q.result("a", timeout=0) == "a"
        for job_id in ("b", "c"):
            error = failure(q, job_id)
            assert error.error_type == "PayloadRefused"
            assert "signature" in error.error


def test_an_unsigned_job_is_refused_before_any_import_or_unpickling(
    url: str, tmp_path: Path, plant: Plant, conveyor_command: Command
) -> None:
    imported, unpickled = tmp_path / "imported", tmp_path / "unpickled"
    tripwire = plant.tripwire("tripwire", imported)
    unsigned = {"allow_modules": [JOBS], "serializer": "pickle"}
    with conveyor.Queue(url, workers=0, **unsigned) as q:  # no secret: nothing signed
        q.put(jobs.echo, args=(jobs.Bomb(str(unpickled)),), id="unsigned")
    edit(url, "UPDATE jobs SET ref = ? WHERE id = 'unsigned'", f"{tripwire}:boom")
    signed = {**unsigned, "secret": "s3cret"}

    done = conveyor_command(APP.format(url=url, settings=signed))

    assert done.returncode == 0, done.stderr
    assert not imported.exists()
    assert not unpickled.exists()
    with conveyor.Queue(url, workers=0, **signed) as q:
        assert failure(q, "unsigned").error_type == "PayloadRefused"


def test_an_allowed_module_does_not_lend_the_modules_it_imported(
    url: str, tmp_path: Path, plant: Plant, conveyor_command: Command
) -> None:
    ran = tmp_path / "ran"
    gateway = plant.name("gateway")
    plant.module(gateway, "import os\nimport subprocess\n\ndef ok(x):\n    return x\n")
    settings = {"allow_modules": [JOBS, gateway]}
    module = __import__(gateway)
    with conveyor.Queue(url, workers=0, **settings) as q:
        q.put(module.ok, args=("ok",), id="ok")
        for job_id in ("via-os", "via-subprocess", "dunder"):
            q.put(module.ok, args=(f"touch {ran}",), id=job_id)
    edit(url, "UPDATE jobs SET ref = ? WHERE id = 'via-os'", f"{gateway}:os.system")
    edit(url, "UPDATE jobs SET ref = ? WHERE id = 'via-subprocess'", f"{gateway}:subprocess.run")
    edit(url, "UPDATE jobs SET ref = ? WHERE id = 'dunder'", f"{gateway}:ok.__globals__")

    done = conveyor_command(APP.format(url=url, settings=settings))

    assert done.returncode == 0, done.stderr
    assert not ran.exists()
    with conveyor.Queue(url, workers=0, **settings) as q:
        assert q.result("ok", timeout=0) == "ok"
        assert failure(q, "via-os").error_type == "UntrustedFunction"
        assert failure(q, "via-subprocess").error_type == "UntrustedFunction"
        assert failure(q, "dunder").error_type == "LookupError"


def test_a_put_of_a_function_no_worker_would_run_is_refused_naming_both_ways(url: str) -> None:
    other = conveyor.Queue("memory://", workers=0)
    foreign = other.task(name="foreign")(jobs.echo)  # a task of another queue
    q = conveyor.Queue(url, workers=0)
    try:
        attempts: list[Callable[[], object]] = [
            lambda: q.put(jobs.echo, args=(1,)),
            lambda: q.submit(jobs.echo, 1),
            lambda: q.map(jobs.echo, [1, 2]),
            lambda: q.put(math.factorial, args=(3,)),
            lambda: q.put(foreign, args=(1,)),
        ]
        for attempt in attempts:
            with pytest.raises(conveyor.UntrustedFunction) as refused:
                attempt()
            message = str(refused.value)
            assert "@q.task" in message and "q.task()(fn)" in message
            assert "allow_modules=[" in message and "CONVEYOR_ALLOW_MODULES=" in message
        with pytest.raises(
            conveyor.NotSerializable, match=r"allow_modules=\['tests.security.jobs'\]"
        ):
            q.put(jobs.echo)
        assert q.size() == 0
    finally:
        q.close()
        other.close()
    # memory:// lives in one process: it takes any callable, as before
    with conveyor.Queue("memory://", workers=1) as mem:
        assert mem.put(jobs.echo, args=(1,)).result(timeout=10) == 1
        assert mem.put(lambda: 2).result(timeout=10) == 2


@pytest.fixture
def package(plant: Plant) -> str:
    """A planted package ``pkg_*`` with ``top`` in its ``__init__``, ``jobs.f``, ``jobs_extra.f``
    and ``sub.deep.g``; its name."""
    name = plant.name("pkg")
    plant.module(f"{name}.__init__", "def top(x):\n    return ('top', x)\n")
    plant.module(f"{name}.jobs", "def f(x):\n    return ('f', x)\n")
    plant.module(f"{name}.jobs_extra", "def f(x):\n    return ('extra', x)\n")
    plant.module(f"{name}.sub.deep", "def g(x):\n    return ('g', x)\n")
    return name


def functions(name: str) -> dict[str, Callable[..., Any]]:
    """The planted package's functions by the module each belongs to."""
    return {
        name: importlib.import_module(name).top,
        f"{name}.jobs": importlib.import_module(f"{name}.jobs").f,
        f"{name}.jobs_extra": importlib.import_module(f"{name}.jobs_extra").f,
        f"{name}.sub.deep": importlib.import_module(f"{name}.sub.deep").g,
    }


@pytest.mark.parametrize(
    ("pattern", "allowed"),
    [
        ("{pkg}.jobs", ["{pkg}.jobs"]),  # exactly that module
        ("{pkg}.*", ["{pkg}.jobs", "{pkg}.jobs_extra", "{pkg}.sub.deep"]),  # not pkg itself
        ("{pkg}", ["{pkg}"]),  # the package's own __init__, none of its submodules
    ],
)
def test_allow_modules_names_modules_exactly_or_a_packages_submodules(
    pattern: str, allowed: list[str], package: str, url: str
) -> None:
    by_module = functions(package)
    allowed = [a.format(pkg=package) for a in allowed]
    with conveyor.Queue(url, workers=0, allow_modules=[pattern.format(pkg=package)]) as q:
        jobs_put = {}
        for module, fn in by_module.items():
            if module in allowed:
                jobs_put[module] = q.put(fn, args=(1,))
            else:
                with pytest.raises(conveyor.UntrustedFunction, match=f"'{module}'"):
                    q.put(fn, args=(1,))
        assert run_worker(q, workers=1, burst=True, handle_signals=False) == len(allowed)
        assert sorted(jobs_put) == sorted(allowed)
        for module, job in jobs_put.items():
            assert job.result(timeout=0) == list(by_module[module](1))


def test_allow_modules_from_the_environment_is_comma_separated(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_ALLOW_MODULES", f" {JOBS}, math ,")
    with conveyor.Queue(url, workers=0) as q:
        assert q.settings.allow_modules == (JOBS, "math")
        q.put(math.factorial, args=(4,), id="fact")
        q.put(jobs.echo, args=("e",), id="echo")
        assert run_worker(q, workers=1, burst=True, handle_signals=False) == 2
        assert (q.result("fact"), q.result("echo")) == (24, "e")
    # a named queue reads its own variable first
    monkeypatch.setenv("REPORTS_ALLOW_MODULES", "math")
    with conveyor.Queue(url, name="reports", workers=0) as named:
        assert named.settings.allow_modules == ("math",)
    # a JSON list, as pydantic-settings reads lists elsewhere, works too
    monkeypatch.setenv("CONVEYOR_ALLOW_MODULES", f'["{JOBS}", "math"]')
    with conveyor.Queue(url, workers=0) as q:
        assert q.settings.allow_modules == (JOBS, "math")
    # a name that is no module is refused when the queue is built, naming the setting
    monkeypatch.setenv("CONVEYOR_ALLOW_MODULES", "myapp/../evil")
    with pytest.raises(conveyor.ConveyorError, match="allow_modules"):
        conveyor.Queue(url, workers=0)
    monkeypatch.setenv("CONVEYOR_ALLOW_MODULES", "*")
    with pytest.raises(conveyor.ConveyorError, match="allow_modules"):
        conveyor.Queue(url, workers=0)


REGISTERED_APP = """
import math

import conveyor

q = conveyor.Queue({url!r}, workers=0)


@q.task
def double(x):
    return 2 * x


def _triple(x):
    return 3 * x


q.task(name="triple")(_triple)  # an existing function, known by its name
q.task()(math.factorial)  # an existing function, known by its path math:factorial
"""


def test_registered_tasks_run_whether_stored_by_name_or_by_path(
    url: str, tmp_path: Path, conveyor_command: Command, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the producer imports the app, as a producer does; math is not in allow_modules
    app = tmp_path / "app"
    app.mkdir()
    (app / "secapp.py").write_text(REGISTERED_APP.format(url=url), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("secapp", app / "secapp.py")
    assert spec is not None and spec.loader is not None
    secapp = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "secapp", secapp)  # forgotten again at teardown
    spec.loader.exec_module(secapp)
    q: conveyor.Queue = secapp.q

    @q.task(name="triple")
    def triple(x: int) -> int:  # no import path here: stored by its name, "triple"
        return -1

    by_path = secapp.double.enqueue(2)
    existing = q.put(math.factorial, args=(5,))  # stored as math:factorial, registered
    by_name = triple.enqueue(3)
    q.put(math.factorial, args=(6,), id="smuggled")
    q.close()
    with raw(url) as db:
        refs = dict(db.execute("SELECT id, ref FROM jobs").fetchall())
    assert refs[by_path.id] == "secapp:double"
    assert refs[by_name.id] == "triple"
    # registering math.factorial trusts that function, not its whole module
    edit(url, "UPDATE jobs SET ref = 'math:sqrt' WHERE id = 'smuggled'")

    done = conveyor_command(REGISTERED_APP.format(url=url))

    assert done.returncode == 0, done.stderr
    with conveyor.Queue(url, workers=0) as reader:
        assert reader.result(by_path.id, timeout=0) == 4
        assert reader.result(existing.id, timeout=0) == 120
        assert reader.result(by_name.id, timeout=0) == 9  # the worker app's triple ran
        assert failure(reader, "smuggled").error_type == "UntrustedFunction"


def test_enqueue_on_the_command_line_refuses_an_untrusted_function_without_importing_it(
    url: str, tmp_path: Path, plant: Plant, conveyor_command: Command
) -> None:
    imported = tmp_path / "imported"
    tripwire = plant.tripwire("tripwire", imported)
    app = APP.format(url=url, settings={"allow_modules": [JOBS]})

    refused = conveyor_command(app, "enqueue", "secapp:q", f"{tripwire}:boom")
    accepted = conveyor_command(app, "enqueue", "secapp:q", f"{JOBS}:echo", "--args", '["hi"]')

    assert refused.returncode != 0
    assert "@q.task" in refused.stderr and f"allow_modules=['{tripwire}']" in refused.stderr
    assert not imported.exists()
    assert accepted.returncode == 0, accepted.stderr
    with conveyor.Queue(url, workers=0) as q:
        assert [(r.id, r.args) for r in q.jobs()] == [(accepted.stdout.strip(), ("hi",))]


def test_a_file_from_before_signed_envelopes_is_upgraded_in_place(url: str) -> None:
    settings = {"allow_modules": [JOBS]}
    with conveyor.Queue(url, workers=0, **settings) as q:
        q.put(jobs.echo, args=("kept",), id="old")
    with raw(url) as db:  # the file as an older conveyor left it
        db.execute("ALTER TABLE jobs DROP COLUMN mac")
    with conveyor.Queue(url, workers=0, **settings) as q:
        with raw(url) as db:
            columns = [row[1] for row in db.execute("PRAGMA table_info(jobs)")]
        assert "mac" in columns
        q.put(jobs.echo, args=("new",), id="new")
        assert run_worker(q, workers=1, burst=True, handle_signals=False) == 2
        assert (q.result("old"), q.result("new")) == ("kept", "new")
    # with a secret, an old unsigned job is refused like any unsigned one
    with conveyor.Queue(url, workers=0, **settings) as q:
        q.put(jobs.echo, args=("unsigned",), id="unsigned")
    with raw(url) as db:
        db.execute("ALTER TABLE jobs DROP COLUMN mac")
    with conveyor.Queue(url, workers=0, secret="s3cret", **settings) as q:
        assert run_worker(q, workers=1, burst=True, handle_signals=False) == 0
        assert failure(q, "unsigned").error_type == "PayloadRefused"
