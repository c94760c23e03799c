"""The Gantt timeline of a queue's jobs (matplotlib, ``pip install 'conveyor[plot]'``).

One row per job, in the order the jobs started: a solid bar from its start to its end, and
before it, faint, the time it waited since its submit. A job that never started (cancelled
while waiting) shows only its faint wait, to its end; a running job's bar ends at the latest
time known; a run too short to see is drawn 0.3% of the time shown wide. Bars are coloured
by one key (``task``, ``lane``, ``priority``, ``status`` or ``worker``) and may be split by
another into one panel each. The figure is built with
matplotlib's object API and drawn with Agg: no display, no pyplot state.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import MissingExtra
from conveyor.job import JobRecord

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: what bars may be coloured and panels split by
KEYS = ("task", "lane", "priority", "status", "worker")
#: the alpha of the wait before a job's start
WAIT_ALPHA = 0.25
#: the narrowest run bar, as a share of the time shown (a 1 ms job still shows)
MIN_WIDTH = 0.003
#: at most this many job ids are written beside their rows
MAX_LABELS = 40
#: at most this many colours are named in the legend
MAX_LEGEND = 20


def key_of(record: JobRecord, key: str) -> str:
    """The record's value for ``key``, as text (``-`` for none)."""
    value = record.status.value if key == "status" else getattr(record, key)
    return "-" if value is None else str(value)


def _check_key(key: str | None, what: str, *, optional: bool) -> None:
    if key is None and optional:
        return
    if key not in KEYS:
        raise ValueError(f"{what} must be one of {', '.join(KEYS)}, got {key!r}")


#: the colours of the statuses (when bars are coloured by status)
STATUS_COLOURS = {
    "finished": "tab:green",
    "failed": "tab:red",
    "cancelled": "tab:gray",
    "running": "tab:blue",
    "waiting": "tab:orange",
    "scheduled": "tab:purple",
}


def _colours(values: list[str], key: str) -> dict[str, Any]:
    """A colour per value, in first-seen order: tab10, then tab20, then a continuous map
    (statuses: their own colours)."""
    from matplotlib import colormaps

    if key == "status":
        return {value: STATUS_COLOURS.get(value, "black") for value in values}
    if len(values) <= 10:
        palette = [colormaps["tab10"](i) for i in range(len(values))]
    elif len(values) <= 20:
        palette = [colormaps["tab20"](i) for i in range(len(values))]
    else:
        palette = [colormaps["viridis"](i / (len(values) - 1)) for i in range(len(values))]
    return dict(zip(values, palette, strict=True))


def plot(
    records: Iterable[JobRecord],
    path: str | os.PathLike[str] | None = None,
    *,
    color_by: str = "task",
    facet_by: str | None = None,
    title: str | None = None,
) -> Figure | Path:
    """Draw the jobs of ``records`` as a Gantt timeline; save it as PNG at ``path`` and return
    the path, or return the matplotlib Figure when no path is given.

    ``color_by``: the key that colours the bars; ``facet_by``: a key to draw one panel per
    value of (None: one panel). Keys: task, lane, priority, status, worker. Raises ValueError
    for another key, MissingExtra (an ImportError) naming ``conveyor[plot]`` without
    matplotlib."""
    _check_key(color_by, "color_by", optional=False)
    _check_key(facet_by, "facet_by", optional=True)
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtra("matplotlib", "plot", "the timeline plot") from None
    jobs = [r for r in records if r.submitted is not None]
    figure = Figure(figsize=(10, 2.5), layout="constrained")
    if not jobs:
        axes = figure.add_subplot()
        axes.text(0.5, 0.5, "no jobs", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return _done(figure, path)
    origin = min(r.submitted for r in jobs if r.submitted is not None)
    latest = max(_last(r) for r in jobs)
    colours = _colours(list(dict.fromkeys(key_of(r, color_by) for r in _ordered(jobs))), color_by)
    panels: dict[str, list[JobRecord]] = {}
    for record in _ordered(jobs):
        panels.setdefault("" if facet_by is None else key_of(record, facet_by), []).append(record)
    heights = [max(1, len(rows)) for rows in panels.values()]
    rows_total = sum(heights)
    figure.set_size_inches(10, min(40, 1.4 + 0.9 * len(panels) + 0.18 * rows_total))
    grid = figure.add_gridspec(len(panels), 1, height_ratios=heights)
    axes_list: list[Any] = []
    for n, (value, rows) in enumerate(panels.items()):
        axes = figure.add_subplot(grid[n, 0], sharex=axes_list[0] if axes_list else None)
        axes_list.append(axes)
        _draw(axes, rows, origin, latest, color_by, colours)
        if facet_by is not None:
            axes.set_title(f"{facet_by} = {value}", loc="left", fontsize=9)
    axes_list[-1].set_xlabel(f"seconds since the first submit ({origin:%Y-%m-%d %H:%M:%S} UTC)")
    handles = [_patch(colour, name) for name, colour in list(colours.items())[:MAX_LEGEND]]
    handles.append(_patch("0.5", "waiting (before start)", alpha=WAIT_ALPHA))
    axes_list[0].legend(
        handles=handles, title=color_by, loc="upper left", bbox_to_anchor=(1.01, 1),
        fontsize=8, title_fontsize=9, frameon=False,
    )  # fmt: skip
    figure.suptitle(title or f"{len(jobs)} jobs, coloured by {color_by}", fontsize=11)
    return _done(figure, path)


def _ordered(jobs: list[JobRecord]) -> list[JobRecord]:
    """Jobs by start (those never started by submit, after them)."""
    return sorted(jobs, key=lambda r: (r.started is None, r.started or r.submitted, r.id))


def _last(record: JobRecord) -> datetime:
    times = [t for t in (record.ended, record.started, record.submitted) if t is not None]
    return max(times)


def _draw(
    axes: Any,
    rows: list[JobRecord],
    origin: datetime,
    latest: datetime,
    color_by: str,
    colours: dict[str, Any],
) -> None:
    """One panel: a faint wait bar and a solid run bar per job, first job at the top."""

    def at(moment: datetime) -> float:
        return (moment - origin).total_seconds()

    shortest = at(latest) * MIN_WIDTH
    for y, record in enumerate(rows):
        colour = colours[key_of(record, color_by)]
        submitted = at(record.submitted) if record.submitted else 0.0
        end = at(record.ended or latest)
        begin = at(record.started) if record.started is not None else end
        if begin > submitted:
            axes.barh(y, begin - submitted, left=submitted, height=0.8, color=colour,
                      alpha=WAIT_ALPHA, linewidth=0)  # fmt: skip
        if record.started is not None:
            axes.barh(y, max(end - begin, shortest), left=begin, height=0.8, color=colour,
                      linewidth=0)  # fmt: skip
    axes.set_ylim(len(rows) - 0.5, -0.5)
    if len(rows) <= MAX_LABELS:
        axes.set_yticks(range(len(rows)), [r.id for r in rows], fontsize=7)
    else:
        axes.set_yticks([])
        axes.set_ylabel(f"{len(rows)} jobs")
    axes.grid(axis="x", alpha=0.3)
    axes.set_xlim(left=0)


def _patch(colour: Any, label: str, alpha: float = 1.0) -> Any:
    from matplotlib.patches import Patch

    return Patch(facecolor=colour, alpha=alpha, label=label)


def _done(figure: Figure, path: str | os.PathLike[str] | None) -> Figure | Path:
    if path is None:
        return figure
    target = Path(path)
    figure.savefig(target, format="png", dpi=100)
    return target
