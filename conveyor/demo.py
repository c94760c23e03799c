"""The pipeline behind ``conveyor demo``: a real workload on the in-process queue.

It reads the Python standard library. One ``count`` job per batch of files (the biggest batches
first, by priority) writes its counts to a part file; one ``append`` job per batch, after its
``count``, adds that part to a report in a sequential lane (so the report is in batch order);
a ``summarise`` job after every ``append`` totals the report.
"""

from __future__ import annotations

import json
import sysconfig
from collections import Counter
from pathlib import Path
from typing import Any

import conveyor

BATCHES = 24


def count(paths: list[str], part: str) -> int:
    """Count files, lines, characters and identifiers of ``paths`` into ``part``; return lines."""
    words: Counter[str] = Counter()
    lines = size = 0
    for path in paths:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        lines += text.count("\n")
        size += len(text)
        words.update(w for w in text.split() if w.isidentifier())
    counts = {"files": len(paths), "lines": lines, "chars": size, "words": words.most_common(20)}
    Path(part).write_text(json.dumps(counts), encoding="utf-8")
    return lines


def append(part: str, report: str) -> str:
    """Append one part file to the report as a JSON line."""
    with open(report, "a", encoding="utf-8") as out:
        out.write(Path(part).read_text(encoding="utf-8") + "\n")
    return part


def summarise(report: str) -> dict[str, Any]:
    """Total the report's lines."""
    words: Counter[str] = Counter()
    totals = {"batches": 0, "files": 0, "lines": 0, "chars": 0}
    for line in Path(report).read_text(encoding="utf-8").splitlines():
        part = json.loads(line)
        totals["batches"] += 1
        for key in ("files", "lines", "chars"):
            totals[key] += part[key]
        words.update(dict(part["words"]))
    return {**totals, "words": words.most_common(5)}


def batches(root: Path, count_: int) -> list[list[str]]:
    """Split the ``.py`` files under ``root`` into up to ``count_`` batches of similar size."""
    sized = sorted(
        (
            (p.stat().st_size, str(p))
            for p in root.rglob("*.py")
            if "site-packages" not in p.parts and "dist-packages" not in p.parts
        ),
        reverse=True,
    )
    groups: list[list[str]] = [[] for _ in range(count_)]
    totals = [0] * count_
    for size, path in sized:
        smallest = totals.index(min(totals))
        groups[smallest].append(path)
        totals[smallest] += size
    return [group for group in groups if group]


def run(
    workers: int | None, mode: str, workdir: Path
) -> tuple[dict[str, Any], list[conveyor.JobRecord], list[conveyor.JobRecord]]:
    """Run the pipeline on the queue file in ``workdir``.

    Returns the summary, this run's records, and the records earlier runs left in the file.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    with conveyor.Queue(
        f"sqlite:///{workdir}/queue.db", workers=workers, mode=mode, name="demo"
    ) as q:
        for job in (count, append, summarise):
            q.task()(job)  # registered: the only functions this queue's workers run
        earlier = q.jobs()
        run_no = 1 + max((int(r.meta.get("run", 0)) for r in earlier), default=0)
        report = workdir / f"report-{run_no}.jsonl"
        report.write_text("", encoding="utf-8")
        meta = {"run": run_no}
        appends = []
        for n, group in enumerate(batches(root, BATCHES)):
            part = str(workdir / f"part-{run_no}-{n:02d}.json")
            # a bigger batch gets a lower priority number, so it starts sooner
            counted = q.put(
                count,
                args=(group, part),
                id=f"run{run_no}-count-{n:02d}",
                priority=-len(group),
                meta=meta,
            )
            appends.append(
                q.put(
                    append,
                    args=(part, str(report)),
                    id=f"run{run_no}-append-{n:02d}",
                    after=[counted],
                    lane="report",
                    meta=meta,
                )
            )
        total = q.put(
            summarise, args=(str(report),), id=f"run{run_no}-summarise", after=appends, meta=meta
        )
        q.wait(progress=True)
        summary = total.result()
        mine = [r for r in q.jobs() if r.meta.get("run") == run_no]
    return summary, mine, earlier
