"""The benchmark scripts run (tiny sizes) and print their ratio tables. Their figures are not
checked here (speed is measured by running them, never asserted in a test): this keeps them
from breaking unnoticed, as benchmarks/sqlite.py once did when benchmarks/redis.py came to
shadow redis-py for Huey's import."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
#: a line of a ratio table: a name, a number, a target and a verdict
RATIO = re.compile(r"^(?P<name>.+?)\s+(?P<value>\d+\.\d\d)\s+(?:>=|<=) \S+\s+(PASS|MISS)$", re.M)

pytest.importorskip("huey", reason="the benchmarks' peers are in the bench and test extras")
pytest.importorskip("ezpq", reason="the benchmarks' peers are in the bench and test extras")


def run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_the_sqlite_benchmark_runs_against_huey() -> None:
    out = run("sqlite.py", "--jobs", "40", "--repeat", "1")
    names = [m["name"].strip() for m in RATIO.finditer(out)]
    assert "end-to-end: conveyor / Huey" in names, out
    assert "end-to-end: conveyor / Huey sync=NORMAL" in names, out


@pytest.mark.slow
def test_the_inprocess_benchmark_runs_against_the_pools() -> None:
    out = run(
        "inprocess.py", "--jobs", "100", "--repeat", "1", "--ezpq-thread-jobs", "3",
        "--ezpq-process-jobs", "3", "--makespan-jobs", "4",
    )  # fmt: skip
    names = [m["name"].strip() for m in RATIO.finditer(out)]
    assert "conveyor-thread / ThreadPoolExecutor" in names, out
    assert "conveyor-process / ProcessPoolExecutor chunksize=1" in names, out
