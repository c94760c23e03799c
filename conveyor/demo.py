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


def run(workers: int | None, mode: str, workdir: Path) -> tuple[dict[str, Any], list[Any]]:
    """Run the pipeline in ``workdir``; return the summary and every job's record."""
    root = Path(sysconfig.get_paths()["stdlib"])
    workdir.mkdir(parents=True, exist_ok=True)
    report = workdir / "report.jsonl"
    report.write_text("", encoding="utf-8")
    with conveyor.Queue(workers=workers, mode=mode, name="demo") as q:
        appends = []
        for n, group in enumerate(batches(root, BATCHES)):
            part = str(workdir / f"part-{n:02d}.json")
            # a bigger batch gets a lower priority number, so it starts sooner
            counted = q.put(count, args=(group, part), id=f"count-{n:02d}", priority=-len(group))
            appends.append(
                q.put(
                    append,
                    args=(part, str(report)),
                    id=f"append-{n:02d}",
                    after=[counted],
                    lane="report",
                )
            )
        total = q.put(summarise, args=(str(report),), id="summarise", after=appends)
        q.wait(progress=True)
        return total.result(), q.jobs()
