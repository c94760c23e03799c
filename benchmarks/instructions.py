"""Instructions per job under valgrind's callgrind, a measure the machine's load does not move.

For comparing two versions of conveyor on the same case, with the same Python.

Each case runs twice under callgrind in a child process, with 0 jobs and with --jobs jobs;
the difference of the two instruction totals over --jobs is the cost of one job (interpreter
start-up, imports and the queue's start and close cancel out). Cases:

``thread-map``
    what ``benchmarks/inprocess.py`` times for "conveyor thread q.map": a memory queue with 2
    thread workers, warmed with 4 jobs, then ``q.map(double, range(jobs))``.
``sqlite-put``
    what ``benchmarks/sqlite.py`` times in its part 1: ``q.put(noop, args=(i,))`` per job on a
    producer queue (``workers=0``) over a fresh SQLite file.
``sqlite-run``
    the same puts, then one queue with one worker thread on the file runs them all
    (``q.wait()``); minus ``sqlite-put``, what running a job from SQLite costs.

Callgrind runs the program tens of times slower, one thread at a time; the counts include the
cyclic garbage collector, which a per-job object that lives on makes run more often. Use the
same Python for both versions: the counts are of its interpreter.

    python benchmarks/instructions.py [--jobs 3000] [--case thread-map ...]
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
#: benchmarks/sqlite.py's app (sqlite_app), which the SQLite cases share
SQLITE_PEERS = HERE / "sqlite_peers"
CASES = ("thread-map", "sqlite-put", "sqlite-run")
WARMUP_JOBS = 4
#: callgrind's summary line of its output file: the total of every event counted
TOTAL = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


# ------------------------------------------------------------------ the cases (in the child)
def double(x: int) -> int:
    return x * 2


def thread_map(jobs: int, _folder: Path) -> None:
    import conveyor

    with conveyor.Queue(workers=2, mode="thread") as q:
        warm = list(range(WARMUP_JOBS))
        if q.map(double, warm) != [double(x) for x in warm]:
            raise RuntimeError("warm-up returned wrong results")
        items = list(range(jobs))
        if q.map(double, items) != [double(x) for x in items]:
            raise RuntimeError("results missing or out of input order")


def _sqlite_app() -> ModuleType:
    """benchmarks/sqlite_peers/sqlite_app.py, imported by name as its worker processes do."""
    if str(SQLITE_PEERS) not in sys.path:
        sys.path.insert(0, str(SQLITE_PEERS))
    return importlib.import_module("sqlite_app")


def sqlite_put(jobs: int, folder: Path) -> None:
    sqlite_app = _sqlite_app()

    import conveyor

    url = f"sqlite:///{folder / 'conveyor.db'}"
    q = conveyor.Queue(url, workers=0, allow_modules=sqlite_app.ALLOW_MODULES)
    try:
        for i in range(jobs):
            q.put(sqlite_app.noop, args=(i,))
        if q.size(conveyor.Status.WAITING) != jobs:
            raise RuntimeError(f"the queue holds {q.size()} jobs, expected {jobs} waiting")
    finally:
        q.close(wait=False)


def sqlite_run(jobs: int, folder: Path) -> None:
    sqlite_app = _sqlite_app()

    import conveyor

    sqlite_put(jobs, folder)
    url = f"sqlite:///{folder / 'conveyor.db'}"
    sqlite_app.run_conveyor_worker(url)
    q = conveyor.Queue(url, workers=0, allow_modules=sqlite_app.ALLOW_MODULES)
    try:
        results = sorted(record.result for record in q.jobs(conveyor.Status.FINISHED))
    finally:
        q.close(wait=False)
    if results != list(range(jobs)):
        raise RuntimeError("results missing or wrong")


RUNS: dict[str, Callable[[int, Path], None]] = {
    "thread-map": thread_map,
    "sqlite-put": sqlite_put,
    "sqlite-run": sqlite_run,
}


# ------------------------------------------------------------------ counting (in the parent)
def instructions(valgrind: str, case: str, jobs: int, folder: Path) -> int:
    """Instructions of one run of ``case`` with ``jobs`` jobs under callgrind."""
    out = folder / f"callgrind.{case}.{jobs}.out"
    data = folder / f"data.{case}.{jobs}"
    data.mkdir()
    command = [
        valgrind,
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        case,
        "--jobs",
        str(jobs),
        "--dir",
        str(data),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{case} with {jobs} jobs failed under callgrind:\n{done.stderr}")
    match = TOTAL.search(out.read_text())
    if match is None:
        raise RuntimeError(f"no instruction total in {out.name}")
    return int(match.group(1))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--jobs", type=int, default=3_000, help="jobs per counted run")
    parser.add_argument(
        "--case", choices=CASES, action="append", help="a case to count (default: all)"
    )
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is None and args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    if args.child is not None:
        RUNS[args.child](args.jobs, args.dir)
        return
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.exit("valgrind is not installed: this benchmark counts instructions with callgrind")
    import conveyor

    print(f"conveyor {conveyor.__version__}, Python {sys.version.split()[0]}, callgrind")
    print(f"{'case':<12} {'0 jobs':>15} {f'{args.jobs} jobs':>15} {'per job':>11}")
    with tempfile.TemporaryDirectory(prefix="conveyor-instructions-") as tmp:
        for case in args.case or CASES:
            empty = instructions(valgrind, case, 0, Path(tmp))
            full = instructions(valgrind, case, args.jobs, Path(tmp))
            per_job = (full - empty) / args.jobs
            print(f"{case:<12} {empty:>15,} {full:>15,} {per_job:>11,.0f}", flush=True)


if __name__ == "__main__":
    main()
