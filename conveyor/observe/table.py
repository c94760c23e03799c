"""Job records as rows: plain dicts (the job log writes them) and a pandas DataFrame.

Every :class:`~conveyor.job.JobRecord` field is a column, plus ``wait``: seconds from submit to
start (None, or NaN in a frame, for a job that never started). ``runtime`` is the record's own:
seconds of the last attempt. Both are float seconds, so they sum, average and plot as numbers;
``submitted``, ``started`` and ``ended`` are tz-aware UTC datetimes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from conveyor.errors import MissingExtra
from conveyor.job import JobRecord, Status

if TYPE_CHECKING:
    import pandas as pd

#: the record's fields, in order, then the derived column
FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(JobRecord))
COLUMNS: tuple[str, ...] = (*FIELDS, "wait")
#: the columns holding datetimes, and float seconds
TIMES = ("submitted", "started", "ended")
SECONDS = ("runtime", "wait")


def wait_seconds(record: JobRecord) -> float | None:
    """Seconds from the job's submit to its (last) start; None if it never started."""
    if record.submitted is None or record.started is None:
        return None
    return (record.started - record.submitted).total_seconds()


def row(record: JobRecord) -> dict[str, Any]:
    """The record as a dict of every column (status as its string value)."""
    data = record.as_dict()
    data["wait"] = wait_seconds(record)
    return data


def dataframe(records: Iterable[JobRecord]) -> pd.DataFrame:
    """A DataFrame of ``records``, one row per job, a column per :data:`COLUMNS`: times as
    ``datetime64[ns, UTC]``, ``runtime`` and ``wait`` as float seconds, ``progress`` a float,
    ``status`` a category of every status, ``priority`` and ``attempts`` int64, the rest
    Python objects. Raises
    MissingExtra (an ImportError) naming ``conveyor[pandas]`` when pandas is not installed."""
    try:
        import pandas as pd
    except ImportError:
        raise MissingExtra("pandas", "pandas", "q.dataframe()") from None
    rows = [row(record) for record in records]
    columns: dict[str, Any] = {name: [r[name] for r in rows] for name in COLUMNS}
    frame = pd.DataFrame({name: pd.Series(columns[name], dtype=object) for name in COLUMNS})
    for name in TIMES:
        frame[name] = pd.to_datetime(frame[name], utc=True).astype("datetime64[ns, UTC]")
    for name in (*SECONDS, "progress"):
        frame[name] = pd.to_numeric(frame[name]).astype("float64")
    for name in ("priority", "attempts"):
        frame[name] = frame[name].astype("int64")
    frame["status"] = pd.Categorical(frame["status"], categories=[s.value for s in Status])
    return frame
