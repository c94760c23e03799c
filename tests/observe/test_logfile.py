"""The job log: one line per job end, never two, written by the process that ended the job --
here two ``conveyor worker`` processes and the producer appending to one file -- in CSV (its
header once) or JSONL; any other extension refused at once."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from subprocess import PIPE

import pytest

import conveyor
from conveyor import Status
from conveyor.job import TERMINAL
from conveyor.observe.logfile import LOG_COLUMNS

REPO = Path(__file__).resolve().parents[2]
WAIT = 30

APP = '''
"""A conveyor app whose every process logs the job ends it causes to LOG_FILE."""

import os
from pathlib import Path
from subprocess import PIPE

import conveyor

HERE = Path(__file__).resolve().parent
q = conveyor.Queue(
    "sqlite:///" + str(HERE / "jobs.db"), workers=0, log_file=os.environ["LOG_FILE"]
)


@q.task(name="add")
def add(a, b=0):
    return a + b


@q.task(name="boom", retries=1)
def boom(message):
    raise RuntimeError(message)
'''


def read_log(path: Path) -> list[dict[str, object]]:
    """The log's rows: CSV through csv.DictReader (its header checked), JSONL line by line."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines()]
    rows = list(csv.reader(text.splitlines()))
    assert rows[0] == list(LOG_COLUMNS)
    assert list(LOG_COLUMNS) not in rows[1:], "the header was written twice"
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_worker_processes_log_each_end_once(tmp_path: Path, suffix: str) -> None:
    # given an app whose queue logs to one file, and a producer on it that logs there too
    (tmp_path / "app.py").write_text(APP)
    log = tmp_path / f"ends{suffix}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
           "LOG_FILE": str(log)}  # fmt: skip
    os.environ["LOG_FILE"] = str(log)
    sys.path.insert(0, str(tmp_path))
    try:
        import app  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
        del os.environ["LOG_FILE"]
    q: conveyor.Queue = app.q
    try:
        # jobs that finish, fail after a retry, are cancelled by the producer, and are
        # cancelled by a worker's cascade (their dependency failed)
        added = [app.add.enqueue(n, 1).id for n in range(20)]
        failed = app.boom.enqueue("no").id
        cascaded = q.put(app.add, args=(0,), after=[failed]).id
        cancelled = q.put(app.add, args=(0,), delay=3600).id
        assert q.cancel(cancelled)
        # when two worker processes drain the queue
        command = [sys.executable, "-m", "conveyor", "worker", "app:q", "--burst", "-w", "2"]
        workers = [
            subprocess.Popen(command, cwd=tmp_path, env=env, stdout=PIPE, stderr=PIPE, text=True)
            for _ in range(2)
        ]
        for worker in workers:
            _out, err = worker.communicate(timeout=WAIT)
            assert worker.returncode == 0, err
        # then every job ended
        ended = {r.id: r for r in q.jobs()}
        assert len(ended) == 23 and all(r.status in TERMINAL for r in ended.values())
        assert {r.status for r in ended.values()} == {
            Status.FINISHED, Status.FAILED, Status.CANCELLED,
        }  # fmt: skip
        # and the log holds exactly one line per ended job, with its status
        rows = read_log(log)
        assert sorted(str(row["id"]) for row in rows) == sorted(ended)
        for row in rows:
            record = ended[str(row["id"])]
            assert row["status"] == record.status.value
            assert row["task"] == record.task
        by_id = {str(row["id"]): row for row in rows}
        assert by_id[failed]["status"] == "failed" and str(by_id[failed]["attempts"]) == "2"
        assert "RuntimeError: no" in str(by_id[failed]["error"])
        assert by_id[cascaded]["status"] == by_id[cancelled]["status"] == "cancelled"
        assert all(by_id[i]["status"] == "finished" for i in added)
        # and the values read back as documented: ISO times, seconds, JSON
        row = by_id[added[3]]
        result = row["result"] if suffix == ".jsonl" else json.loads(str(row["result"]))
        assert result == 4
        assert float(str(row["wait"])) >= 0 and float(str(row["runtime"])) >= 0
        assert str(row["ended"]).endswith("+00:00")
    finally:
        q.close(wait=False)
        sys.modules.pop("app", None)


def test_a_second_queue_appends_below_the_header(tmp_path: Path, make_queue) -> None:
    # given a log written by one queue, then by another on the same file
    log = tmp_path / "ends.csv"
    for _ in range(2):
        q = make_queue(workers=1, log_file=log)
        q.put(divmod, args=(7, 2))
        q.wait(timeout=WAIT)
        q.close()
    # then it has one header and both lines
    rows = read_log(log)
    assert [row["result"] for row in rows] == ["[3, 1]", "[3, 1]"]


@pytest.mark.parametrize("name", ["ends.txt", "ends", "ends.csv.gz", "ends.json"])
def test_another_extension_is_refused_at_once(tmp_path: Path, name: str) -> None:
    # when a queue is given a log file of another extension
    with pytest.raises(ValueError, match=r"\.csv or \.jsonl"):
        conveyor.Queue(f"sqlite:///{tmp_path}/jobs.db", log_file=tmp_path / name)
    # then nothing was created: neither the queue's file nor the log
    assert list(tmp_path.iterdir()) == []
    # and q.log refuses it too
    with conveyor.Queue(workers=0) as q, pytest.raises(ValueError, match="csv"):
        q.log(tmp_path / name)


def test_a_missing_folder_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no folder"):
        conveyor.Queue(f"sqlite:///{tmp_path}/jobs.db", log_file=tmp_path / "no" / "ends.csv")
    assert list(tmp_path.iterdir()) == []


def test_a_csv_file_of_other_columns_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "other.csv"
    log.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="other columns"):
        conveyor.Queue(workers=0, log_file=log)
    assert log.read_text() == "a,b\n1,2\n"


def test_a_csv_log_begun_before_progress_keeps_its_columns(tmp_path: Path) -> None:
    # given a CSV log an earlier version began: its columns without progress
    from conveyor.events import EventBus
    from conveyor.observe.logfile import EARLIER_COLUMNS, JobLog

    assert set(LOG_COLUMNS) - set(EARLIER_COLUMNS) == {"progress", "progress_message"}
    log_path = tmp_path / "ends.csv"
    log_path.write_text(",".join(EARLIER_COLUMNS) + "\n")
    # when a job with progress ends
    bus = EventBus()
    log = JobLog(log_path).listen(bus)
    bus.emit("finished", conveyor.JobRecord("a", "t", Status.FINISHED, progress=1.0))
    log.close()
    # then its line has the file's columns, and a new log has the progress columns
    rows = list(csv.reader(log_path.read_text().splitlines()))
    assert rows[0] == list(EARLIER_COLUMNS)
    assert len(rows) == 2 and len(rows[1]) == len(EARLIER_COLUMNS) and rows[1][0] == "a"
    fresh = JobLog(tmp_path / "new.csv").listen(bus)
    bus.emit("finished", conveyor.JobRecord("b", "t", Status.FINISHED, progress=0.5))
    fresh.close()
    header, line = csv.reader((tmp_path / "new.csv").read_text().splitlines())
    assert header == list(LOG_COLUMNS)
    assert dict(zip(header, line, strict=True))["progress"] == "0.5"


def test_relayed_events_are_not_logged(tmp_path: Path) -> None:
    # given a log listening on an event bus
    from conveyor.events import EventBus
    from conveyor.observe.logfile import JobLog

    bus = EventBus()
    log = JobLog(tmp_path / "ends.jsonl").listen(bus)
    record = conveyor.JobRecord("a", "t", Status.FINISHED)
    # when one end is emitted here and one relayed from another process (a shared backend)
    bus.emit("finished", record)
    bus.emit("finished", conveyor.JobRecord("b", "t", Status.FINISHED), relayed=True)
    log.close()
    bus.emit("finished", conveyor.JobRecord("c", "t", Status.FINISHED))
    # then only the one caused here is written, and nothing after close
    assert [row["id"] for row in read_log(tmp_path / "ends.jsonl")] == ["a"]
    assert not bus.wants("finished")
