"""``conveyor demo``: a real pipeline on a durable queue, then what ran where and when, and the
rules checked against it.

It reads Python source (the standard library by default, without its test suites), in batches
of files grouped by package. A producer puts every job first; then the workers start:

- one ``count`` job per batch counts its files, lines and identifiers (the names in the code,
  read with :mod:`tokenize`: not words of comments or docstrings) into a part file, the
  biggest batches first (``priority`` is minus the batch's size in KB; lower runs first);
- one ``append`` job per batch, ``after`` its ``count``, adds the part to the report in the
  sequential ``lane`` "report": one at a time; an append takes its place in the lane once its
  count has ended, and among those waiting there the lane goes in the order they were put;
- a ``summarise`` job, after every ``append``, totals the report.

The jobs say where they ran (the thread, or the worker process), so the table shows the slot
that really ran each job. Every run stays in ``queue.db``; the next run lists the earlier ones.
"""

from __future__ import annotations

import io
import json
import keyword
import os
import sys
import sysconfig
import threading
import tokenize
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import conveyor
from conveyor.job import TERMINAL

#: how many batches the source is cut into, about
BATCHES = 20
#: folders never read: installed packages, caches and test suites
SKIPPED = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"})
#: the lane of the append jobs
LANE = "report"


# ------------------------------------------------------------------------- the tasks
def count(paths: list[str], part: str) -> dict[str, Any]:
    """Count the files, lines, characters and identifiers of ``paths`` into ``part``; return
    the lines counted and where this job ran."""
    names: Counter[str] = Counter()
    lines = size = 0
    for path in paths:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        lines += text.count("\n")
        size += len(text)
        names.update(identifiers(text))
    counts = {
        "files": len(paths),
        "lines": lines,
        "chars": size,
        "identifiers": sum(names.values()),
        "names": dict(names),
    }
    Path(part).write_text(json.dumps(counts), encoding="utf-8")
    return {"lines": lines, "ran_in": ran_in()}


def identifiers(source: str) -> list[str]:
    """The names in ``source``'s code, keywords left out; comments, strings and docstrings
    are not code. A file that does not tokenize to its end gives the names before the error."""
    found: list[str] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.NAME and not keyword.iskeyword(token.string):
                found.append(token.string)
    except (tokenize.TokenError, SyntaxError):
        pass
    return found


def append(part: str, report: str) -> dict[str, Any]:
    """Append one part file to the report as a JSON line; return where this job ran."""
    with open(report, "a", encoding="utf-8") as out:
        out.write(Path(part).read_text(encoding="utf-8") + "\n")
    return {"part": part, "ran_in": ran_in()}


def summarise(report: str) -> dict[str, Any]:
    """Total the report's lines; return the totals, the most common identifiers and where
    this job ran."""
    names: Counter[str] = Counter()
    totals = {"batches": 0, "files": 0, "lines": 0, "chars": 0, "identifiers": 0}
    for line in Path(report).read_text(encoding="utf-8").splitlines():
        part = json.loads(line)
        totals["batches"] += 1
        for key in ("files", "lines", "chars", "identifiers"):
            totals[key] += part[key]
        names.update(part["names"])
    return {**totals, "distinct": len(names), "top": names.most_common(5), "ran_in": ran_in()}


def ran_in() -> str:
    """Where the calling job runs: its worker process (process mode) or its thread."""
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        return f"process {os.getpid()}"
    return threading.current_thread().name.removeprefix("conveyor-")


#: the demo's queues allow this module: their workers run its functions, and only those (a
#: worker starts claiming as its queue is built, before any ``@q.task`` that follows could run)
ALLOW = [__name__]


# ----------------------------------------------------------------------- the batches
@dataclass
class Batch:
    """Files read by one count job."""

    name: str
    files: list[str]
    size: int  # bytes

    @property
    def priority(self) -> int:
        """Minus the size in KB: the biggest batch has the lowest number, and starts first."""
        return -(self.size // 1024)


def default_source() -> Path:
    """The standard library's folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def batches(root: Path, target: int = BATCHES) -> list[Batch]:
    """The ``.py`` files under ``root`` in about ``target`` batches, in name order: one per
    package (the files at the top are the package "modules"); a package bigger than a batch
    is cut in parts ("modules 2/7"), small neighbours go together ("html+json")."""
    groups: dict[str, list[tuple[str, int]]] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if SKIPPED.intersection(parts[:-1]) or not path.is_file():
            continue
        group = parts[0] if len(parts) > 1 else "modules"
        groups.setdefault(group, []).append((str(path), path.stat().st_size))
    total = sum(size for files in groups.values() for _, size in files)
    limit = max(1, total // max(1, target))
    pieces = [piece for name in sorted(groups) for piece in _cut(name, groups[name], limit)]
    return _join_small(pieces, limit)


def _cut(name: str, files: list[tuple[str, int]], limit: int) -> list[Batch]:
    """``files`` in consecutive parts of at most ``limit`` bytes (a bigger file alone)."""
    parts: list[Batch] = []
    for path, size in files:
        if not parts or (parts[-1].size + size > limit and parts[-1].size >= limit // 2):
            parts.append(Batch(name, [], 0))
        parts[-1].files.append(path)
        parts[-1].size += size
    if len(parts) > 1:
        for n, part in enumerate(parts, 1):
            part.name = f"{name} {n}/{len(parts)}"
    return parts


def _join_small(pieces: list[Batch], limit: int) -> list[Batch]:
    """Neighbouring pieces under half a batch joined, up to a batch ("html+json", or
    "collections..dbm" for more than two)."""
    joined: list[tuple[list[str], Batch]] = []
    for piece in pieces:
        last = joined[-1][1] if joined else None
        if (
            last is not None
            and last.size < limit // 2
            and piece.size < limit // 2
            and last.size + piece.size <= limit
        ):
            joined[-1][0].append(piece.name)
            last.files += piece.files
            last.size += piece.size
        else:
            joined.append(([piece.name], Batch(piece.name, list(piece.files), piece.size)))
    for names, batch in joined:
        batch.name = "+".join(names) if len(names) <= 2 else f"{names[0]}..{names[-1]}"
    return [batch for _, batch in joined]


# -------------------------------------------------------------------------- the run
@dataclass
class Run:
    """What one demo run did."""

    number: int
    url: str
    batches: list[Batch]
    records: list[conveyor.JobRecord]  # this run's jobs
    earlier: list[conveyor.JobRecord]  # the jobs earlier runs left in the file
    summary: dict[str, Any] | None  # None if the summary did not finish
    workdir: Path | None = None  # where queue.db is (and the timeline goes)


def run(
    workers: int | None,
    mode: str,
    workdir: Path,
    source: Path | None = None,
    *,
    progress: bool = True,
    echo: Callable[[str], object] = print,
) -> Run:
    """Run the pipeline on the queue file ``queue.db`` in ``workdir``: a producer puts every
    job, then a queue with ``workers`` slots of ``mode`` runs them.

    Before it runs, ``echo`` gets the list of the runs already in the file. With
    ``progress``, a tqdm bar on a terminal, else a plain progress line on standard error."""
    root = (source or default_source()).resolve()
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{workdir}/queue.db"  # an absolute path: sqlite:////...
    work = batches(root)
    if not work:
        raise conveyor.ConveyorError(f"no .py files under {root}")
    # the jobs take the mode of the workers that will run them
    with conveyor.Queue(url, workers=0, mode=mode, name="demo", allow_modules=ALLOW) as producer:
        earlier = producer.jobs()
        if earlier:
            echo(f"Earlier runs, still in {workdir / 'queue.db'}:\n{runs_table(earlier)}\n")
        number = 1 + max((int(r.meta.get("run", 0)) for r in earlier), default=0)
        put_jobs(producer, work, number, workdir)
    echo(
        f"Run {number}: {len(work) * 2 + 1} jobs put, now run by"
        f" {workers or os.cpu_count() or 1} {mode} worker slot(s)"
    )
    with conveyor.Queue(url, workers=workers, mode=mode, name="demo", allow_modules=ALLOW) as q:
        wait(q, len(work) * 2 + 1, progress, lambda q: len(this_run(q, number, TERMINAL)))
        records = this_run(q, number)
        total = next((r for r in records if r.task == "summarise"), None)
    summary = total.result if total is not None and isinstance(total.result, dict) else None
    return Run(number, url, work, records, earlier, summary, workdir)


def this_run(
    q: conveyor.Queue, number: int, statuses: Collection[conveyor.Status] = ()
) -> list[conveyor.JobRecord]:
    """The records of run ``number`` (in these statuses, or all)."""
    records = [r for r in q.jobs() if r.meta.get("run") == number]
    return [r for r in records if r.status in statuses] if statuses else records


def put_jobs(q: conveyor.Queue, work: list[Batch], number: int, workdir: Path) -> None:
    """Put the run's jobs: the counts, the appends in lane order, the summary."""
    meta = {"run": number}
    report = workdir / f"report-{number}.jsonl"
    report.write_text("", encoding="utf-8")
    appends = []
    for n, batch in enumerate(work):
        part = str(workdir / f"part-{number}-{n:02d}.json")
        counted = q.put(
            count,
            args=(batch.files, part),
            id=f"run{number}-count-{n:02d}",
            priority=batch.priority,
            meta={**meta, "batch": batch.name, "kb": batch.size // 1024},
        )
        appends.append(
            q.put(
                append,
                args=(part, str(report)),
                id=f"run{number}-append-{n:02d}",
                after=[counted],
                lane=LANE,
                meta={**meta, "batch": batch.name, "place": n},
            )
        )
    q.put(summarise, args=(str(report),), id=f"run{number}-summarise", after=appends, meta=meta)


def wait(
    q: conveyor.Queue, total: int, progress: bool, ended: Callable[[conveyor.Queue], int]
) -> None:
    """Wait for the run's ``total`` jobs (``ended(q)`` of them have ended): a tqdm bar on a
    terminal (with the progress extra), else a plain line."""
    if not progress:
        q.wait()
        return
    if sys.stderr.isatty():
        try:
            import tqdm  # noqa: F401
        except ImportError:
            pass
        else:
            q.wait(progress=True)
            return
    line = ProgressLine(total, sys.stderr)
    for event in ("finished", "failed", "cancelled"):
        q.on(event, line.ended)  # jobs may end before this: close() tells the final count
    q.wait()
    line.close(ended(q))


class ProgressLine:
    """``jobs ended: 12/49``: rewritten in place on a terminal; elsewhere a line at every
    quarter (no tqdm needed)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self.live = stream.isatty()
        self._lock = threading.Lock()
        self._shown = 0

    def ended(self, _record: conveyor.JobRecord) -> None:
        """A job ended (an event callback: it runs in the worker's thread)."""
        with self._lock:
            self.done += 1
            self._show()

    def _show(self) -> None:
        quarter = 4 * self.done // max(1, self.total)
        if self.live:
            self.stream.write(f"\rjobs ended: {self.done}/{self.total}")
        elif quarter > self._shown:
            self._shown = quarter
            self.stream.write(f"jobs ended: {self.done}/{self.total}\n")
        else:
            return
        self.stream.flush()

    def close(self, ended: int) -> None:
        """End the line, saying how many jobs ``ended``."""
        with self._lock:
            self.done = ended
            if self.live:
                self._show()
                self.stream.write("\n")
            elif self._shown < 4:
                self._shown = 3
                self._show()
            self.stream.flush()


# ------------------------------------------------------------- earlier runs
def runs_table(records: list[conveyor.JobRecord]) -> str:
    """One line per demo run found in the queue file: its jobs by status and when it ran."""
    runs: dict[object, list[conveyor.JobRecord]] = {}
    for record in records:
        runs.setdefault(record.meta.get("run", "?"), []).append(record)
    lines = [f"{'run':>4} {'jobs':>5}  {'statuses':<28} {'first submit':<20} last end"]
    for run_no, items in sorted(runs.items(), key=lambda kv: _number(kv[0])):
        statuses = ", ".join(
            f"{n} {status}" for status, n in sorted(Counter(r.status.value for r in items).items())
        )
        first = min((r.submitted for r in items if r.submitted), default=None)
        last = max((r.ended for r in items if r.ended), default=None)
        lines.append(
            f"{run_no!s:>4} {len(items):>5}  {statuses:<28} "
            f"{first.astimezone().strftime('%Y-%m-%d %H:%M:%S') if first else '':<20} "
            f"{last.astimezone().strftime('%H:%M:%S') if last else ''}"
        )
    return "\n".join(lines)


def _number(run: object) -> int:
    text = str(run)
    return int(text) if text.isdigit() else -1
