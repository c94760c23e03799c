"""The job log: one line per job end (finished, failed, cancelled), appended to a CSV or a
JSONL file, the format chosen by the extension.

Where the lines are written: in the process that ended the job. The backend emits an end
event once, in the process whose atomic step ended it (a worker's report, a cancel, a lease
recovery, a cascade); the log listens to those events with ``relayed=False``, so an event a
shared backend relays from another process is not written twice. Every process that opens the
queue with the same ``log_file`` (the producer, ``conveyor worker app:q``, ``conveyor cancel``:
all load the same app) writes the ends it causes, so each end is written once even when the
producer has long exited. (Following ended jobs from the queue's process instead would miss
the jobs that end while no producer runs, and ``pop`` would take the results from ``get``.)

Several processes append safely: the file is opened ``O_APPEND`` and every line is one
``write``. The CSV header is written once, by whoever finds the file empty, under an
``flock`` so that two first writers do not both write it. Columns: every
:class:`~conveyor.job.JobRecord` field but ``traceback`` (``conveyor show`` has it), and
``wait`` (a CSV file begun before jobs had ``progress`` keeps its columns); times ISO 8601
UTC, ``runtime`` and ``wait`` float seconds, structured values (arguments, result, meta, ids)
as JSON (``repr`` for what JSON cannot hold).
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor import events as ev
from conveyor.job import JobRecord
from conveyor.observe.table import COLUMNS, row

if TYPE_CHECKING:
    from conveyor.events import EventBus

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; the header check is best effort
    fcntl = None  # type: ignore[assignment]

#: the extensions the log takes, and the format each one means
FORMATS = {".csv": "csv", ".jsonl": "jsonl"}
#: what a line holds, in order
LOG_COLUMNS: tuple[str, ...] = tuple(name for name in COLUMNS if name != "traceback")
#: the columns of a CSV log begun before jobs had progress: appended to as they are
EARLIER_COLUMNS: tuple[str, ...] = tuple(
    name for name in LOG_COLUMNS if name not in ("progress", "progress_message")
)
#: the columns written as JSON text in a CSV file
STRUCTURED = frozenset({"args", "kwargs", "after", "exclusive", "incompatible", "result", "meta"})
#: the events of a job's end
END_EVENTS = (ev.FINISHED, ev.FAILED, ev.CANCELLED)


def log_format(path: str | os.PathLike[str]) -> str:
    """The format ``path``'s extension names; ValueError for any other extension, or when
    the folder it would be in does not exist."""
    if not isinstance(path, str | os.PathLike):
        raise ValueError(f"log_file must be a path ending in .csv or .jsonl, got {path!r}")
    where = Path(path)
    suffix = where.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"log_file must end in .csv or .jsonl (that chooses its format), got {str(path)!r}"
        )
    if not where.parent.is_dir():
        raise ValueError(f"log_file {str(path)!r}: no folder {str(where.parent)!r}")
    return FORMATS[suffix]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=repr, allow_nan=True)


def _value(name: str, value: Any) -> Any:
    """A row's value as JSON data (times as ISO 8601 text)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


class JobLog:
    """An open job log file; :meth:`write` appends one record's line."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.format = log_format(path)
        self.path = Path(path)
        self._lock = threading.Lock()
        self._header_seen = False  # the file is known to hold its CSV header
        self._events: EventBus | None = None
        #: the one bound method registered, so that ``off`` (by identity) finds it
        self._callback = self.write
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        self._fd: int | None = os.open(self.path, flags, 0o644)
        #: what a line holds (a CSV file begun by an earlier version keeps its columns)
        self._columns = LOG_COLUMNS
        if self.format == "csv":
            self._check_header()

    def _check_header(self) -> None:
        """A CSV file that has lines must have this log's header (else ValueError)."""
        with open(self.path, encoding="utf-8", newline="") as existing:
            first = existing.readline()
        if not first:
            return
        header = tuple(next(csv.reader([first]), []))
        if header == EARLIER_COLUMNS:
            self._columns = EARLIER_COLUMNS
        elif header != LOG_COLUMNS:
            self.close()
            raise ValueError(
                f"{str(self.path)!r} holds CSV with other columns than conveyor's job log: "
                "give another file"
            )
        self._header_seen = True

    def line(self, record: JobRecord) -> str:
        """The record as one line of this log's format (ending in a newline)."""
        data = row(record)
        columns = self._columns
        values = {name: _value(name, data[name]) for name in columns}
        if self.format == "jsonl":
            return _json(values) + "\n"
        out = io.StringIO()
        cells = [_json(values[name]) if name in STRUCTURED else values[name] for name in columns]
        csv.writer(out, lineterminator="\n").writerow(cells)
        return out.getvalue()

    def header(self) -> str:
        """The CSV header line."""
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow(self._columns)
        return out.getvalue()

    def write(self, record: JobRecord) -> None:
        """Append the record's line: one ``write`` (with the header, if the file is empty)."""
        text = self.line(record)
        with self._lock:
            fd = self._fd
            if fd is None:
                return
            if self.format == "csv" and not self._header_seen:
                self._write_first(fd, text)
            else:
                os.write(fd, text.encode("utf-8"))

    def _write_first(self, fd: int, text: str) -> None:
        """(CSV, header not seen yet) under an exclusive flock, prefix the header if the file
        is still empty, then write."""
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_size == 0:
                text = self.header() + text
            os.write(fd, text.encode("utf-8"))
            self._header_seen = True
        finally:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def listen(self, events: EventBus) -> JobLog:
        """Write the ends ``events`` sees caused in this process (not relayed ones); return
        self."""
        self._events = events
        for name in END_EVENTS:
            events.on(name, self._callback, relayed=False)
        return self

    def close(self) -> None:
        """Stop listening and close the file; later writes are dropped."""
        events, self._events = self._events, None
        if events is not None:
            for name in END_EVENTS:
                events.off(name, self._callback)
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __repr__(self) -> str:
        return f"<JobLog {self.format} {str(self.path)!r}>"
