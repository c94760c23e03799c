"""tqdm progress bars for ``wait(progress=True)`` and ``map(progress=True)``."""

from __future__ import annotations

from typing import Any

from conveyor.errors import MissingExtra
from conveyor.job import ACTIVE, TERMINAL, Status


def progress_bar(total: int, desc: str) -> Any:
    """A tqdm bar of ``total`` jobs; raises MissingExtra naming the extra when tqdm is absent."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise MissingExtra("tqdm", "progress", "progress=True") from None
    return tqdm(total=total, desc=desc, unit="job", dynamic_ncols=True)


class QueueBar:
    """The bar of ``wait(progress=True)``: the jobs of this run, ended over ended + active.
    Jobs that had ended before the queue object was built (``ended_at_open``: earlier runs on
    a durable store) are not this run's progress."""

    def __init__(self, start: dict[Status, int], ended_at_open: int, name: str) -> None:
        self._ended_before = min(ended_at_open, sum(start[status] for status in TERMINAL))
        self._bar = progress_bar(sum(start.values()) - self._ended_before, f"queue {name}")

    def show(self, counts: dict[Status, int]) -> None:
        """Show the counts just seen."""
        ended = max(0, sum(counts[status] for status in TERMINAL) - self._ended_before)
        self._bar.total = ended + sum(counts[status] for status in ACTIVE)
        self._bar.n = ended
        self._bar.refresh()

    def close(self) -> None:
        """Close the bar."""
        self._bar.close()
