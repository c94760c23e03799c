"""Records as a table: ``q.jobs()`` carries every field, ``q.dataframe()`` has a column per
field plus ``wait``, with the documented dtypes; without pandas, an ImportError naming the
extra."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

import conveyor
from conveyor.observe.table import COLUMNS
from tests.observe.records import add, boom

FIELDS = [f.name for f in dataclasses.fields(conveyor.JobRecord)]


def run_some(q: conveyor.Queue) -> dict[str, conveyor.Job]:
    """A finished job with every user field set, a failed one, a cancelled one."""
    first = q.put(
        add, args=(1,), kwargs={"b": 2}, id="first", priority=-3, lane="disk",
        exclusive=["db"], incompatible=["other"], meta={"who": "test"},
    )  # fmt: skip
    failed = q.put(boom, args=("no",), id="failed", after=[first])
    cancelled = q.put(add, args=(5,), id="cancelled", delay=3600)
    q.cancel("cancelled")
    q.wait(timeout=30)
    return {"first": first, "failed": failed, "cancelled": cancelled}


@pytest.fixture(params=["memory", "sqlite"])
def queue(request: pytest.FixtureRequest, tmp_path: Path, make_queue) -> conveyor.Queue:
    if request.param == "memory":
        return make_queue()
    return make_queue(f"sqlite:///{tmp_path}/jobs.db", allow_modules=["tests.observe.records"])


def test_jobs_carry_every_record_field(queue: conveyor.Queue) -> None:
    # given a finished, a failed and a cancelled job
    run_some(queue)
    # when listing the jobs
    records = {r.id: r for r in queue.jobs()}
    # then the finished one has every field, as put and as run
    first = records["first"]
    assert (first.task, first.status, first.args, first.kwargs) == (
        "add", conveyor.Status.FINISHED, (1,), {"b": 2},
    )  # fmt: skip
    assert (first.priority, first.lane, first.exclusive, first.incompatible) == (
        -3, "disk", ("db",), ("other",),
    )  # fmt: skip
    assert (first.meta, first.result, first.attempts) == ({"who": "test"}, 3, 1)
    assert first.worker
    assert first.submitted and first.started and first.ended
    assert first.submitted <= first.started <= first.ended
    assert first.runtime is not None and first.runtime >= 0
    # and the failed one its dependency, error and traceback
    failed = records["failed"]
    assert failed.after == ("first",)
    assert failed.error and failed.error.startswith("RuntimeError: no")
    assert failed.traceback and "RuntimeError" in failed.traceback
    # and every record equals what q.job() says of it
    for job_id, record in records.items():
        assert record == queue.job(job_id)
    # and filtering by status keeps only that status
    assert [r.id for r in queue.jobs("cancelled")] == ["cancelled"]


def test_dataframe_has_every_field_with_its_dtype(queue: conveyor.Queue) -> None:
    # given a finished, a failed and a cancelled job
    run_some(queue)
    # when asking for the data frame
    frame = queue.dataframe()
    # then every record field is a column, plus wait, one row per job
    assert list(frame.columns) == [*FIELDS, "wait"] == list(COLUMNS)
    assert list(frame["id"]) == ["first", "failed", "cancelled"]
    # and the times are tz-aware UTC datetimes, the durations float seconds
    for name in ("submitted", "started", "ended"):
        assert str(frame[name].dtype) == "datetime64[ns, UTC]", name
    for name in ("runtime", "wait"):
        assert frame[name].dtype == "float64", name
    assert frame["priority"].dtype == "int64" and frame["attempts"].dtype == "int64"
    assert isinstance(frame["status"].dtype, pd.CategoricalDtype)
    assert set(frame["status"].cat.categories) == {s.value for s in conveyor.Status}
    # and the values are the records'
    first = frame.set_index("id").loc["first"]
    record = queue.job("first")
    assert first["started"] == pd.Timestamp(record.started)
    assert first["wait"] == pytest.approx((record.started - record.submitted).total_seconds())
    assert first["runtime"] == pytest.approx(record.runtime)
    assert (first["status"], first["lane"], first["result"]) == ("finished", "disk", 3)
    # and a job that never started has no start and no wait
    cancelled = frame.set_index("id").loc["cancelled"]
    assert pd.isna(cancelled["started"]) and pd.isna(cancelled["wait"])
    # and a status filter works as for jobs()
    assert list(queue.dataframe("failed")["id"]) == ["failed"]


def test_an_empty_queue_gives_an_empty_frame_with_the_columns(make_queue) -> None:
    frame = make_queue().dataframe()
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 0
    assert str(frame["ended"].dtype) == "datetime64[ns, UTC]"


def test_wait_is_start_minus_submit() -> None:
    from conveyor.observe.table import row

    submitted = datetime(2026, 1, 1, tzinfo=UTC)
    started = datetime(2026, 1, 1, 0, 0, 2, 500000, tzinfo=UTC)
    record = conveyor.JobRecord(
        "x", "t", conveyor.Status.RUNNING, submitted=submitted, started=started
    )
    assert row(record)["wait"] == 2.5


def test_without_pandas_the_error_names_the_extra() -> None:
    # given an interpreter where pandas cannot be imported
    code = (
        "import sys; sys.modules['pandas'] = None\n"
        "import conveyor\n"
        "q = conveyor.Queue(workers=0)\n"
        "try:\n"
        "    q.dataframe()\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    # then q.dataframe() raises MissingExtra, an ImportError saying what to install
    assert done.returncode == 0, done.stderr
    assert "MissingExtra" in done.stdout
    assert "pip install 'conveyor[pandas]'" in done.stdout
