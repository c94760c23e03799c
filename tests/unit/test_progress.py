"""``conveyor.progress()`` itself: what it accepts, where it may be called, and how the tracker
thins out frequent calls (sent at most every interval, the last value always). Every backend
and mode is held to the recording in tests/conformance/test_progress.py."""

from __future__ import annotations

import json
import threading

import pytest

import conveyor
from conveyor.cli.output import CELL_WIDTH, describe, dumps, progress_cell, record_json
from conveyor.job import JobRecord, Status
from conveyor.tracking import MAX_MESSAGE, Tracker, check, tracking

BAD = [
    (-0.001, None, ValueError),
    (1.0001, None, ValueError),
    (float("nan"), None, ValueError),
    (float("inf"), None, ValueError),
    (True, None, TypeError),
    (None, None, TypeError),
    ("0.5", None, TypeError),
    (0.5, b"bytes", TypeError),
    (0.5, 3, TypeError),
    (0.5, "x" * (MAX_MESSAGE + 1), ValueError),
    (0.5, "lone \ud800", ValueError),
    (0.5, "nul \x00", ValueError),
]


@pytest.mark.parametrize(("fraction", "message", "error"), BAD)
def test_a_value_that_cannot_be_recorded_is_refused(fraction, message, error):
    with pytest.raises(error):
        check(fraction, message)
    sent: list[tuple[float, str | None]] = []
    with tracking(lambda f, m: sent.append((f, m))), pytest.raises(error):
        conveyor.progress(fraction, message)
    assert sent == []  # refused before it reached the tracker


def test_values_that_can_be_recorded():
    assert check(0) == (0.0, None)
    assert check(1) == (1.0, None)
    assert check(0.25, "a quarter") == (0.25, "a quarter")
    assert check(0.5, "") == (0.5, "")
    assert check(0.5, "x" * MAX_MESSAGE) == (0.5, "x" * MAX_MESSAGE)
    assert type(check(1)[0]) is float


def test_outside_a_job_it_raises_lookup_error():
    with pytest.raises(LookupError, match="only available inside a running job"):
        conveyor.progress(0.5)


def test_the_first_value_goes_at_once_then_the_latest_after_the_interval_and_the_last_at_close():
    sent: list[tuple[float, str | None]] = []
    tracker = Tracker(lambda f, m: sent.append((f, m)), interval=3600)
    tracker.update(0.1, "first")
    tracker.update(0.2, "second")
    tracker.update(0.3, "third")
    assert sent == [(0.1, "first")]  # the others came within the interval: held back
    tracker.close()
    assert sent == [(0.1, "first"), (0.3, "third")]  # only the latest held back
    tracker.update(0.9, "after the end")
    tracker.close()
    assert sent == [(0.1, "first"), (0.3, "third")]


def test_a_value_held_back_is_sent_once_the_interval_passed_without_another_call():
    sent: list[tuple[float, str | None]] = []
    arrived = threading.Event()

    def send(fraction: float, message: str | None) -> None:
        sent.append((fraction, message))
        if message == "third":
            arrived.set()

    tracker = Tracker(send, interval=0.2)
    tracker.update(0.1, "first")
    tracker.update(0.2, "second")
    tracker.update(0.3, "third")  # then the job goes quiet: no call, no close
    assert arrived.wait(5), sent
    # the first at once, the latest once the interval passed (the second only if the machine
    # stalled for a whole interval between two calls)
    assert sent in (
        [(0.1, "first"), (0.3, "third")],
        [(0.1, "first"), (0.2, "second"), (0.3, "third")],
    )
    tracker.close()
    assert sent[-1] == (0.3, "third")  # nothing left to send


def test_with_no_interval_every_value_is_sent_in_order():
    sent: list[tuple[float, str | None]] = []
    tracker = Tracker(lambda f, m: sent.append((f, m)), interval=0)
    for i in range(5):
        tracker.update(i / 4, None)
    tracker.close()
    assert sent == [(i / 4, None) for i in range(5)]


def test_tracking_sends_the_value_held_back_when_the_code_raises():
    sent: list[tuple[float, str | None]] = []
    with pytest.raises(RuntimeError), tracking(lambda f, m: sent.append((f, m)), interval=3600):
        conveyor.progress(0.1)
        conveyor.progress(0.6, "where it stopped")
        raise RuntimeError("boom")
    assert sent == [(0.1, None), (0.6, "where it stopped")]
    with pytest.raises(LookupError):
        conveyor.progress(0.7)  # the tracker was for that block only


def test_an_inline_job_records_its_progress(make_queue):
    q = make_queue(mode="inline")

    def work() -> str:
        conveyor.progress(0.5, "half")
        conveyor.progress(1.0, "done")
        return "ok"

    job = q.put(work)
    assert job.result() == "ok"
    record = job.record()
    assert (record.progress, record.progress_message) == (1.0, "done")


def test_a_job_giving_a_bad_value_fails_and_its_progress_is_unchanged(make_queue):
    q = make_queue(mode="inline")

    def work() -> None:
        conveyor.progress(0.4, "fine")
        conveyor.progress(2.0, "too far")

    job = q.put(work)
    record = job.record()
    assert record.status == "failed"
    assert record.error is not None and record.error.startswith("ValueError: progress fraction")
    assert (record.progress, record.progress_message) == (0.4, "fine")


def test_a_thread_the_job_starts_has_no_tracker_unless_it_copies_the_context(make_queue):
    q = make_queue(mode="thread", workers=1)
    outcome: list[str] = []

    def work() -> None:
        def plain() -> None:
            try:
                conveyor.progress(0.1)
            except LookupError:
                outcome.append("LookupError")

        thread = threading.Thread(target=plain)
        thread.start()
        thread.join()

    q.put(work).result(timeout=5)
    assert outcome == ["LookupError"]


def test_progress_columns_in_records_and_the_dataframe(make_queue):
    pd = pytest.importorskip("pandas")
    q = make_queue(mode="inline")

    def work() -> None:
        conveyor.progress(0.75, "three quarters")

    q.put(work)
    q.put(lambda: None)
    assert [(r.progress, r.progress_message) for r in q.jobs()] == [
        (0.75, "three quarters"),
        (None, None),
    ]
    frame = q.dataframe()
    assert frame["progress"].dtype == "float64"
    assert frame["progress"].iloc[0] == 0.75 and pd.isna(frame["progress"].iloc[1])
    assert list(frame["progress_message"]) == ["three quarters", None]


def test_conveyor_show_and_json_give_the_progress():
    record = JobRecord(
        id="j", task="t", status=Status.RUNNING, progress=0.42, progress_message="copy\nfiles"
    )
    lines = describe(record).splitlines()
    assert [line.split(None, 1) for line in lines if line.startswith("progress")] == [
        ["progress", "42% copy\\nfiles"]  # one line: the control character escaped
    ]
    data = json.loads(dumps(record_json(record)))
    assert (data["progress"], data["progress_message"]) == (0.42, "copy\nfiles")
    none = JobRecord(id="k", task="t", status=Status.WAITING)
    assert not any(line.startswith("progress") for line in describe(none).splitlines())
    assert json.loads(dumps(record_json(none)))["progress"] is None


def test_conveyor_status_shows_running_jobs_progress_in_a_cell():
    halfway = JobRecord(
        id="j", task="t", status=Status.RUNNING, progress=0.5, progress_message="m" * 80
    )
    shown = progress_cell(halfway)
    assert shown.startswith("50% mmm") and len(shown) == CELL_WIDTH and shown.endswith("\u2026")
    assert progress_cell(JobRecord(id="k", task="t", status=Status.RUNNING)) == ""
