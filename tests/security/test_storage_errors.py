"""Storage failures surface as conveyor.StorageError naming the file, change nothing, and leave
the queue working once the cause is gone: unusable paths, and really full disks (SQLite's
``max_page_count`` on a real file, and a small tmpfs mounted for the test)."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from pathlib import Path

import pytest

import conveyor
from conveyor.runner import run_worker
from tests.faults import fill_disk
from tests.security import jobs
from tests.security.conftest import JOBS

#: an argument big enough to need new pages
BIG = "x" * 4000
#: puts tried before concluding the disk never filled
MAX_PUTS = 2000


# ------------------------------------------------------------------ unusable paths
def test_a_path_that_cannot_be_created_raises_storage_error_naming_it() -> None:
    with pytest.raises(conveyor.StorageError, match=re.escape("'/proc/q.db'")) as error:
        conveyor.Queue("sqlite:////proc/q.db", workers=0)
    assert isinstance(error.value.__cause__, OSError | sqlite3.Error)


def test_a_directory_raises_storage_error_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "a-folder.db"
    folder.mkdir()
    with pytest.raises(conveyor.StorageError, match=re.escape(str(folder))) as error:
        conveyor.Queue(f"sqlite:///{folder}", workers=0)
    assert isinstance(error.value.__cause__, sqlite3.Error)
    assert list(folder.iterdir()) == []


def test_a_file_that_is_not_a_database_raises_storage_error_and_is_left_alone(
    tmp_path: Path,
) -> None:
    notes = tmp_path / "notes.txt"
    text = b"these are notes, not a database\n" * 200
    notes.write_bytes(text)
    notes.chmod(0o644)
    with pytest.raises(conveyor.StorageError, match=re.escape(str(notes))) as error:
        conveyor.Queue(f"sqlite:///{notes}", workers=0)
    assert "not a database" in str(error.value)
    assert notes.read_bytes() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# ------------------------------------------------------------------ full disks
def fill_until_refused(q: conveyor.Queue, path: Path) -> tuple[str, conveyor.StorageError]:
    """Put big jobs until one is refused; the refused id and its error."""
    for n in range(MAX_PUTS):
        job_id = f"big{n}"
        try:
            q.put(jobs.echo, args=(BIG,), id=job_id)
        except conveyor.StorageError as error:
            return job_id, error
    raise AssertionError(f"{MAX_PUTS} puts fitted: the storage never filled")


def ids_in_file(path: Path) -> list[str]:
    """What another process sees in the file: committed rows only."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [row[0] for row in db.execute("SELECT id FROM jobs ORDER BY seq")]


def statuses_in_file(path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {row[0] for row in db.execute("SELECT status FROM jobs")}


def assert_refused_put_changed_nothing(
    q: conveyor.Queue, path: Path, refused: str, error: conveyor.StorageError, before: list[str]
) -> None:
    assert str(path) in str(error)
    assert "full" in str(error)
    assert isinstance(error.__cause__, sqlite3.Error)
    assert ids_in_file(path) == before
    assert q.size() == len(before)
    with pytest.raises(conveyor.UnknownJob):
        q.status(refused)


def test_a_full_database_refuses_a_put_and_works_again_once_it_has_room(tmp_path: Path) -> None:
    path = tmp_path / "full.db"
    q = conveyor.Queue(f"sqlite:///{path}", workers=0, allow_modules=[JOBS])
    try:
        first = [q.put(jobs.echo, args=(n,), id=f"small{n}").id for n in range(5)]
        # the queue's own connection may not grow the file past its current size: really full
        db = q.backend._db  # type: ignore[attr-defined]
        (pages,) = db.execute("PRAGMA page_count").fetchone().values()
        db.execute(f"PRAGMA max_page_count = {pages}")
        refused, error = fill_until_refused(q, path)
        before = [i for i in ids_in_file(path) if i != refused]
        assert_refused_put_changed_nothing(q, path, refused, error, before)

        db.execute("PRAGMA max_page_count = 1073741823")  # room again
        later = q.put(jobs.echo, args=("later",), id="later")
        assert ids_in_file(path) == [*before, "later"]  # committed: other processes see it
        assert run_worker(q, workers=1, burst=True, handle_signals=False) == len(before) + 1
        assert later.result(timeout=0) == "later"
        assert [q.result(i, timeout=0) for i in first] == list(range(5))
        assert statuses_in_file(path) == {"finished"}
    finally:
        q.close()


def test_a_full_disk_refuses_puts_and_claims_and_the_queue_works_once_space_is_freed(
    small_disk: Path,
) -> None:
    path = small_disk / "queue.db"
    q = conveyor.Queue(f"sqlite:///{path}", workers=0, allow_modules=[JOBS])
    try:
        first = [q.put(jobs.echo, args=(n,), id=f"small{n}").id for n in range(5)]
        filler = fill_disk(small_disk)
        refused, error = fill_until_refused(q, path)
        before = [i for i in ids_in_file(path) if i != refused]
        assert_refused_put_changed_nothing(q, path, refused, error, before)
        # a claim is a write too: refused as a conveyor error, and nothing is claimed
        with pytest.raises(conveyor.StorageError, match=re.escape(str(path))):
            q.backend.claim("probe/1", "thread", 1)
        assert statuses_in_file(path) == {"waiting"}

        filler.unlink()  # space again: the same queue object puts and claims
        later = q.put(jobs.echo, args=("later",), id="later")
        assert ids_in_file(path) == [*before, "later"]
        assert run_worker(q, workers=2, burst=True, handle_signals=False) == len(before) + 1
        assert later.result(timeout=0) == "later"
        assert [q.result(i, timeout=0) for i in first] == list(range(5))
        assert statuses_in_file(path) == {"finished"}
    finally:
        q.close()
