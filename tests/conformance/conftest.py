"""Fixtures of the conformance suite: every test runs once per variant.

A variant is a backend URL plus where the jobs run:

- ``memory``, ``sqlite``, ``redis``, ``redis-cluster`` (a 3-master Redis Cluster, emptied
  before each test): the test's queue starts its embedded worker threads as soon as it
  is built (a queue starts them lazily otherwise), so jobs run in the test process and report
  to the test's :class:`~tests.conformance.jobs.Board` directly;
- ``sqlite-process``, ``redis-process``: the test holds a producer queue
  ``Queue(url, workers=0)`` and the jobs run in ``python -m conveyor worker APP --workers N
  --mode M`` processes, one per queue the test builds with workers (``N`` is the
  ``workers=`` it asked for). ``APP`` is a module written for the test, building the same
  queue (URL, name, mode, settings) with
  ``workers=0``; ``CONVEYOR_*`` variables reach the workers too. Their jobs reach the board
  through a proxy (:func:`tests.conformance.jobs.serve_boards`). The processes start with
  the queue, as embedded workers would, and get SIGTERM at teardown (SIGKILL if they do not
  exit in ``STOP_TIMEOUT`` seconds).

What cannot cross processes is marked on the test and skipped on ``sqlite-process`` only:
``needs_local_clock`` (the test moves a ManualClock; worker processes keep real time, so a
``clock=`` handed to ``queue_factory`` there reaches the producer only) and
``needs_local_events`` (the test observes ``q.on(...)`` events of job runs, which fire in the
process that made the change). A test that fails there because of a conveyor bug is marked
``xfail_with_worker_processes(reason="BUG: ...")``: a strict xfail on ``sqlite-process`` only.
Add a variant by adding it to ``VARIANTS``.

``redis-cluster`` runs the modules of ``CLUSTER_MODULES`` only (the others are deselected, not
skipped): a cluster changes where a queue's keys live, not its rules, and the whole suite on
it cost a minute of every run; ``tests/backends/test_redis_cluster.py`` covers the rest.
"""

from __future__ import annotations

import ast
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import conveyor
from tests.conformance import jobs
from tests.conformance.jobs import Board

ROOT = Path(__file__).resolve().parents[2]
#: the module of the conformance jobs, which the durable queues built here allow
JOBS_MODULE = jobs.__name__
#: seconds a worker process gets to exit after SIGTERM before it is killed
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Variant:
    id: str
    url: str  # "{tmp}" is replaced by a fresh absolute folder per test (four slashes)
    worker_processes: bool = False  # jobs run in `conveyor worker` processes


VARIANTS = [
    Variant("memory", "memory://"),
    Variant("sqlite", "sqlite:///{tmp}/queue.db"),
    Variant("sqlite-process", "sqlite:///{tmp}/queue.db", worker_processes=True),
    Variant("redis", "{redis}"),
    Variant("redis-process", "{redis}", worker_processes=True),
    Variant("redis-cluster", "{cluster}"),
]

#: the databases of the test server that the redis variants use in turn, each emptied before
#: a test (2 and 4 are other tests'): a queue closed without waiting may keep a worker thread
#: for a moment, which must not claim the next test's jobs of a queue of the same name
REDIS_DBS = itertools.cycle([1, *range(5, 16)])

#: the modules the redis-cluster variant runs (every kind of rule, timers, results, bulk)
CLUSTER_MODULES = {
    "test_priority", "test_dependencies", "test_lanes", "test_exclusive", "test_incompatible",
    "test_max_concurrency", "test_unique", "test_results", "test_real_clock", "test_bulk",
    "test_progress",
}  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the redis-cluster runs of modules outside CLUSTER_MODULES."""
    keep, drop = [], []
    for item in items:
        cluster = "[redis-cluster" in item.nodeid
        module = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
        (drop if cluster and module not in CLUSTER_MODULES else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


#: markers of what a test needs of the test process -> why it cannot run with worker processes
LOCAL_ONLY = {
    "needs_local_clock": "the test moves a ManualClock, which lives in the test process; "
    "worker processes keep real time",
    "needs_local_events": "the test observes q.on(...) events of job runs, which fire in the "
    "worker process that ran the job, not in the test process",
}


@pytest.fixture(params=VARIANTS, ids=[v.id for v in VARIANTS])
def variant(request: pytest.FixtureRequest) -> Variant:
    """The variant. On one with worker processes, it skips a test marked ``needs_local_*``
    and expects a test marked ``xfail_with_worker_processes`` to fail (strict xfail)."""
    current: Variant = request.param
    if current.worker_processes:
        for name, why in LOCAL_ONLY.items():
            marker = request.node.get_closest_marker(name)
            if marker is not None:
                reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else why)
                pytest.skip(f"{current.id}: {reason}")
        marker = request.node.get_closest_marker("xfail_with_worker_processes")
        if marker is not None:
            reason = marker.kwargs.get("reason") or marker.args[0]
            request.node.add_marker(
                pytest.mark.xfail(strict=True, reason=f"{current.id}: {reason}")
            )
    return current


@pytest.fixture
def backend_url(
    variant: Variant, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> str:
    """A backend URL; a file-backed one gets a fresh folder per test, a Redis one an empty
    database of the test server."""
    url = variant.url
    if "{tmp}" in url:
        url = url.replace("{tmp}", str(tmp_path_factory.mktemp("db")))
    if "{redis}" in url:
        import redis

        url = url.replace("{redis}", f"{request.getfixturevalue('redis_url')}/{next(REDIS_DBS)}")
        with redis.Redis.from_url(url) as client:
            client.flushdb()
    if "{cluster}" in url:
        import redis

        url = request.getfixturevalue("redis_cluster_url")
        with redis.RedisCluster.from_url(url.replace("redis+cluster:", "redis:", 1)) as client:
            client.flushdb(target_nodes=redis.RedisCluster.PRIMARIES)
    return url


@pytest.fixture
def queue_factory(
    backend_url: str,
    variant: Variant,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., conveyor.Queue]]:
    """Build ``conveyor.Queue(backend_url, **kwargs)``; close each one without waiting.

    With worker processes, build a producer queue instead and start a ``conveyor worker``
    process for its ``workers`` slots (none for ``workers=0``); stop them at teardown.
    """
    built: list[conveyor.Queue] = []
    processes: list[WorkerProcess] = []
    request.node.stash[WORKER_PROCESSES] = processes

    def make(**kwargs: Any) -> conveyor.Queue:
        if not backend_url.startswith("memory://"):
            # a durable queue's workers run only registered tasks and allowed modules' functions
            kwargs.setdefault("allow_modules", [JOBS_MODULE])
        if not variant.worker_processes:
            queue = conveyor.Queue(backend_url, **kwargs)
            built.append(queue)
            queue.embedded.start()  # its workers run from the start, as worker processes do
            return queue
        slots = kwargs.pop("workers", None)
        queue = conveyor.Queue(backend_url, workers=0, **kwargs)  # creates the schema
        built.append(queue)
        if slots != 0:
            folder = tmp_path_factory.mktemp("workers")
            processes.append(WorkerProcess(queue, slots or os.cpu_count() or 1, kwargs, folder))
        return queue

    try:
        yield make
    finally:
        try:
            stop_worker_processes(processes)
        finally:
            for queue in built:
                queue.close(wait=False)


# ------------------------------------------------------------------ worker processes
APP = '''\
"""The app of one conformance test's `conveyor worker` process (written by conftest.py)."""

import conveyor

q = conveyor.Queue({url!r}, name={name!r}, workers=0, mode={mode!r}, **{settings!r})
'''


class WorkerProcess:
    """``python -m conveyor worker APP:q --workers N --mode M`` for one queue of a test.

    Args:
        producer: the test's queue (``workers=0``) on the same URL.
        slots: ``--workers``.
        kwargs: what the test passed to ``queue_factory`` besides ``workers``: ``mode`` and
            ``name`` and the settings go into the app module; a ``clock`` stays with the
            producer (worker processes keep real time).
        folder: where the app module and the process's log (stdout and stderr) go; the
            process runs there.
    """

    def __init__(
        self,
        producer: conveyor.Queue,
        slots: int,
        kwargs: dict[str, Any],
        folder: Path,
    ) -> None:
        self.producer = producer
        options = dict(kwargs)
        options.pop("clock", None)
        if "context" in options:
            raise TypeError("a context function cannot be handed to a worker process")
        mode = options.pop("mode", "thread")
        name = options.pop("name", "default")
        try:
            literal = ast.literal_eval(repr(options)) == options
        except (ValueError, SyntaxError):
            literal = False
        if not literal:
            raise TypeError(f"settings must be Python literals to reach a worker: {options!r}")
        module = "conformance_app"
        (folder / f"{module}.py").write_text(
            APP.format(url=producer.url, name=name, mode=mode, settings=options), encoding="utf-8"
        )
        address, authkey = jobs.serve_boards()
        path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(path),
            jobs.ADDRESS_VARIABLE: address,
            jobs.AUTHKEY_VARIABLE: authkey.hex(),
        }
        self.command = [
            sys.executable, "-m", "conveyor", "worker", f"{module}:q",
            "--workers", str(slots), "--mode", mode,
        ]  # fmt: skip
        self.log = folder / "worker.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def registered(self) -> bool:
        """Whether the process has registered as a worker of the queue."""
        try:
            workers = self.producer.backend.workers()
        except Exception:  # the test closed its queue: ask the file through another one
            with conveyor.Queue(self.producer.url, workers=0) as queue:
                workers = queue.backend.workers()
        return any(w.pid == self.process.pid for w in workers)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def describe(self) -> str:
        return f"pid {self.process.pid}: {' '.join(self.command[1:])}"


WORKER_PROCESSES = pytest.StashKey[list[WorkerProcess]]()


def stop_worker_processes(processes: list[WorkerProcess]) -> None:
    """SIGTERM every process, wait up to ``STOP_TIMEOUT`` (then SIGKILL); fail if one exited
    before it was told to, did not exit in time, or did not exit cleanly.

    A process that had not registered as a worker yet may still be importing: SIGTERM ends it
    with the default handler (-SIGTERM), which is fine. One that registered has its handler
    in place and must stop gracefully, exiting with 0.
    """
    died = {id(p): p.process.returncode for p in processes if p.process.poll() is not None}
    ready = {id(p) for p in processes if p.registered()}
    for p in processes:
        if p.process.returncode is None:
            p.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    killed = set()
    for p in processes:
        try:
            p.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.process.kill()
            p.process.wait()
            killed.add(id(p))
    problems = []
    for p in processes:
        code = p.process.returncode
        if id(p) in died:
            problem = f"exited with code {died[id(p)]} before the test ended"
        elif id(p) in killed:
            problem = f"did not exit within {STOP_TIMEOUT} s of SIGTERM; killed"
        elif code != 0 and not (code == -signal.SIGTERM and id(p) not in ready):
            problem = f"exited with code {code} on SIGTERM"
        else:
            continue
        problems.append(f"worker {p.describe()} {problem} (its log is below)")
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Show what the worker processes logged when a test fails (in any phase)."""
    report = yield
    if report.failed:
        for p in item.stash.get(WORKER_PROCESSES, []):
            report.sections.append((f"worker log ({p.describe()})", p.output()))
    return report


@pytest.fixture
def board(queue_factory: Callable[..., conveyor.Queue]) -> Iterator[Board]:
    """Gates, barriers and a start/end log shared with the jobs; all released at teardown.

    It depends on ``queue_factory`` so that it is torn down first: blocked jobs are released
    before their queues are closed (and their worker processes stopped).
    """
    b = Board()
    yield b
    b.release()


class EventLog:
    """Events of ``q.on(...)`` as ``(event, job id, status, attempts)``, collected under a lock."""

    NAMES = ("queued", "started", "retrying", "finished", "failed", "cancelled")

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.entries: list[tuple[str, str, str, int]] = []

    def attach(self, queue: conveyor.Queue, *names: str) -> EventLog:
        for name in names or self.NAMES:
            queue.on(name, lambda record, name=name: self._add(name, record))
        return self

    def _add(self, name: str, record: conveyor.JobRecord) -> None:
        with self._cond:
            self.entries.append((name, record.id, str(record.status), record.attempts))
            self._cond.notify_all()

    def of(self, job_id: str) -> list[tuple[str, str, int]]:
        """``(event, status, attempts)`` of one job, in order."""
        with self._cond:
            return [(e, s, a) for e, i, s, a in self.entries if i == job_id]

    def count(self, name: str, job_id: str | None = None) -> int:
        with self._cond:
            return sum(1 for e, i, _, _ in self.entries if e == name and job_id in (None, i))

    def wait_count(
        self, name: str, n: int, job_id: str | None = None, timeout: float = 5.0
    ) -> None:
        """Block until ``name`` happened ``n`` times (for ``job_id`` if given)."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: (
                    sum(1 for e, i, _, _ in self.entries if e == name and job_id in (None, i)) >= n
                ),
                timeout,
            )
        assert ok, f"{n} {name!r} events did not happen within {timeout} s: {self.entries}"


@pytest.fixture
def events() -> EventLog:
    return EventLog()
