"""The events the feed reads from two looks at a job's record (``feed.changes``): every step
between them, in order, even when several happened between the two looks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor.job import JobRecord, Status
from conveyor.web.feed import changes, seen

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def record(status: Status, attempts: int = 0, started: int | None = None) -> JobRecord:
    begun = None if started is None else T0 + timedelta(seconds=started)
    return JobRecord("a", "add", status, attempts=attempts, submitted=T0, started=begun)


W, S, R = Status.WAITING, Status.SCHEDULED, Status.RUNNING
F, X, C = Status.FINISHED, Status.FAILED, Status.CANCELLED


@pytest.mark.parametrize(
    ("before", "after", "events"),
    [
        (None, record(W), ["queued"]),
        (None, record(R, 1, 1), ["queued", "started"]),
        (None, record(F, 1, 1), ["queued", "started", "finished"]),
        (None, record(C), ["queued", "cancelled"]),  # cancelled before it started
        (None, record(S, 1, 1), ["queued", "retrying"]),
        (record(W), record(W), []),
        (record(W), record(R, 1, 1), ["started"]),
        (record(W), record(F, 1, 1), ["started", "finished"]),
        (record(W), record(X, 1, 1), ["started", "failed"]),
        (record(W), record(C), ["cancelled"]),
        (record(R, 1, 1), record(F, 1, 1), ["finished"]),
        (record(R, 1, 1), record(C, 1, 1), ["cancelled"]),
        (record(R, 1, 1), record(S, 1, 1), ["retrying"]),  # failed, to be retried
        (record(R, 1, 1), record(R, 2, 5), ["started"]),  # retried at once, started again
        (record(S, 1, 1), record(R, 2, 5), ["started"]),
        (record(R, 1, 1), record(F, 2, 5), ["started", "finished"]),  # retried and finished
        (record(X, 1, 1), record(W), ["queued"]),  # retry() (attempts reset)
        (record(X, 1, 1), record(F, 1, 9), ["queued", "started", "finished"]),
        (record(F, 1, 1), record(F, 1, 1), []),
        # a job claimed ahead shows as running, attempt not counted; its report counts it and
        # sets its real start: no second start
        (record(R, 0, 1), record(R, 1, 2), []),
        (record(R, 0, 1), record(F, 1, 2), ["finished"]),
        (record(R, 1, 1), record(R, 1, 2), []),
    ],
)
def test_changes_between_two_looks(
    before: JobRecord | None, after: JobRecord, events: list[str]
) -> None:
    assert changes(None if before is None else seen(before), after) == events


def test_a_record_with_progress_yields_progress_when_it_moves() -> None:
    def running(progress: float | None) -> JobRecord:
        return JobRecord("a", "add", R, attempts=1, submitted=T0, started=T0, progress=progress)

    assert changes(seen(running(0.2)), running(0.5)) == ["progress"]
    assert changes(seen(running(0.5)), running(0.5)) == []
    assert changes(seen(running(None)), running(0.1)) == ["progress"]
    # put, started and reported progress between two looks; or ended too
    assert changes(None, running(0.3)) == ["queued", "started", "progress"]
    ended = JobRecord("a", "add", F, attempts=1, submitted=T0, started=T0, progress=0.3)
    assert changes(None, ended) == ["queued", "started", "progress", "finished"]
