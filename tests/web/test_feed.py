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
    ],
)
def test_changes_between_two_looks(
    before: JobRecord | None, after: JobRecord, events: list[str]
) -> None:
    assert changes(None if before is None else seen(before), after) == events


def test_a_record_with_progress_yields_progress_when_it_moves() -> None:
    class Progressing:
        """A record of a version that carries progress (another branch adds it)."""

        def __init__(self, progress: float | None) -> None:
            self._record = record(R, 1, 1)
            self.progress = progress

        def __getattr__(self, name: str) -> object:
            return getattr(self._record, name)

    assert changes(seen(Progressing(0.2)), Progressing(0.5)) == ["progress"]  # type: ignore[arg-type]
    assert changes(seen(Progressing(0.5)), Progressing(0.5)) == []  # type: ignore[arg-type]
