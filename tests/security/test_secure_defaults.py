"""Secure defaults: a warning for pickle without a secret, listings that never unpickle, and
database files readable by their owner only."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import conveyor
from conveyor.runner import run_worker
from tests.security import jobs
from tests.security.conftest import JOBS

Command = Callable[..., subprocess.CompletedProcess[str]]


# ------------------------------------------------------------------ the pickle warning
def test_a_durable_queue_warns_at_start_when_it_pickles_without_a_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def warnings_at_start(name: str, **settings: str) -> list[logging.LogRecord]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="conveyor"):
            conveyor.Queue(f"sqlite:///{tmp_path}/{name}.db", workers=0, **settings).close()
        return [r for r in caplog.records if r.levelno >= logging.WARNING]

    (warning,) = warnings_at_start("pickled", serializer="pickle")
    assert warning.name == "conveyor"
    message = warning.getMessage()
    assert "pickle" in message and "secret" in message and "run any code" in message
    assert f"{tmp_path}/pickled.db" in message
    # signed pickle, json and msgpack are quiet
    assert warnings_at_start("signed", serializer="pickle", secret="s3cret") == []
    assert warnings_at_start("json") == []
    assert warnings_at_start("msgpack", serializer="msgpack") == []


# ------------------------------------------------------------------ listings
LISTING_APP = """
import conveyor

q = conveyor.Queue({url!r}, workers=0, serializer="pickle")
"""


def test_listing_jobs_never_unpickles_an_unsigned_payload(
    url: str, tmp_path: Path, conveyor_command: Command
) -> None:
    args_mark, result_mark = tmp_path / "args-unpickled", tmp_path / "result-unpickled"
    q = conveyor.Queue(url, workers=0, serializer="pickle", allow_modules=[JOBS])
    try:
        # a job whose arguments unpickle into a side effect; it stays waiting
        q.put(jobs.echo, args=(jobs.Bomb(str(args_mark)),), id="armed", delay=3600)
        # a job that runs and whose result unpickles into a side effect
        armed_result = q.put(jobs.arm, args=(str(result_mark),), id="result")
        assert run_worker(q, workers=1, burst=True, handle_signals=False) == 1

        records = {r.id: r for r in q.jobs()}
        one = q.job("armed")
        done = q.job("result")
        listed = conveyor_command(LISTING_APP.format(url=url), "jobs", "secapp:q")

        assert listed.returncode == 0, listed.stderr
        assert "armed" in listed.stdout and "result" in listed.stdout
        assert not args_mark.exists(), "a listing unpickled a job's arguments"
        assert not result_mark.exists(), "a listing unpickled a job's result"
        # what is shown instead says why
        for record in (records["armed"], one):
            assert "not decoded" in repr(record.args) and "unsigned pickle" in repr(record.args)
            assert "not decoded" in repr(record.kwargs)
        assert records["result"].status == "finished" and done.status == "finished"
        assert "not decoded" in repr(records["result"].result) and "not decoded" in repr(
            done.result
        )
        # asking for the result reads it: that is what the user asked for
        armed_result.result(timeout=0)
        assert result_mark.exists()
    finally:
        q.close()
    # with a secret every payload is checked before it is read: listed in full
    settings = {"serializer": "pickle", "secret": "s3cret", "allow_modules": [JOBS]}
    with conveyor.Queue(f"sqlite:///{tmp_path}/signed.db", workers=0, **settings) as signed:
        signed.put(jobs.echo, args=({1, 2},), kwargs={"k": b"v"}, id="set")
        assert (signed.job("set").args, signed.job("set").kwargs) == (({1, 2},), {"k": b"v"})
        assert [r.args for r in signed.jobs()] == [({1, 2},)]


# ------------------------------------------------------------------ file modes
@pytest.fixture
def umask() -> Iterator[None]:
    """A common umask (022), whatever the test runner's: a file made with 0644 shows it."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def modes(db: Path) -> dict[str, int]:
    """The permission bits of the database file and its -wal and -shm."""
    return {
        suffix or "db": stat.S_IMODE(os.stat(f"{db}{suffix}").st_mode)
        for suffix in ("", "-wal", "-shm")
    }


@pytest.mark.usefixtures("umask")
def test_database_files_are_created_readable_by_their_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "private" / "queue.db"
    with conveyor.Queue(f"sqlite:///{db}", workers=0, allow_modules=[JOBS]) as q:
        q.put(jobs.echo, args=(1,))  # a write: the -wal has frames
        assert modes(db) == {"db": 0o600, "-wal": 0o600, "-shm": 0o600}


@pytest.mark.usefixtures("umask")
def test_file_mode_sets_the_mode_of_new_files_and_an_existing_file_keeps_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared.db"
    with conveyor.Queue(f"sqlite:///{shared}", workers=0, file_mode=0o640):
        assert modes(shared) == {"db": 0o640, "-wal": 0o640, "-shm": 0o640}
    monkeypatch.setenv("CONVEYOR_FILE_MODE", "0660")  # octal, as chmod reads it
    from_env = tmp_path / "env.db"
    with conveyor.Queue(f"sqlite:///{from_env}", workers=0) as q:
        assert q.settings.file_mode == 0o660
        assert stat.S_IMODE(os.stat(from_env).st_mode) == 0o660
    monkeypatch.delenv("CONVEYOR_FILE_MODE")
    existing = tmp_path / "existing.db"
    sqlite3.connect(existing).close()  # made by someone else, with the umask's 0644
    existing.chmod(0o644)
    with conveyor.Queue(f"sqlite:///{existing}", workers=0):
        assert stat.S_IMODE(os.stat(existing).st_mode) == 0o644
    # a mode that would lock the owner out is refused before any file is made
    with pytest.raises(conveyor.ConveyorError, match="file_mode"):
        conveyor.Queue(f"sqlite:///{tmp_path}/locked.db", workers=0, file_mode=0o400)
    assert not (tmp_path / "locked.db").exists()
