"""Where one Redis round trip's time goes: sequential ``q.put(noop, args=(i,)).result()`` with
two idle ``conveyor worker`` processes (as ``benchmarks/redis.py --sections latency``), every hop
stamped.

The stamps are ``time.perf_counter_ns()`` (CLOCK_MONOTONIC on Linux: one clock for every
process of the machine) taken by wrappers that this script installs, in its own process and in
the workers (through a ``sitecustomize`` module on their PYTHONPATH), around the backend's
calls: ``Queue.put``, ``RedisBackend.submit``, the worker's wake (``Markers.block`` returns:
the job handed over to its idle slot), its ``claim`` (which takes the handed job, no script)
and ``report``, the job itself, the note of the job's end reaching the waiting producer (its
``Markers.block`` returns) and ``Queue.result`` returning.
Nothing of conveyor is changed: the wrappers exist only in the processes started here.

Printed: each hop's median and 10th/90th percentiles over the round trips, then the server's
own time per call (SLOWLOG with every call logged), so a call's wall time can be split into
the server's work and the rest (the socket, waking the process, Python).

    python benchmarks/redis_hops.py [--round-trips 300]
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# with benchmarks/ on sys.path, `import redis` would find benchmarks/redis.py
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse  # noqa: E402
import collections  # noqa: E402
import contextlib  # noqa: E402
import importlib.util  # noqa: E402
import itertools  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from types import ModuleType  # noqa: E402

import redis  # noqa: E402

import conveyor  # noqa: E402

TRACE_VAR = "CONVEYOR_HOPS_TRACE"
URL_VAR = "CONVEYOR_HOPS_URL"
WARM_UP = 20

#: the wrappers, installed in every process of the run (a module of their own, so that the
#: workers' ``sitecustomize`` and this script install the same ones)
HOOKS = """
import functools, os, threading, time

_fd = None

def stamp(tag):
    if _fd is not None:
        line = f"{time.perf_counter_ns()} {os.getpid()} {threading.get_ident()} {tag}\\n"
        os.write(_fd, line.encode())

def _wrap(cls, attr, tag):
    inner = getattr(cls, attr)

    @functools.wraps(inner)
    def wrapper(*args, **kwargs):
        stamp(tag + ">")
        try:
            return inner(*args, **kwargs)
        finally:
            stamp(tag + "<")

    setattr(cls, attr, wrapper)

def install(path):
    global _fd
    if _fd is not None or not path:
        return
    _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    from conveyor.backends.redis import backend, markers
    from conveyor import queue
    _wrap(queue.Queue, "put", "put")
    _wrap(queue.Queue, "result", "result")
    _wrap(backend.RedisBackend, "submit", "submit")
    _wrap(backend.RedisBackend, "claim", "claim")
    _wrap(backend.RedisBackend, "report", "report")
    _wrap(markers.Markers, "block", "block")
"""

SITECUSTOMIZE = """
import os
import conveyor_hops_hooks
conveyor_hops_hooks.install(os.environ.get("CONVEYOR_HOPS_TRACE"))
"""

APP = """
import os
import conveyor
import conveyor_hops_hooks

def noop(x):
    conveyor_hops_hooks.stamp("job")
    return x

_q = None

def __getattr__(name):
    global _q
    if name != "q":
        raise AttributeError(name)
    if _q is None:
        _q = conveyor.Queue(os.environ["CONVEYOR_HOPS_URL"], allow_modules=[__name__])
    return _q
"""

#: the points of a round trip, in order: (name, process, stamp, after): the first stamp of its
#: kind, in the producer ("p") or a worker ("w"), at or after the point ``after``
POINTS = [
    ("put", "p", "put>", None),
    ("submit sent", "p", "submit>", "put"),
    ("submit answered", "p", "submit<", "submit sent"),
    ("worker woken", "w", "block<", "submit sent"),
    ("claim sent", "w", "claim>", "worker woken"),
    ("claimed", "w", "claim<", "claim sent"),
    ("job runs", "w", "job", "claimed"),
    ("report sent", "w", "report>", "job runs"),
    ("reported", "w", "report<", "report sent"),
    ("end noted here", "p", "block<", "report sent"),
    ("result returns", "p", "result<", "report sent"),
]

#: the hops printed: (label, from point, to point)
HOPS = [
    ("put: before submit", "put", "submit sent"),
    ("submit call (FCALL submit)", "submit sent", "submit answered"),
    ("submit sent -> worker woken", "submit sent", "worker woken"),
    ("worker woken -> claim sent", "worker woken", "claim sent"),
    ("claim (takes the handed job)", "claim sent", "claimed"),
    ("claimed -> job runs", "claimed", "job runs"),
    ("job -> report sent", "job runs", "report sent"),
    ("report call (FCALL claim)", "report sent", "reported"),
    ("report sent -> waiter noted", "report sent", "end noted here"),
    ("noted -> result returns", "end noted here", "result returns"),
    ("round trip", "put", "result returns"),
]


def bench_module() -> ModuleType:
    """benchmarks/redis.py, loaded by its path (as ``import redis`` it would be redis-py)."""
    spec = importlib.util.spec_from_file_location("conveyor_bench_redis", HERE / "redis.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


Stamp = tuple[int, bool, str]  # (ns, from the producer, tag)


def read_stamps(path: Path) -> list[Stamp]:
    producer = str(os.getpid())
    stamps = []
    for line in path.read_text().splitlines():
        ns, pid, _thread, tag = line.split()
        stamps.append((int(ns), pid == producer, tag))
    stamps.sort()
    return stamps


def hops(stamps: list[Stamp]) -> dict[str, list[float]]:
    """Milliseconds of each hop, by label, over the round trips (a hop missing from a round
    trip, e.g. a result found without waiting, is left out of that one)."""
    starts = [i for i, (_, mine, tag) in enumerate(stamps) if mine and tag == "put>"]
    found: dict[str, list[float]] = collections.defaultdict(list)
    for a, b in itertools.pairwise(starts):
        trip = stamps[a:b]
        at: dict[str, int] = {}
        for name, where, tag, after in POINTS:
            floor = 0 if after is None else at.get(after)
            if floor is None:
                continue
            for ns, mine, t in trip:
                if t == tag and ns >= floor and mine == (where == "p"):
                    at[name] = ns
                    break
        for label, start, end in HOPS:
            if start in at and end in at:
                found[label].append((at[end] - at[start]) / 1e6)
    return found


def server_times(client: redis.Redis) -> dict[str, list[int]]:
    """Microseconds the server spent per call, by command (FCALL by function)."""
    times: dict[str, list[int]] = collections.defaultdict(list)
    for entry in client.slowlog_get(1_000_000):
        words = entry["command"].split()
        name = words[0].decode().upper()
        if name == "FCALL" and len(words) > 1:
            name += " " + words[1].decode().rsplit("_", 1)[-1]
        times[name].append(int(entry["duration"]))
    return times


def pct(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, len(ordered) * p // 100)]


def run(round_trips: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, bench_module().redis_server(None) as url:
        folder = Path(tmp)
        (folder / "conveyor_hops_hooks.py").write_text(HOOKS)
        (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
        (folder / "hops_app.py").write_text(APP)
        trace = folder / "stamps.txt"
        env = {**os.environ, "PYTHONPATH": tmp, TRACE_VAR: str(trace), URL_VAR: url}
        command = [sys.executable, "-m", "conveyor", "worker", "hops_app:q"]
        workers = [
            subprocess.Popen(
                command,
                cwd=tmp,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            for _ in range(2)
        ]
        sys.path.insert(0, tmp)
        os.environ[URL_VAR] = url
        import conveyor_hops_hooks  # type: ignore[import-not-found]
        import hops_app  # type: ignore[import-not-found]

        conveyor_hops_hooks.install(str(trace))  # before the queue: its listener's calls too

        q = conveyor.Queue(url, workers=0, allow_modules=["hops_app"])
        client = redis.Redis.from_url(url)
        try:
            q.put(hops_app.noop, args=(0,)).result(timeout=60)  # a worker is up
            for i in range(WARM_UP):
                q.put(hops_app.noop, args=(i,)).result(timeout=10)
            client.config_set("slowlog-log-slower-than", 0)
            client.config_set("slowlog-max-len", 1_000_000)
            client.slowlog_reset()
            os.truncate(trace, 0)  # the round trips before were warm-up (writes append)
            for i in range(round_trips):
                if q.put(hops_app.noop, args=(i,)).result(timeout=10) != i:
                    raise RuntimeError(f"round trip {i} returned something else")
            server = server_times(client)
        finally:
            q.close(wait=False)
            client.close()
            for w in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(w.pid, signal.SIGTERM)
            for w in workers:
                w.wait()
        found = hops(read_stamps(trace))
    print(f"{round_trips} round trips; ms: p50 (p10-p90), round trips with the hop")
    for label, _, _ in HOPS:
        values = found.get(label)
        if values:
            print(
                f"  {label:34s} {pct(values, 50):6.3f} ({pct(values, 10):.3f}-"
                f"{pct(values, 90):.3f})  {len(values)}"
            )
    scripts = sum(sum(v) for name, v in server.items() if name.startswith("FCALL"))
    print(
        "server time per call (SLOWLOG: the commands that the scripts run are listed too, and"
        " counted in their FCALL), us: p50, calls per round trip; the scripts in all:"
        f" {scripts / round_trips:.0f} us per round trip"
    )
    for name, calls in sorted(server.items(), key=lambda kv: -sum(kv[1])):
        if name.startswith(("SLOWLOG", "CONFIG")):
            continue
        print(f"  {name:34s} {pct([float(v) for v in calls], 50):6.0f}  "
              f"{len(calls) / round_trips:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=300)
    args = parser.parse_args()
    if not 1 <= args.round_trips <= 100_000:
        parser.error("--round-trips takes 1 to 100000")
    run(args.round_trips)


if __name__ == "__main__":
    main()
