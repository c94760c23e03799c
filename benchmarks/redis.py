"""Redis benchmark: conveyor against Celery, RQ, Dramatiq, Huey, arq, SAQ, taskiq, BullMQ, streaq.

One run, one local Redis server started here (``redis-server`` from PATH on a free port, no
persistence: ``--save "" --appendonly no``; ``--url`` uses an existing server instead, and
FLUSHDB's its db before every measurement). Each library runs in its best documented
configuration for 2 cores; its app, worker command and the way it enqueues and waits are in
``benchmarks/redis_peers/<library>_app.py`` (the label of each is printed). conveyor runs on its
default settings: a ``Queue(url)`` producer and 2 ``conveyor worker`` processes.

(a) throughput: N no-op jobs enqueued one by one (the default way), timed; then again with the
library's bulk API where it has one, timed; then 2 worker processes drain the queue. The
end-to-end rate is counted from the first finished job to the last (polled every --poll s), so
interpreter start-up does not count; "incl. start" adds it.

(b) latency: 2 worker processes started and idle (warmed up by 10 round trips), then
--round-trips sequential round trips enqueue -> result; p50 and p99. Libraries that can be
notified of a result are (Huey's ``notify_result``, Celery's pub/sub, SAQ's ``apply``, ...);
those that poll are tuned to poll every millisecond.

The throughput section also prints the CPU that the workers and the server spent per job while
draining (from the first job done to the last). The latency section also prints two things
that explain the figures: the CPU that the run's processes (this one, the workers, the
server) spent per round trip, and the commands per round trip that the server counted. CPU is
read from ``/proc/<pid>/task/*/schedstat`` (time stolen by a hypervisor is not counted, so it
holds better than wall time on a noisy machine). The latency section's last line, ``floor``,
is no queue but redis-py alone (``redis_peers/floor_app.py``: a push, a worker's blocking pop, a
push back, a blocking pop): what a round trip between two processes through Redis costs at least.

Every configuration runs --repeat times: median and spread (min-max) are printed, then the
ratios of conveyor to the best peer, then a markdown table. A library that fails prints its
error and the run goes on; worker processes are killed at the end of each section.

    python benchmarks/redis.py [--jobs 5000] [--round-trips 300] [--repeat 3] [--only huey,rq]
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = HERE / "redis_peers"
# this file is benchmarks/redis.py: with benchmarks/ on sys.path, `import redis` would find it
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(PEERS))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from importlib.metadata import PackageNotFoundError, version  # noqa: E402
from typing import Any  # noqa: E402

import redis  # noqa: E402
from bench_common import SECTION_VAR, URL_VAR, Peer  # noqa: E402

LIBRARIES = [
    "conveyor",
    "huey",
    "celery",
    "rq",
    "dramatiq",
    "arq",
    "saq",
    "taskiq",
    "bullmq",
    "streaq",
    "floor",
]
WARM_UP = 10  # round trips before the timed ones
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL of a worker process group
TARGET = 2.0


# ------------------------------------------------------------------ Redis server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    """The URL of a Redis to use: ``url`` if given, else a server started here for the run."""
    if url:
        yield url
        return
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no", "--loglevel", "warning"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: {command}") from None
                time.sleep(0.01)
        client.close()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def flush(url: str) -> None:
    with contextlib.closing(redis.Redis.from_url(url)) as client:
        client.flushdb()


# ------------------------------------------------------------------ worker processes
@contextlib.contextmanager
def worker_processes(
    peer: Peer, section: str, log: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start the peer's worker commands (each in its own process group); at the end, SIGTERM
    every group, then SIGKILL what is left after STOP_GRACE seconds."""
    env = {**os.environ, "PYTHONPATH": str(PEERS), SECTION_VAR: section}
    procs: list[subprocess.Popen[bytes]] = []
    with log.open("ab") as out:
        try:
            for command in peer.workers():
                procs.append(
                    subprocess.Popen(
                        command,
                        cwd=PEERS,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            yield procs
        finally:
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            for p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(max(0.0, deadline - time.monotonic()))
            for p in procs:  # the group too: pool children outlive a parent killed first
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def check_alive(procs: list[subprocess.Popen[bytes]], log: Path) -> None:
    codes = [p.poll() for p in procs]
    if any(code is not None for code in codes):
        raise RuntimeError(f"a worker process exited ({codes}):\n{tail(log)}")


def tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    | " + line for line in text[-lines:])


# ------------------------------------------------------------------ measurements
@dataclass
class Figures:
    """Every run's figures of one library, by metric, and what failed."""

    values: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    #: commands per round trip of the last latency run, by command
    breakdown: dict[str, float] = field(default_factory=dict)
    #: CPU microseconds per round trip of the last latency run, by part
    cpu: dict[str, float] = field(default_factory=dict)
    #: CPU microseconds per job of the last drain, by part
    cpu_drain: dict[str, float] = field(default_factory=dict)

    def add(self, metric: str, value: float) -> None:
        self.values.setdefault(metric, []).append(value)

    def median(self, metric: str) -> float | None:
        runs = self.values.get(metric)
        return statistics.median(runs) if runs else None


def throughput_run(
    cls: type[Peer], url: str, args: argparse.Namespace, log: Path, fig: Figures
) -> None:
    """One run of (a): enqueue one by one, enqueue in bulk, drain with 2 worker processes."""
    n = args.jobs
    flush(url)
    peer = cls(url)
    try:
        fig.add("one", n / peer.enqueue(n, bulk=False))
        if cls.bulk_label is not None:
            peer.close()
            flush(url)
            peer = cls(url)
            fig.add("bulk", n / peer.enqueue(n, bulk=True))
        with worker_processes(peer, "throughput", log) as procs:
            start = time.perf_counter()
            first: tuple[float, int] | None = None
            pids: dict[str, list[int]] = {}
            cpu_first: dict[str, int] = {}
            while True:
                count, now = peer.done(), time.perf_counter()
                if first is None and count > 0:
                    first = (now, count)
                    parts = run_pids(peer.redis, procs)
                    pids = {part: parts[part] for part in ("workers", "server")}
                    cpu_first = {part: cpu_ns(found) for part, found in pids.items()}
                if count >= n:
                    if count > first[1]:  # (first is set: count > 0)
                        jobs = (count - first[1]) * 1000
                        fig.cpu_drain = {
                            part: (cpu_ns(found) - cpu_first[part]) / jobs
                            for part, found in pids.items()
                        }
                        fig.add("cpu_job", sum(fig.cpu_drain.values()))
                    break
                if now - start > args.timeout:
                    raise TimeoutError(
                        f"{count}/{n} jobs done after {args.timeout} s:\n{tail(log)}"
                    )
                check_alive(procs, log)
                time.sleep(args.poll)
        assert first is not None
        seconds = now - first[0]
        fig.add("drain", (n - first[1]) / seconds if seconds > 0 else float("inf"))
        fig.add("drain_total", n / (now - start))
    finally:
        peer.close()


def latency_run(
    cls: type[Peer], url: str, args: argparse.Namespace, log: Path, fig: Figures
) -> None:
    """One run of (b): idle workers, then sequential round trips."""
    flush(url)
    peer = cls(url)
    try:
        with worker_processes(peer, "latency", log) as procs:
            peer.round_trips(1, timeout=args.timeout)  # waits for a worker to be up
            peer.round_trips(WARM_UP)
            check_alive(procs, log)
            peer.redis.config_resetstat()
            parts = run_pids(peer.redis, procs)
            cpu_before = {part: cpu_ns(pids) for part, pids in parts.items()}
            times = sorted(peer.round_trips(args.round_trips))
            cpu_after = {part: cpu_ns(pids) for part, pids in parts.items()}
            calls = command_calls(peer.redis)
            check_alive(procs, log)
        fig.cpu = {
            part: (cpu_after[part] - cpu_before[part]) / args.round_trips / 1000 for part in parts
        }
        fig.add("cpu", sum(fig.cpu.values()))
        fig.add("p50", percentile(times, 50) * 1000)
        fig.add("p99", percentile(times, 99) * 1000)
        fig.add("commands", sum(calls.values()) / args.round_trips)
        fig.breakdown = {name: n / args.round_trips for name, n in calls.items()}
    finally:
        peer.close()


def run_pids(client: redis.Redis, procs: list[subprocess.Popen[bytes]]) -> dict[str, list[int]]:
    """The processes of a run: this one (``producer``), every process of the workers' groups
    (``workers``), and the server (``server``, when it runs on this machine)."""
    groups = {p.pid for p in procs}
    workers = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
                if int(fields[2]) in groups:  # the process group id
                    workers.append(int(entry.name))
    server = client.info("server").get("process_id")
    local = server and Path(f"/proc/{server}").exists()
    return {"producer": [os.getpid()], "workers": workers, "server": [int(server)] if local else []}


def cpu_ns(pids: list[int]) -> int:
    """Nanoseconds of CPU the threads of ``pids`` have run (``/proc/<pid>/task/*/schedstat``:
    exact, and time stolen by the hypervisor is not counted); 0 where /proc has none."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError, ValueError):
                    total += int((task / "schedstat").read_text().split()[0])
    return total


def command_calls(client: redis.Redis) -> dict[str, int]:
    """Calls of each command the server counted since CONFIG RESETSTAT (by every client:
    the workers' blocking reads and subscriptions too), without the INFO that reads them."""
    stats: dict[str, dict[str, Any]] = client.info("commandstats")  # type: ignore[assignment]
    calls = {name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()}
    calls["info"] = calls.get("info", 1) - 1
    return {name: n for name, n in sorted(calls.items()) if n}


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


def measure(name: str, url: str, args: argparse.Namespace, logs: Path) -> Figures:
    """Every run of one library; a failure is recorded and the rest goes on."""
    fig = Figures()
    try:
        cls: type[Peer] = importlib.import_module(f"{name}_app").Contender
        flush(url)
        cls(url).close()  # a library that cannot even connect is not available
    except Exception as exc:
        fig.errors["import"] = f"not available: {type(exc).__name__}: {exc}"
        print(f"  {name}: {fig.errors['import']}", flush=True)
        return fig
    fig.labels = {
        "version": package_version(cls.package),
        "one": cls.one_label,
        "bulk": cls.bulk_label or "no bulk API",
        "workers": cls.worker_label,
        "wait": cls.wait_label,
    }
    if cls.reference:
        fig.labels["reference"] = "yes"
    print(f"  {name} {fig.labels['version']}: workers: {cls.worker_label}", flush=True)
    sections: list[tuple[str, Callable[..., None]]] = [
        ("throughput", throughput_run),
        ("latency", latency_run),
    ]
    for section, run in sections:
        if section not in args.sections or section not in cls.sections:
            continue
        for i in range(args.repeat):
            log = logs / f"{name}-{section}-{i}.log"
            try:
                run(cls, url, args, log, fig)
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                fig.errors[section] = message
                print(f"  {name} {section} run {i + 1} FAILED: {message}", flush=True)
                if args.verbose:
                    traceback.print_exc()
                break
            print(f"  {name} {section} run {i + 1}: {run_summary(fig, section)}", flush=True)
    return fig


def run_summary(fig: Figures, section: str) -> str:
    last = {metric: runs[-1] for metric, runs in fig.values.items()}
    if section == "latency":
        calls = ", ".join(f"{name} {n:.2f}" for name, n in fig.breakdown.items())
        cpu = ", ".join(f"{part} {us:,.0f}" for part, us in fig.cpu.items())
        return (
            f"p50 {last['p50']:.2f} ms, p99 {last['p99']:.2f} ms, CPU {last['cpu']:,.0f} us"
            f" per round trip ({cpu}), {last['commands']:.2f} commands per round trip ({calls})"
        )
    parts = [f"enqueue {last['one']:,.0f}/s"]
    if "bulk" in last:
        parts.append(f"bulk {last['bulk']:,.0f}/s")
    parts.append(f"end-to-end {last['drain']:,.0f}/s (incl. start {last['drain_total']:,.0f}/s)")
    if "cpu_job" in last:
        split = ", ".join(f"{part} {us:,.0f}" for part, us in fig.cpu_drain.items())
        parts.append(f"CPU {last['cpu_job']:,.0f} us per job ({split})")
    return ", ".join(parts)


def package_version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


# ------------------------------------------------------------------ report
METRICS = [
    ("one", "enqueue 1-by-1 jobs/s", "{:,.0f}"),
    ("bulk", "enqueue bulk jobs/s", "{:,.0f}"),
    ("drain", "end-to-end jobs/s", "{:,.0f}"),
    ("cpu_job", "CPU us/job", "{:,.0f}"),
    ("p50", "p50 ms", "{:.2f}"),
    ("p99", "p99 ms", "{:.2f}"),
    ("cpu", "CPU us/round trip", "{:,.0f}"),
    ("commands", "commands/round trip", "{:.1f}"),
]


def cell(fig: Figures, metric: str, fmt: str) -> str:
    runs = fig.values.get(metric)
    if not runs:
        return "-"
    median = fmt.format(statistics.median(runs))
    if len(runs) == 1:
        return median
    return f"{median} ({fmt.format(min(runs))}-{fmt.format(max(runs))})"


def status(fig: Figures) -> str:
    if "import" in fig.errors:
        return fig.errors["import"]
    return "; ".join(  # the first line: the worker log's tail was printed when it failed
        f"{section} failed: {error.splitlines()[0]}" for section, error in fig.errors.items()
    )


def ratios(results: dict[str, Figures]) -> list[tuple[str, float | None, str]]:
    """(label, value, against whom) of conveyor's ratios to the best peer."""
    mine = results.get("conveyor", Figures())
    peers = {
        name: fig
        for name, fig in results.items()
        if name != "conveyor" and not fig.labels.get("reference")
    }
    rows: list[tuple[str, float | None, str]] = []

    def best(metric: str, key: Callable[[float], float]) -> tuple[str, float] | None:
        found = [(name, m) for name, fig in peers.items() if (m := fig.median(metric)) is not None]
        return max(found, key=lambda item: key(item[1])) if found else None

    for metric, label in [
        ("drain", "end-to-end"),
        ("one", "enqueue 1-by-1"),
        ("bulk", "enqueue bulk"),
    ]:
        top = best(metric, lambda v: v)
        ours = mine.median(metric)
        value = ours / top[1] if ours is not None and top else None
        rows.append((f"{label}: conveyor / fastest peer", value, top[0] if top else "-"))
    top = best("p50", lambda v: -v)
    ours = mine.median("p50")
    value = top[1] / ours if ours and top else None
    rows.append(("p50 latency: best peer / conveyor", value, top[0] if top else "-"))
    return rows


def report(results: dict[str, Figures], args: argparse.Namespace) -> None:
    print(
        f"\n{args.jobs} jobs, {args.round_trips} round trips, {args.repeat} runs each: "
        "median (min-max)"
    )
    for name, fig in results.items():
        print(f"\n{name} {fig.labels.get('version', '')}")
        for key in ("workers", "one", "bulk", "wait"):
            if key in fig.labels:
                print(f"  {key:<8} {fig.labels[key]}")
        for metric, label, fmt in METRICS:
            if fig.values.get(metric):
                print(f"  {label:<22} {cell(fig, metric, fmt)}")
        if fig.errors:
            print(f"  {status(fig)}")
    print(f"\n{'ratio':<44} {'value':>6} {'target':>7}  best peer")
    for label, value, whom in ratios(results):
        shown = "-" if value is None else f"{value:.2f}"
        verdict = (
            ""
            if value is None or label.startswith("enqueue")
            else (" PASS" if value >= TARGET else " MISS")
        )
        target = "" if label.startswith("enqueue") else f">= {TARGET:.0f}"
        print(f"{label:<44} {shown:>6} {target:>7}  {whom}{verdict}")
    print("\n" + markdown(results, args))


def markdown(results: dict[str, Figures], args: argparse.Namespace) -> str:
    head = "| library | " + " | ".join(label for _, label, _ in METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 1)]
    for name, fig in results.items():
        title = f"{name} {fig.labels.get('version', '')}".strip()
        if "import" in fig.errors:
            lines.append(f"| {title} | " + " | ".join(["n/a"] * len(METRICS)) + " |")
            continue
        cells = [cell(fig, metric, fmt) for metric, _, fmt in METRICS]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, fig in results.items():
        if fig.errors:
            lines.append(f"- {name}: {status(fig)}")
    for label, value, whom in ratios(results):
        shown = "n/a" if value is None else f"{value:.2f}"
        lines.append(f"- {label}: **{shown}** (best peer: {whom})")
    lines.append(
        f"\nMedian (min-max) of {args.repeat} runs; {args.jobs} no-op jobs drained by 2 worker "
        f"processes; {args.round_trips} sequential round trips with idle workers. "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, Redis {args.redis_version}."
    )
    return "\n".join(lines)


# ------------------------------------------------------------------ main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--jobs", type=int, default=5_000, help="jobs per throughput run")
    parser.add_argument("--round-trips", type=int, default=300, help="round trips per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each configuration")
    parser.add_argument(
        "--only", default="", help=f"comma-separated libraries (of {','.join(LIBRARIES)})"
    )
    parser.add_argument(
        "--sections", default="throughput,latency", help="throughput, latency or both"
    )
    parser.add_argument("--url", default=None, help="use this Redis (its db is flushed)")
    parser.add_argument("--poll", type=float, default=0.005, help="seconds between counts")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per wait")
    parser.add_argument("--verbose", action="store_true", help="print tracebacks of failures")
    args = parser.parse_args()
    args.only = [name.strip() for name in args.only.split(",") if name.strip()] or LIBRARIES
    unknown = sorted(set(args.only) - set(LIBRARIES))
    if unknown:
        parser.error(f"unknown libraries: {', '.join(unknown)}")
    args.sections = {s.strip() for s in args.sections.split(",")}
    if args.sections - {"throughput", "latency"}:
        parser.error("--sections takes throughput, latency or both")
    return args


def main() -> None:
    args = parse_args()
    with redis_server(args.url) as url, tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        os.environ[URL_VAR] = url  # the apps imported here read it, as the workers do
        with contextlib.closing(redis.Redis.from_url(url)) as client:
            args.redis_version = client.info("server")["redis_version"]
        print(
            f"Redis {args.redis_version} at {url}, Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs; worker logs in {tmp}",
            flush=True,
        )
        results = {name: measure(name, url, args, Path(tmp)) for name in args.only}
        flush(url)
    report(results, args)


if __name__ == "__main__":
    main()
