"""What the commands print: aligned tables, one-line cells safe for a terminal, a job
described a field a line, and the JSON of ``--json`` (keys documented in docs/cli.md)."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from conveyor.job import JobRecord, Status
from conveyor.operations import history_of, record_json, worker_json
from conveyor.records import HISTORY

if TYPE_CHECKING:
    from conveyor.queue import Queue


# -------------------------------------------------------------------- printing
def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns left-aligned to their widest cell, two spaces apart."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def when(moment: datetime | None) -> str:
    """A local time to the second, or empty."""
    return "" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


# ------------------------------------------------------------------------ JSON
def dumps(data: Any) -> str:
    """JSON for scripts: ASCII, values JSON cannot hold as their repr."""
    return json.dumps(data, ensure_ascii=True, default=repr, indent=2)


def status_json(
    queue: Queue,
    counts: dict[Status, int],
    running: list[JobRecord],
    workers: Sequence[Any],
    lost: Collection[str] = (),
) -> str:
    """``conveyor status --json``: the queue, counts by status, running jobs, workers (with
    their state: ``alive``, or ``lost`` once their own lease ran out unrenewed)."""
    return dumps(
        {
            "queue": queue.name,
            "url": queue.url,
            "counts": {s.value: counts.get(s, 0) for s in Status},
            "running": [record_json(r) for r in running],
            "workers": [worker_json(w, lost) for w in workers],
        }
    )


# ------------------------------------------------------------------ table cells
#: the widest a table cell gets (ids, task names, workers); longer ones end in an ellipsis
CELL_WIDTH = 40
#: the widest the error column gets
ERROR_WIDTH = 60


def escaped(text: str) -> str:
    """``text`` with control characters (newlines, tabs, escapes) written as ``\\n`` etc., so
    one value stays on one line and cannot move the terminal's cursor."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def cell(text: str, width: int = CELL_WIDTH) -> str:
    """``text`` escaped and cut to ``width`` characters (an ellipsis marks the cut)."""
    text = escaped(text)
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def first_line(text: str | None) -> str:
    """The first non-empty line of ``text`` ("" for None)."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def progress_text(fraction: float, message: str | None) -> str:
    """A job's progress as a person reads it: ``42% copying`` (the message escaped)."""
    percent = f"{fraction * 100:.0f}%"
    return percent if not message else f"{percent} {escaped(message)}"


def progress_cell(record: JobRecord) -> str:
    """A job's progress for a table cell (empty if it reported none)."""
    if record.progress is None:
        return ""
    return cell(progress_text(record.progress, record.progress_message))


def shown_value(value: Any) -> str:
    """A value as JSON when it is JSON data, else its repr."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


# ------------------------------------------------------------------------ jobs
#: the columns of ``conveyor jobs``
JOB_COLUMNS = [
    "id", "task", "status", "attempts", "worker", "submitted", "started", "ended", "error",
]  # fmt: skip


def job_row(record: JobRecord) -> list[str]:
    """One job's cells under :data:`JOB_COLUMNS`."""
    return [
        cell(record.id),
        cell(record.task),
        record.status.value,
        str(record.attempts),
        cell(record.worker or ""),
        when(record.submitted),
        when(record.started),
        when(record.ended),
        cell(first_line(record.error), ERROR_WIDTH),
    ]


def describe(record: JobRecord) -> str:
    """One job, a field a line; the traceback and earlier ends in full below."""
    fields: list[tuple[str, str]] = [
        ("id", escaped(record.id)),
        ("status", record.status.value),
        ("task", escaped(record.task)),
        ("args", escaped(shown_value(list(record.args)))),
        ("kwargs", escaped(shown_value(record.kwargs))),
        ("attempts", str(record.attempts)),
        ("priority", str(record.priority)),
    ]
    for name, value in [
        ("lane", record.lane),
        ("after", ", ".join(record.after)),
        ("exclusive", ", ".join(record.exclusive)),
        ("incompatible", ", ".join(record.incompatible)),
    ]:
        if value not in (None, ""):
            fields.append((name, escaped(str(value))))
    fields += [
        ("worker", escaped(record.worker or "")),
        ("submitted", when(record.submitted)),
        ("started", when(record.started)),
        ("ended", when(record.ended)),
        ("runtime", "" if record.runtime is None else f"{record.runtime:.3f} s"),
    ]
    if record.progress is not None:
        fields.append(("progress", progress_text(record.progress, record.progress_message)))
    if record.status is Status.FINISHED:
        fields.append(("result", escaped(shown_value(record.result))))
    if record.error:
        fields.append(("error", escaped(record.error)))
    meta = {k: v for k, v in record.meta.items() if k != HISTORY}
    if meta:
        fields.append(("meta", escaped(shown_value(meta))))
    width = max(len(name) for name, _ in fields)
    lines = [f"{name:<{width}}  {value}".rstrip() for name, value in fields]
    if record.traceback:
        lines += ["", "traceback:", record.traceback.rstrip()]
    for n, earlier in enumerate(history_of(record), 1):
        lines += [
            "",
            f"earlier end {n}: {earlier.get('status')} after {earlier.get('attempts')}"
            f" attempt(s), ended {earlier.get('ended')}, retried {earlier.get('retried')}",
        ]
        if earlier.get("error"):
            lines.append(f"  error: {escaped(str(earlier['error']))}")
        if earlier.get("traceback"):
            lines.append(str(earlier["traceback"]).rstrip())
    return "\n".join(lines)
