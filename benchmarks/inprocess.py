"""In-process benchmarks for conveyor: throughput of tiny jobs and makespan of sleeping jobs.

Part 1 (throughput): N tiny jobs (``double``), results collected in input order, on 2 workers,
against concurrent.futures, multiprocessing.Pool and ezpq. Pool start-up is not timed: each
pool is created and warmed with a few jobs, then its map is timed; the best of --repeat runs
counts. ezpq polls every 0.1 s and starts a thread or process per job, so it runs on fewer jobs.

Part 2 (makespan): jobs that sleep seeded uniform(0.05, 0.15) s, on 6 conveyor thread workers
(put all, wait), measured from the first submit to the last end, against the greedy
list-schedule makespan of the same durations in submission order.

    python benchmarks/inprocess.py [--jobs 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import heapq
import inspect
import multiprocessing
import os
import platform
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import ezpq  # type: ignore[import-untyped]

import conveyor

WORKERS = 2
WARMUP_JOBS = 4

MapFn = Callable[[list[int]], list[int]]


def double(x: int) -> int:
    return x * 2


def nap(seconds: float) -> None:
    time.sleep(seconds)


# ------------------------------------------------------------------ contenders (part 1)
@contextmanager
def conveyor_pool(mode: str) -> Iterator[MapFn]:
    with conveyor.Queue(workers=WORKERS, mode=mode) as q:
        yield lambda items: q.map(double, items)


@contextmanager
def executor_pool(kind: Callable[..., Executor], **map_options: Any) -> Iterator[MapFn]:
    with kind(max_workers=WORKERS) as pool:
        yield lambda items: list(pool.map(double, items, **map_options))


@contextmanager
def multiprocessing_pool() -> Iterator[MapFn]:
    with multiprocessing.Pool(WORKERS) as pool:
        yield lambda items: pool.map(double, items)


@contextmanager
def ezpq_pool(runner: type[threading.Thread] | None) -> Iterator[MapFn]:
    options = {} if runner is None else {"job_runner": runner}
    with ezpq.Queue(WORKERS, **options) as q:
        # ezpq's map returns job dicts, ordered by (priority, submit time): input order here
        yield lambda items: [job["output"] for job in q.map(double, items)]


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    pool: Callable[[], AbstractContextManager[MapFn]]
    jobs: int


@dataclass(frozen=True)
class Result:
    contender: Contender
    seconds: float

    @property
    def rate(self) -> float:
        return self.contender.jobs / self.seconds


def main_contenders(jobs: int) -> list[Contender]:
    """conveyor and the standard library, on the full job count."""
    chunk = inspect.signature(ProcessPoolExecutor.map).parameters["chunksize"].default
    ppe = partial(executor_pool, ProcessPoolExecutor)
    rows: list[tuple[str, str, Callable[[], AbstractContextManager[MapFn]]]] = [
        ("conveyor-thread", "conveyor thread q.map", partial(conveyor_pool, "thread")),
        ("conveyor-process", "conveyor process q.map", partial(conveyor_pool, "process")),
        ("tpe", "ThreadPoolExecutor(2).map", partial(executor_pool, ThreadPoolExecutor)),
        ("ppe-1", "ProcessPoolExecutor(2).map chunksize=1", partial(ppe, chunksize=1)),
        ("ppe-default", f"ProcessPoolExecutor(2).map default chunksize (={chunk})", ppe),
        ("mp-pool", "multiprocessing.Pool(2).map default chunksize", multiprocessing_pool),
    ]
    return [Contender(key, label, pool, jobs) for key, label, pool in rows]


def ezpq_contenders(args: argparse.Namespace) -> list[Contender]:
    """ezpq, on its own (smaller) job counts."""
    return [
        Contender(
            "ezpq-thread",
            "ezpq.Queue(2, job_runner=Thread).map",
            partial(ezpq_pool, threading.Thread),
            args.ezpq_thread_jobs,
        ),
        Contender(
            "ezpq-process",
            "ezpq.Queue(2).map (processes)",
            partial(ezpq_pool, None),
            args.ezpq_process_jobs,
        ),
    ]


RATIOS = [
    ("conveyor-thread / ThreadPoolExecutor", "conveyor-thread", "tpe", 0.8),
    ("conveyor-process / ProcessPoolExecutor chunksize=1", "conveyor-process", "ppe-1", 1.0),
    ("conveyor-thread / ezpq-thread", "conveyor-thread", "ezpq-thread", 10.0),
    ("conveyor-process / ezpq-process", "conveyor-process", "ezpq-process", 10.0),
]


# ------------------------------------------------------------------ measuring (part 1)
def bench(name: str, fn: MapFn, jobs: int, repeat: int) -> float:
    """Best wall time of ``repeat`` runs of ``fn`` over ``jobs`` items; checks every result."""
    items = list(range(jobs))
    expected = [double(x) for x in items]
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        results = fn(items)
        elapsed = time.perf_counter() - start
        if results != expected:
            raise RuntimeError(f"{name}: results missing or out of input order")
        best = min(best, elapsed)
    return best


def measure(contender: Contender, repeat: int) -> Result:
    """Create and warm the contender's pool (not timed), then time its map."""
    with contender.pool() as fn:
        warm = list(range(WARMUP_JOBS))
        if fn(warm) != [double(x) for x in warm]:
            raise RuntimeError(f"{contender.label}: warm-up returned wrong results")
        seconds = bench(contender.label, fn, contender.jobs, repeat)
    return Result(contender, seconds)


def print_throughput(results: list[Result], repeat: int) -> None:
    print(f"\nPart 1: throughput, {WORKERS} workers, best of {repeat}")
    print(f"{'contender':<52} {'jobs':>7} {'best s':>9} {'jobs/s':>11}")
    for r in results:
        print(f"{r.contender.label:<52} {r.contender.jobs:>7} {r.seconds:>9.3f} {r.rate:>11,.0f}")


def print_ratios(results: list[Result]) -> None:
    rates = {r.contender.key: r.rate for r in results}
    print(f"\n{'ratio (jobs/s over jobs/s)':<52} {'value':>7} {'target':>9} {'verdict':>11}")
    for label, numerator, denominator, target in RATIOS:
        value = rates[numerator] / rates[denominator]
        verdict = "PASS" if value >= target else "MISS"
        print(f"{label:<52} {value:>7.2f} {'>= ' + format(target, '.1f'):>9} {verdict:>11}")


# ------------------------------------------------------------------ makespan (part 2)
def ideal_makespan(durations: list[float], machines: int) -> float:
    """Greedy list schedule: each job, in order, goes to the machine that frees up first."""
    free_at = [0.0] * machines
    for duration in durations:
        heapq.heappush(free_at, heapq.heappop(free_at) + duration)
    return max(free_at)


def run_makespan(durations: list[float], workers: int) -> float:
    """Put every job on a fresh conveyor thread queue, wait; first submit to last end, in s."""
    with conveyor.Queue(workers=workers, mode="thread") as q:
        for seconds in durations:
            q.put(nap, args=(seconds,))
        q.wait()
        records = q.jobs()
    if any(r.status is not conveyor.Status.FINISHED for r in records):
        raise RuntimeError("a makespan job did not finish")
    first = min(r.submitted for r in records if r.submitted is not None)
    last = max(r.ended for r in records if r.ended is not None)
    return (last - first).total_seconds()


def print_makespan(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    durations = [rng.uniform(0.05, 0.15) for _ in range(args.makespan_jobs)]
    ideal = ideal_makespan(durations, args.makespan_workers)
    runs = [run_makespan(durations, args.makespan_workers) for _ in range(args.repeat)]
    print(
        f"\nPart 2: makespan, {args.makespan_jobs} jobs sleeping uniform(0.05, 0.15) s "
        f"(seed {args.seed}), {args.makespan_workers} conveyor thread workers, put all + wait"
    )
    print(f"{'':<48} {'seconds':>9} {'over ideal':>11} {'target':>9} {'verdict':>8}")
    print(f"{'ideal (greedy list schedule, submission order)':<48} {ideal:>9.4f}")
    for label, measured in (("best", min(runs)), ("worst", max(runs))):
        over = measured / ideal - 1
        verdict = "PASS" if over <= 0.05 else "MISS"
        row = f"measured, {label} of {args.repeat} (first submit to last end)"
        print(f"{row:<48} {measured:>9.4f} {over:>+11.2%} {'<= 5%':>9} {verdict:>8}")


# ------------------------------------------------------------------ main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="tiny jobs per map")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best counts")
    parser.add_argument("--ezpq-thread-jobs", type=int, default=300)
    parser.add_argument("--ezpq-process-jobs", type=int, default=200)
    parser.add_argument("--makespan-jobs", type=int, default=60)
    parser.add_argument("--makespan-workers", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0, help="seed of the sleep durations")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    print(
        f"conveyor {conveyor.__version__}, ezpq {ezpq.__version__}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"start method {multiprocessing.get_start_method()}"
    )
    lineup = main_contenders(args.jobs) + ezpq_contenders(args)
    results = [measure(contender, args.repeat) for contender in lineup]
    print_throughput(results, args.repeat)
    print_ratios(results)
    print_makespan(args)


if __name__ == "__main__":
    main()
