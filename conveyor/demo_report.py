"""What ``conveyor demo`` shows after a run: one row per batch (its count and its append,
where and when each ran), the rules checked against what ran, and what the rules were seen
doing (:mod:`conveyor.demo` runs the pipeline)."""

from __future__ import annotations

import itertools
import shlex
import textwrap
from datetime import datetime
from pathlib import Path

import conveyor
from conveyor.demo import LANE, Run, default_source


def show(result: Run, root: Path | None = None) -> str:
    """The table of what ran, the rules checked against it, and the totals."""
    root = (root or default_source()).resolve()
    summary = result.summary
    lines = [timeline(result.records), "", "The rules, checked against what ran:"]
    lines += [f"  {'ok ' if held else 'NOT'} {rule}" for rule, held in check_rules(result.records)]
    for seen in at_work(result.records):
        lines += textwrap.wrap(seen, 96, initial_indent="  -> ", subsequent_indent="     ")
    if summary is None:
        lines += ["", "the summary did not finish: see the table"]
        return "\n".join(lines)
    lines += [
        "",
        f"{summary['batches']} batches, {summary['files']:,} files, {summary['lines']:,} lines,"
        f" {summary['chars']:,} characters, {summary['identifiers']:,} identifiers"
        f" ({summary['distinct']:,} distinct) in {root}",
        "most common identifiers in the code: "
        + ", ".join(f"{name} ({n:,})" for name, n in summary["top"]),
        f"queue: {result.url}",
    ]
    return "\n".join(lines)


def picture(result: Run) -> str:
    """Draw the run's jobs as a Gantt timeline, ``timeline.png`` beside the queue file, and
    say where it is; without matplotlib, say how to get it."""
    target = (result.workdir or Path(".")) / "timeline.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return f"timeline: pip install 'conveyor[plot]' to draw it as {target}"
    title = f"demo run {result.number}: {len(result.records)} jobs, coloured by task"
    conveyor.plot(result.records, target, color_by="task", title=title)
    here = Path.cwd()
    shown = target.relative_to(here) if target.is_relative_to(here) else target
    return f"timeline: {shown}"


#: the module ``conveyor demo`` writes beside its queue file, for ``conveyor dashboard``
DASHBOARD_APP = "demo_app"

APP_SOURCE = '''"""The queue of ``conveyor demo`` (written by it), for:
conveyor dashboard {name}:queue
"""

import conveyor
from conveyor.demo import ALLOW

queue = conveyor.Queue({url!r}, workers=0, name="demo", allow_modules=ALLOW)
'''


def dashboard(result: Run) -> str:
    """Write ``demo_app.py`` (the demo's queue) beside the queue file, and say how to serve
    it with ``conveyor dashboard``."""
    folder = result.workdir or Path(".")
    (folder / f"{DASHBOARD_APP}.py").write_text(
        APP_SOURCE.format(name=DASHBOARD_APP, url=result.url), encoding="utf-8"
    )
    here = Path.cwd()
    shown = folder.relative_to(here) if folder.is_relative_to(here) else folder
    return (
        f"dashboard: cd {shlex.quote(str(shown))} && conveyor dashboard {DASHBOARD_APP}:queue"
        " --port 8000, then open http://127.0.0.1:8000/ (pip install 'conveyor[web]')"
    )


def timeline(records: list[conveyor.JobRecord]) -> str:
    """One row per batch, in the order the batches were put: the batch's size and
    priority, its count (which one it was to start, its times, where it ran), its append (its
    times, where it ran); the summary last. Times are ms after the first job started."""
    counts = sorted((r for r in records if r.task == "count"), key=lambda r: r.id)
    starts = [r.started for r in records if r.started is not None]
    if not counts or not starts:
        return "no jobs ran"
    origin = min(starts)
    by_id = {r.id: r for r in records}
    rank = {
        r.id: n for n, r in enumerate(sorted(counts, key=lambda r: (_ms(r.started), r.priority)), 1)
    }
    width = max(5, *(len(str(r.meta.get("batch", ""))) for r in counts))
    rows = [
        f"{'#':>3} {'batch':<{width}} {'KB':>5} {'prio':>5} | count: {'nth':>3} {'start':>7}"
        f" {'end':>7} {'ran in':<14} | append: {'start':>7} {'end':>7} ran in"
    ]
    for n, record in enumerate(counts):
        later = by_id.get(record.id.replace("-count-", "-append-"))
        rows.append(
            f"{n:>3} {record.meta.get('batch', ''):<{width}} {record.meta.get('kb', ''):>5}"
            f" {record.priority:>5} |        {rank[record.id]:>3} {_span(record, origin)}"
            f" {_where(record):<14} |        "
            + ("" if later is None else f" {_span(later, origin)} {_where(later)}")
        )
    total = next((r for r in records if r.task == "summarise"), None)
    if total is not None:
        rows.append(f"summarise: {_span(total, origin).strip()} ms, ran in {_where(total)}")
    legend = (
        f"#: the order the batch's append was put in the lane {LANE!r}; nth: the"
        " order its count started in; prio: its priority (lower starts first); times: ms after"
        " the first job started; ran in: the thread or process that ran the job."
    )
    return "\n".join([*rows, "", *textwrap.wrap(legend, 96)])


def check_rules(records: list[conveyor.JobRecord]) -> list[tuple[str, bool]]:
    """Each rule the pipeline relies on, and whether the records show it held."""
    appends = sorted(
        (r for r in records if r.task == "append"), key=lambda r: r.meta.get("place", 0)
    )
    total = [r for r in records if r.task == "summarise"]
    by_id = {r.id: r for r in records}
    ended = all(r.status is conveyor.Status.FINISHED for r in records)
    return [
        ("every job finished", ended),
        (
            "after: each append started once its count had ended",
            all(_before(by_id.get(a.after[0]) if a.after else None, a) for a in appends),
        ),
        (
            f"lane {LANE!r}: the appends ran one at a time",
            _one_at_a_time(appends),
        ),
        (
            "after: the summary started once every append had ended",
            bool(total) and all(_before(a, total[0]) for a in appends),
        ),
        ("no slot ran two jobs at once", not _overlaps(records)),
    ]


def at_work(records: list[conveyor.JobRecord]) -> list[str]:
    """What the priorities and the lane changed in this run, in words."""
    counts = sorted(
        (r for r in records if r.task == "count" and r.started is not None),
        key=lambda r: (_ms(r.started), r.priority),
    )
    by_id = {r.id: r for r in records}
    seen = []
    if len(counts) > 1:
        first, last = counts[0], counts[-1]
        seen.append(
            f"priority: the counts were put by name, and started by size (nth follows prio, but"
            f" for slots that claim at the same moment): {first.meta.get('batch')}"
            f" ({first.meta.get('kb')} KB) first, {last.meta.get('batch')}"
            f" ({last.meta.get('kb')} KB) last"
        )
    waits = []
    for later in records:
        place = later.meta.get("place")
        counted = by_id.get(later.after[0]) if later.task == "append" and later.after else None
        if place and counted and counted.ended and later.started:
            waits.append(((later.started - counted.ended).total_seconds() * 1000, place, later))
    if waits:
        waited, place, later = max(waits, key=lambda w: w[0])
        if waited >= 1:
            seen.append(
                f"lane: append #{place} ({later.meta.get('batch')}) waited {waited:.0f} ms after"
                f" its count had ended, for its turn in the lane (one at a time, in the order"
                f" put; the counts' lower priority numbers went first)"
            )
    return seen


def _one_at_a_time(appends: list[conveyor.JobRecord]) -> bool:
    """The lane's rule, read off the records: no two appends ran at once. (Their order, put
    order among those whose count had ended, shows in the table: a count's report, which lets
    its append join the lane, may reach the queue a moment after the count's recorded end.)"""
    ran = sorted(appends, key=lambda r: (r.started is None, r.started))
    return all(_before(first, then) for first, then in itertools.pairwise(ran))


def _before(first: conveyor.JobRecord | None, then: conveyor.JobRecord) -> bool:
    return (
        first is not None
        and first.ended is not None
        and then.started is not None
        and first.ended <= then.started
    )


def _overlaps(records: list[conveyor.JobRecord]) -> bool:
    """True if two jobs that ran in the same place overlap in time."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        if r.started is not None and r.ended is not None:
            spans.setdefault(_where(r), []).append((_ms(r.started), _ms(r.ended)))
    for found in spans.values():
        found.sort()
        if any(b[0] < a[1] for a, b in itertools.pairwise(found)):
            return True
    return False


def _ms(moment: datetime | None) -> float:
    return 0.0 if moment is None else moment.timestamp() * 1000


def _span(record: conveyor.JobRecord, origin: datetime) -> str:
    def at(moment: datetime | None) -> str:
        return "" if moment is None else f"{(moment - origin).total_seconds() * 1000:.1f}"

    return f"{at(record.started):>7} {at(record.ended):>7}"


def _where(record: conveyor.JobRecord) -> str:
    result = record.result
    return str(result.get("ran_in", "?")) if isinstance(result, dict) else "?"
