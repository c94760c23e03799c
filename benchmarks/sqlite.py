"""SQLite benchmarks for conveyor against Huey (``SqliteHuey``), on the same disk.

Every measurement gets its own fresh files in one temporary directory (--dir picks its parent).
The job of both queues is ``sqlite_app.noop``, which returns its argument; results are stored.

Part 1 (enqueue): N jobs put into an empty queue, one call per job, the way users write it:
conveyor ``q.put(noop, args=(i,))`` and ``task.enqueue(i)`` on a producer queue
(``workers=0``), against a ``@huey.task()`` function called in a loop. conveyor has no public
bulk enqueue: ``q.map`` waits for the results and forgets its jobs, so it does not count.

Part 2 (end-to-end): N jobs already enqueued (not timed), then 2 worker processes drain them:
conveyor, 2 processes each running ``conveyor worker sqlite_app:q -w 1 --burst`` if the CLI has
it, else ``Queue(url, workers=1)`` + ``q.wait()`` + ``q.close()`` (--conveyor-worker picks);
Huey, ``huey_consumer sqlite_app.huey -w 2 -k process -q`` (-q: no log line per task). Timed
from starting the processes until this process sees all N results in the file (polled every
--poll s), so interpreter start-up counts on both sides; "first" is when the first result
appeared.

Durability differs by default: conveyor runs SQLite with ``synchronous=NORMAL`` (WAL: no fsync
per commit; a commit survives a crash of the process, not of the machine), Huey with SQLite's
default FULL (an fsync per commit). The "Huey sync=NORMAL" rows give Huey conveyor's setting,
for a like-for-like ratio. Best of --repeat counts.

    python benchmarks/sqlite.py [--jobs 5000] [--repeat 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = HERE / "sqlite_peers"
# benchmarks/ holds redis.py: with it on sys.path, huey's `import redis` would find it
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(PEERS))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from functools import partial  # noqa: E402
from typing import Any  # noqa: E402

import huey as huey_package  # type: ignore[import-untyped]  # noqa: E402
import sqlite_app  # noqa: E402  (benchmarks/sqlite_peers, put on sys.path above)
from sqlite_app import build_huey, noop  # noqa: E402

import conveyor  # noqa: E402

WORKERS = 2
#: seconds a worker process gets to exit by itself (conveyor) or after SIGINT (Huey)
EXIT_GRACE = 30.0


# ------------------------------------------------------------------ files and processes
def conveyor_url(path: Path) -> str:
    return f"sqlite:///{path}"  # path is absolute: sqlite:////abs/path.db


def child_env(**extra: str) -> dict[str, str]:
    """This environment, with benchmarks/sqlite_peers on PYTHONPATH so that workers import
    sqlite_app."""
    path = os.pathsep.join(p for p in (str(PEERS), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


@contextlib.contextmanager
def counter(path: Path, sql: str) -> Iterator[Callable[[], int]]:
    """A function returning ``sql``'s count, read on one connection to ``path``."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None, timeout=60)) as db:
        yield lambda: int(db.execute(sql).fetchone()[0])


# ------------------------------------------------------------------ part 1: enqueue
def enqueue_conveyor(folder: Path, jobs: int, *, via_task: bool, bulk: bool = False) -> float:
    q = conveyor.Queue(
        conveyor_url(folder / "conveyor.db"), workers=0, allow_modules=sqlite_app.ALLOW_MODULES
    )
    try:
        put = q.task(noop).enqueue if via_task else lambda i: q.put(noop, args=(i,))
        start = time.perf_counter()
        if bulk:
            q.put_many(noop, range(jobs))  # one transaction
        else:
            for i in range(jobs):
                put(i)
        elapsed = time.perf_counter() - start
        if q.size(conveyor.Status.WAITING) != jobs:
            raise RuntimeError(f"conveyor holds {q.size()} jobs, expected {jobs} waiting")
    finally:
        q.close(wait=False)  # a producer: close(wait=True) would wait for the jobs to run
    return elapsed


def enqueue_huey(folder: Path, jobs: int, *, synchronous: str | None) -> float:
    huey, task = build_huey(str(folder / "huey.db"), synchronous)
    try:
        start = time.perf_counter()
        for i in range(jobs):
            task(i)
        elapsed = time.perf_counter() - start
        if huey.pending_count() != jobs:
            raise RuntimeError(f"Huey holds {huey.pending_count()} jobs, expected {jobs}")
    finally:
        huey.storage.close()
    return elapsed


# ------------------------------------------------------------------ part 2: drain
@dataclass(frozen=True)
class Drain:
    seconds: float  # start of the workers to the last result
    first: float  # start of the workers to the first result


def run_workers(
    commands: list[list[str]],
    env: dict[str, str],
    done: Callable[[], int],
    jobs: int,
    *,
    poll: float,
    timeout: float,
    stop_signal: signal.Signals | None,
    log: Path,
) -> Drain:
    """Start ``commands``, poll ``done()`` until it reaches ``jobs``, then stop them.

    With ``stop_signal`` the workers are sent it once done; without, they must exit by
    themselves with status 0. Every process still alive at the end is killed.
    """
    procs: list[subprocess.Popen[bytes]] = []
    with log.open("wb") as errors:
        start = time.perf_counter()
        try:
            for command in commands:
                procs.append(
                    subprocess.Popen(
                        command, env=env, cwd=PEERS, stdout=errors, stderr=subprocess.STDOUT
                    )
                )
            first = None
            while True:
                # exit codes first: a worker seen gone has reported every job it ran
                codes = [p.poll() for p in procs]
                count, now = done(), time.perf_counter()
                if count and first is None:
                    first = now - start
                if count >= jobs:
                    break
                # a burst worker may exit early (nothing left it could start): only a failure,
                # or every worker gone with jobs not done, is an error
                if any(code not in (None, 0) for code in codes) or None not in codes:
                    raise RuntimeError(
                        f"workers exited ({codes}) with {count}/{jobs} jobs done; see {log}"
                    )
                if now - start > timeout:
                    raise TimeoutError(f"{count}/{jobs} jobs done after {timeout} s; see {log}")
                time.sleep(poll)
            drain = Drain(now - start, first if first is not None else now - start)
            for p in procs:
                if stop_signal is not None and p.poll() is None:
                    p.send_signal(stop_signal)
            for p in procs:
                code = p.wait(EXIT_GRACE)
                if stop_signal is None and code != 0:
                    raise RuntimeError(f"a worker exited with status {code}; see {log}")
            return drain
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()


def worker_kind(kind: str) -> str:
    """``cli`` or ``script``: with ``auto``, the CLI if ``conveyor worker`` has ``--burst``."""
    if kind != "auto":
        return kind
    probe = subprocess.run(
        [sys.executable, "-m", "conveyor", "worker", "--help"],
        env=child_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    return "cli" if probe.returncode == 0 and "--burst" in probe.stdout else "script"


def conveyor_worker_command(url: str, kind: str) -> tuple[list[str], str]:
    """One conveyor worker process's command and its label: the CLI in burst mode
    (``kind="cli"``), else a queue with one embedded worker thread that waits, then closes."""
    if kind == "cli":
        command = [sys.executable, "-m", "conveyor", "worker", "sqlite_app:q", "-w", "1"]
        return [*command, "--burst"], "conveyor worker sqlite_app:q -w 1 --burst"
    script = f"import sqlite_app; sqlite_app.run_conveyor_worker({url!r})"
    return [sys.executable, "-c", script], "Queue(url, workers=1).wait(); close()"


def drain_conveyor(folder: Path, jobs: int, args: argparse.Namespace) -> Drain:
    path = folder / "conveyor.db"
    url = conveyor_url(path)
    q = conveyor.Queue(url, workers=0, allow_modules=sqlite_app.ALLOW_MODULES)
    try:
        for i in range(jobs):
            q.put(noop, args=(i,))
        command, _ = conveyor_worker_command(url, args.conveyor_worker)
        with counter(path, "SELECT count(*) FROM jobs WHERE status = 'finished'") as finished:
            drain = run_workers(
                [command] * WORKERS,
                child_env(**{sqlite_app.CONVEYOR_URL_VAR: url}),
                finished,
                jobs,
                poll=args.poll,
                timeout=args.timeout,
                stop_signal=None,
                log=folder / "workers.log",
            )
        results = sorted(record.result for record in q.jobs(conveyor.Status.FINISHED))
    finally:
        q.close(wait=False)
    if results != list(range(jobs)):
        raise RuntimeError("conveyor: results missing or wrong")
    return drain


def huey_consumer() -> list[str]:
    script = Path(sys.executable).with_name("huey_consumer")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "huey.bin.huey_consumer"]


def drain_huey(folder: Path, jobs: int, args: argparse.Namespace, synchronous: str | None) -> Drain:
    path = folder / "huey.db"
    huey, task = build_huey(str(path), synchronous)
    try:
        for i in range(jobs):
            task(i)
        env = child_env(
            **{
                sqlite_app.HUEY_DB_VAR: str(path),
                sqlite_app.HUEY_SYNCHRONOUS_VAR: synchronous or "",
            }
        )
        command = [*huey_consumer(), "sqlite_app.huey", "-w", str(WORKERS), "-k", "process", "-q"]
        with counter(path, "SELECT count(*) FROM kv WHERE queue = 'huey'") as results_stored:
            drain = run_workers(
                [command],
                env,
                results_stored,
                jobs,
                poll=args.poll,
                timeout=args.timeout,
                stop_signal=signal.SIGINT,  # graceful: finish the running task, then exit
                log=folder / "consumer.log",
            )
        stored = huey.storage.result_items().values()
        results = sorted(huey.serializer.deserialize(value) for value in stored)
    finally:
        huey.storage.close()
    if results != list(range(jobs)):
        raise RuntimeError("Huey: results missing or wrong")
    return drain


# ------------------------------------------------------------------ contenders and tables
@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    run: Callable[[Path], Any]  # one timed run in a fresh folder: seconds, or a Drain


def best(contender: Contender, root: Path, repeat: int) -> Any:
    """The best of ``repeat`` runs (fewest seconds), each in a fresh folder."""
    runs = []
    for _ in range(repeat):
        folder = Path(tempfile.mkdtemp(prefix=contender.key + "-", dir=root))
        runs.append(contender.run(folder))
    return min(runs, key=lambda r: r if isinstance(r, float) else r.seconds)


def enqueue_contenders(jobs: int) -> list[Contender]:
    return [
        Contender(
            "conveyor-put",
            "conveyor q.put(noop, args=(i,))",
            partial(enqueue_conveyor, jobs=jobs, via_task=False),
        ),
        Contender(
            "conveyor-task",
            "conveyor task.enqueue(i)",
            partial(enqueue_conveyor, jobs=jobs, via_task=True),
        ),
        Contender(
            "conveyor-bulk",
            "conveyor q.put_many(noop, range(jobs))",
            partial(enqueue_conveyor, jobs=jobs, via_task=False, bulk=True),
        ),
        Contender(
            "huey",
            "Huey noop(i), default sync=FULL",
            partial(enqueue_huey, jobs=jobs, synchronous=None),
        ),
        Contender(
            "huey-normal",
            "Huey noop(i), sync=NORMAL",
            partial(enqueue_huey, jobs=jobs, synchronous="normal"),
        ),
    ]


def drain_contenders(args: argparse.Namespace, conveyor_label: str) -> list[Contender]:
    return [
        Contender(
            "conveyor",
            f"conveyor: {WORKERS} x {conveyor_label}",
            partial(drain_conveyor, jobs=args.jobs, args=args),
        ),
        Contender(
            "huey",
            f"huey_consumer -w {WORKERS} -k process, sync=FULL",
            partial(drain_huey, jobs=args.jobs, args=args, synchronous=None),
        ),
        Contender(
            "huey-normal",
            f"huey_consumer -w {WORKERS} -k process, sync=NORMAL",
            partial(drain_huey, jobs=args.jobs, args=args, synchronous="normal"),
        ),
    ]


TARGET = 2.0
RATIOS = [
    ("enqueue: conveyor q.put / Huey", "enqueue", "conveyor-put", "huey"),
    ("enqueue: conveyor task.enqueue / Huey", "enqueue", "conveyor-task", "huey"),
    ("enqueue: conveyor q.put / Huey sync=NORMAL", "enqueue", "conveyor-put", "huey-normal"),
    ("end-to-end: conveyor / Huey", "drain", "conveyor", "huey"),
    ("end-to-end: conveyor / Huey sync=NORMAL", "drain", "conveyor", "huey-normal"),
]


def print_enqueue(rows: list[tuple[Contender, float]], jobs: int, repeat: int) -> None:
    print(
        f"\nPart 1: enqueue {jobs} no-op jobs into an empty queue, one call per job "
        f"(q.put_many: one call), best of {repeat}"
    )
    print(f"{'contender':<56} {'jobs':>6} {'best s':>8} {'jobs/s':>9}")
    for contender, seconds in rows:
        print(f"{contender.label:<56} {jobs:>6} {seconds:>8.3f} {jobs / seconds:>9,.0f}")


def print_drain(rows: list[tuple[Contender, Drain]], jobs: int, repeat: int) -> None:
    print(
        f"\nPart 2: end-to-end, {jobs} jobs enqueued, {WORKERS} worker processes drain them, "
        f"best of {repeat}"
    )
    print(f"{'contender':<56} {'jobs':>6} {'best s':>8} {'jobs/s':>9} {'first s':>8}")
    for contender, drain in rows:
        print(
            f"{contender.label:<56} {jobs:>6} {drain.seconds:>8.3f} "
            f"{jobs / drain.seconds:>9,.0f} {drain.first:>8.3f}"
        )


def print_ratios(rates: dict[tuple[str, str], float]) -> None:
    print(f"\n{'ratio (jobs/s over jobs/s)':<56} {'value':>6} {'target':>8} {'verdict':>9}")
    for label, part, numerator, denominator in RATIOS:
        value = rates[part, numerator] / rates[part, denominator]
        verdict = "PASS" if value >= TARGET else "MISS"
        print(f"{label:<56} {value:>6.2f} {'>= ' + format(TARGET, '.1f'):>8} {verdict:>9}")


# ------------------------------------------------------------------ main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--jobs", type=int, default=5_000, help="jobs per run")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best counts")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temporary folder")
    parser.add_argument("--poll", type=float, default=0.005, help="seconds between result counts")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per drain")
    parser.add_argument(
        "--conveyor-worker",
        choices=("auto", "cli", "script"),
        default="auto",
        help="auto: the `conveyor worker --burst` CLI if it exists, else the embedded script",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-sqlite-", dir=args.dir) as tmp:
        root = Path(tmp)
        args.conveyor_worker = worker_kind(args.conveyor_worker)
        _, conveyor_label = conveyor_worker_command("", args.conveyor_worker)
        print(
            f"conveyor {conveyor.__version__}, huey {huey_package.__version__}, "
            f"SQLite {sqlite3.sqlite_version}, Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs, files in {root}"
        )
        rates: dict[tuple[str, str], float] = {}
        enqueued = []
        for contender in enqueue_contenders(args.jobs):
            seconds = best(contender, root, args.repeat)
            enqueued.append((contender, seconds))
            rates["enqueue", contender.key] = args.jobs / seconds
        print_enqueue(enqueued, args.jobs, args.repeat)
        print("(Huey has no bulk enqueue on SQLite: q.put_many is shown, not compared)")
        drained = []
        for contender in drain_contenders(args, conveyor_label):
            drain = best(contender, root, args.repeat)
            drained.append((contender, drain))
            rates["drain", contender.key] = args.jobs / drain.seconds
        print_drain(drained, args.jobs, args.repeat)
        print("(first s: from starting the workers to the first result, start-up included)")
        print_ratios(rates)


if __name__ == "__main__":
    main()
