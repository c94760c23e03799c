"""What ``conveyor.progress()`` costs a job that calls it for every item.

One job loops over ``--items`` items (each a little arithmetic, ``--work`` additions) and runs
once without progress calls and once calling ``conveyor.progress(i / n, "item i")`` after each
item, on each backend (memory, SQLite, Redis: ``--redis URL``, else a ``redis-server`` started
here if there is one) and in each mode (thread, process). Printed per case: the job's own
runtime (its record's ``runtime``, median of ``--repeat`` runs) without and with the calls,
their ratio, and the cost per call in microseconds; first, the cost of a call alone. The
tracker sends at most one value every 0.1 s (see conveyor/tracking.py), so a call mostly costs
its checks, not a backend write.

    python benchmarks/progress.py [--items 10000] [--work 200] [--repeat 3] [--redis URL]
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/ holds redis.py: with it on sys.path, the Redis backend's `import redis` finds it
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import conveyor  # noqa: E402


def loop(items: int, work: int, report: bool) -> int:
    """The job: ``items`` items of ``work`` additions, with a progress call after each if
    ``report``."""
    total = 0
    for i in range(1, items + 1):
        total += sum(range(work))
        if report:
            conveyor.progress(i / items, f"item {i}")
    return total


@contextlib.contextmanager
def redis_url(url: str | None) -> Iterator[str | None]:
    """``url``, else a throwaway ``redis-server`` on a free port (None if there is none)."""
    if url or shutil.which("redis-server") is None:
        yield url
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.01)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def runtime(url: str, mode: str, items: int, work: int, report: bool) -> float:
    """The job's own runtime in seconds, as its record gives it."""
    with conveyor.Queue(url, workers=1, mode=mode, name=f"bench-{time.time_ns()}") as q:
        task = q.task(name="loop")(loop)
        job = task.enqueue(items, work, report)
        job.result(timeout=600)
        seconds = q.job(job.id).runtime
    assert seconds is not None
    return seconds


def call_cost(calls: int = 100_000) -> float:
    """Microseconds per ``conveyor.progress()`` call alone, its values sent to nothing."""
    from conveyor.tracking import tracking

    with tracking(lambda fraction, message: None):
        start = time.perf_counter()
        for i in range(calls):
            conveyor.progress(i / calls, "item")
        return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000, help="items of the job")
    parser.add_argument("--work", type=int, default=200, help="additions per item")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (median)")
    parser.add_argument("--redis", default=None, help="a Redis URL (its queue keys are used)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-progress-") as tmp, redis_url(args.redis) as r:
        urls = {"memory": "memory://", "sqlite": f"sqlite:///{tmp}/queue.db"}
        if r is not None:
            urls["redis"] = r
        print(f"conveyor.progress() alone: {call_cost():.2f} us per call")
        print(f"{args.items} items of {args.work} additions; median of {args.repeat} runs")
        print(f"{'backend':8} {'mode':8} {'without':>9} {'with':>9} {'ratio':>6} {'us/call':>8}")
        for name, url in urls.items():
            for mode in ("thread", "process"):
                runs = {
                    report: statistics.median(
                        runtime(url, mode, args.items, args.work, report)
                        for _ in range(args.repeat)
                    )
                    for report in (False, True)
                }
                plain, reported = runs[False], runs[True]
                per_call = (reported - plain) / args.items * 1e6
                print(
                    f"{name:8} {mode:8} {plain:8.3f}s {reported:8.3f}s "
                    f"{reported / plain:6.2f} {per_call:8.2f}"
                )


if __name__ == "__main__":
    main()
