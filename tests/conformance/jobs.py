"""Importable job functions for the conformance suite, and the Board they report to.

Jobs get plain arguments only (a board key and labels), so durable backends can store the
calls as JSON. What a test needs to share with its jobs (gates, barriers, a log of starts and
ends, concurrency counters) lives on a :class:`Board`, looked up by key with :func:`board`.
Times are never measured: starts and ends are numbered by one counter under the board's lock,
so "A ended before B started" is an exact comparison of two integers.

A Board always lives in the test's process. Jobs running there (embedded workers) get the
Board itself; jobs running in a ``conveyor worker`` process get a :class:`BoardProxy` that
calls the same methods over a socket: the test process serves its boards with
:func:`serve_boards` (a ``multiprocessing.managers`` server in a thread) and hands the address
and key to the worker processes in :data:`ADDRESS_VARIABLE` and :data:`AUTHKEY_VARIABLE`.
Jobs therefore only *call methods* of their board (``enter``, ``leave``, ``wait_gate``,
``wait_barrier``, ``call_count``): a method call crosses processes, an Event or a Counter
handed out by the board would not.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from multiprocessing.managers import BaseManager, BaseProxy
from typing import Any

import conveyor

#: seconds any job waits on a gate or barrier before giving up (the test then fails)
WAIT = 5.0
#: seconds between two looks of Board.wait_for at a condition that no board write announces
RECHECK = 0.01
#: environment variables telling a worker process where the test process serves its boards
ADDRESS_VARIABLE = "CONFORMANCE_BOARD_ADDRESS"  # "host:port"
AUTHKEY_VARIABLE = "CONFORMANCE_BOARD_AUTHKEY"  # hex

_boards: dict[str, Board] = {}


class Board:
    """Shared state between one test and the jobs it puts."""

    def __init__(self) -> None:
        self.key = uuid.uuid4().hex
        self._cond = threading.Condition()
        self._tick = 0
        self.log: list[tuple[str, str]] = []  # ("start" | "end", label), in order
        self.spans: dict[str, list[int | None]] = {}  # label -> [start tick, end tick]
        self.active: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self._gates: dict[str, threading.Event] = {}
        self._barriers: dict[str, threading.Barrier] = {}
        self._released = False
        _boards[self.key] = self

    # ------------------------------------------------------------ for tests
    def gate(self, name: str) -> threading.Event:
        """The event ``name`` (created closed on first use; open once the board is released)."""
        with self._cond:
            gate = self._gates.get(name)
            if gate is None:
                gate = self._gates[name] = threading.Event()
                if self._released:
                    gate.set()
            return gate

    def barrier(self, name: str, parties: int = 2) -> threading.Barrier:
        """The barrier ``name`` (created on first use, ``WAIT`` seconds timeout; broken once
        the board is released)."""
        with self._cond:
            barrier = self._barriers.get(name)
            if barrier is None:
                barrier = self._barriers[name] = threading.Barrier(parties, timeout=WAIT)
                if self._released:
                    barrier.abort()
            return barrier

    def wait_started(self, *labels: str, timeout: float = WAIT) -> None:
        """Block until every job labelled ``labels`` has started."""
        with self._cond:
            ok = self._cond.wait_for(lambda: all(lb in self.spans for lb in labels), timeout)
        assert ok, f"jobs {labels} did not all start within {timeout} s; log: {self.log}"

    def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        """Block until ``predicate()`` (called under the board's lock) holds: looked at on
        every write to the board, and every RECHECK seconds (it may read the queue, which
        changes after the job's last write)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"condition not met within {timeout} s; log: {self.log}"
                self._cond.wait(min(remaining, RECHECK))

    def starts(self) -> list[str]:
        """Labels in the order their jobs started (first attempt of each)."""
        with self._cond:
            return [label for event, label in self.log if event == "start"]

    def overlaps(self, a: str, b: str) -> bool:
        """True if the runs of ``a`` and ``b`` overlapped (both ended)."""
        with self._cond:
            (sa, ea), (sb, eb) = self.spans[a], self.spans[b]
        assert ea is not None and eb is not None, "both jobs must have ended"
        return sa < eb and sb < ea

    def ended_before_started(self, first: str, then: str) -> bool:
        with self._cond:
            end, start = self.spans[first][1], self.spans[then][0]
        assert end is not None, f"{first} has not ended"
        return end < start

    def release(self) -> None:
        """Open every gate and break every barrier, also those asked for later (teardown: no
        job stays blocked, not even one that starts after the test ended)."""
        with self._cond:
            self._released = True
            gates, barriers = list(self._gates.values()), list(self._barriers.values())
        for gate in gates:
            gate.set()
        for barrier in barriers:
            barrier.abort()
        _boards.pop(self.key, None)

    # ---------------------------------------------- for jobs (also through a proxy)
    def enter(self, label: str, groups: tuple[str, ...] = ()) -> None:
        with self._cond:
            self._tick += 1
            self.calls[label] += 1
            self.log.append(("start", label))
            self.spans[label] = [self._tick, None]
            for group in groups:
                self.active[group] += 1
                self.peak[group] = max(self.peak[group], self.active[group])
            self._cond.notify_all()

    def leave(self, label: str, groups: tuple[str, ...] = ()) -> None:
        with self._cond:
            self._tick += 1
            self.log.append(("end", label))
            self.spans[label][1] = self._tick
            for group in groups:
                self.active[group] -= 1
            self._cond.notify_all()

    def wait_gate(self, name: str, timeout: float = WAIT) -> bool:
        """Block until the test opens gate ``name``; False if ``timeout`` passed first."""
        return self.gate(name).wait(timeout)

    def wait_barrier(self, name: str) -> None:
        """Wait at barrier ``name`` (raises ``threading.BrokenBarrierError`` on timeout)."""
        self.barrier(name).wait()

    def call_count(self, label: str) -> int:
        """How many times a job labelled ``label`` has started."""
        with self._cond:
            return self.calls[label]


#: the Board methods jobs call; the only ones a BoardProxy forwards
JOB_METHODS = ("enter", "leave", "wait_gate", "wait_barrier", "call_count")


class BoardProxy(BaseProxy):
    """A Board in the test process, seen from a worker process: the job methods only.

    A blocking call (``wait_gate``, ``wait_barrier``) blocks one thread of the board server,
    one per connection, and each thread of the worker process has its own connection.
    """

    _exposed_ = JOB_METHODS

    def enter(self, label: str, groups: tuple[str, ...] = ()) -> None:
        self._callmethod("enter", (label, tuple(groups)))

    def leave(self, label: str, groups: tuple[str, ...] = ()) -> None:
        self._callmethod("leave", (label, tuple(groups)))

    def wait_gate(self, name: str, timeout: float = WAIT) -> bool:
        return bool(self._callmethod("wait_gate", (name, timeout)))

    def wait_barrier(self, name: str) -> None:
        self._callmethod("wait_barrier", (name,))

    def call_count(self, label: str) -> int:
        return int(self._callmethod("call_count", (label,)))


def _served_board(key: str) -> Board:
    """The server side of ``BoardManager.board(key)``: a board of the serving process."""
    return _boards[key]


class BoardManager(BaseManager):
    """Serves the boards of the test process (server) or reaches them (worker processes)."""


BoardManager.register("board", callable=_served_board, proxytype=BoardProxy, exposed=JOB_METHODS)

_served: tuple[str, bytes] | None = None
_serve_lock = threading.Lock()


def serve_boards() -> tuple[str, bytes]:
    """Serve this process's boards (once per process, in a daemon thread); return the
    ``host:port`` address and the authentication key for :data:`ADDRESS_VARIABLE` and
    :data:`AUTHKEY_VARIABLE`.

    The server is never stopped: ``Server.serve_forever`` ends with ``sys.exit`` and resets
    ``sys.stdout``, which a thread of a test session must not do; it dies with the process.
    """
    global _served
    with _serve_lock:
        if _served is None:
            authkey = os.urandom(32)
            server = BoardManager(address=("127.0.0.1", 0), authkey=authkey).get_server()
            threading.Thread(
                target=server.serve_forever, name="conformance-board-server", daemon=True
            ).start()
            host, port = server.address
            _served = (f"{host}:{port}", authkey)
        return _served


_manager: BoardManager | None = None
_proxies: dict[str, BoardProxy] = {}
_connect_lock = threading.Lock()


def _remote_board(key: str) -> BoardProxy:
    """A proxy for board ``key`` of the test process (the manager connects once per process;
    each thread then opens its own connection on its first call)."""
    global _manager
    with _connect_lock:
        proxy = _proxies.get(key)
        if proxy is not None:
            return proxy
        if _manager is None:
            address = os.environ.get(ADDRESS_VARIABLE)
            if not address:
                raise KeyError(
                    f"no board {key!r} in this process, and {ADDRESS_VARIABLE} does not say "
                    "where the test process serves its boards"
                )
            host, _, port = address.rpartition(":")
            manager = BoardManager(
                address=(host, int(port)), authkey=bytes.fromhex(os.environ[AUTHKEY_VARIABLE])
            )
            manager.connect()
            _manager = manager
        proxy = _proxies[key] = _manager.board(key)  # type: ignore[attr-defined]
        return proxy


def board(key: str) -> Board | BoardProxy:
    """The board ``key``: the Board itself in the test's process, else a proxy to it."""
    local = _boards.get(key)
    return local if local is not None else _remote_board(key)


def _run(
    key: str, label: str, groups: tuple[str, ...], body: Callable[[Board | BoardProxy], Any]
) -> Any:
    b = board(key)
    b.enter(label, groups)
    try:
        return body(b)
    finally:
        b.leave(label, groups)


# ---------------------------------------------------------------- job functions
def record(key: str, label: str, hold: float = 0.0, *groups: str) -> str:
    """Log start and end; sleep ``hold`` seconds in between (an overlap window)."""

    def body(_b: Board | BoardProxy) -> str:
        if hold:
            time.sleep(hold)
        return label

    return _run(key, label, groups, body)


def record_item(item: list[Any]) -> str:
    """``record`` for ``put_many`` and ``map``, which pass one argument:
    ``[key, label, hold, *groups]``."""
    return record(*item)


def blocker(key: str, label: str, gate: str) -> str:
    """Start, then wait until the test opens ``gate``."""

    def body(b: Board | BoardProxy) -> str:
        if not b.wait_gate(gate, WAIT):
            raise TimeoutError(f"gate {gate!r} was never opened")
        return label

    return _run(key, label, (), body)


def meet(key: str, label: str, barrier: str) -> str:
    """Start, then wait at ``barrier`` until its other party is running too."""

    def body(b: Board | BoardProxy) -> str:
        b.wait_barrier(barrier)
        return label

    return _run(key, label, (), body)


def fail(key: str, label: str, gate: str | None = None) -> None:
    """Start, wait for ``gate`` if given, then raise ValueError."""

    def body(b: Board | BoardProxy) -> None:
        if gate is not None and not b.wait_gate(gate, WAIT):
            raise TimeoutError(f"gate {gate!r} was never opened")
        raise ValueError(f"{label} failed on purpose")

    return _run(key, label, (), body)


def flaky(key: str, label: str, failures: int) -> str:
    """Raise ValueError on the first ``failures`` calls, then return ``label``."""

    def body(b: Board | BoardProxy) -> str:
        attempt = b.call_count(label)
        if attempt <= failures:
            raise ValueError(f"{label} attempt {attempt} failed on purpose")
        return label

    return _run(key, label, (), body)


def foo(key: str, label: str, gate: str | None = None) -> str:
    """PySiQ's ``foo``: one task name for several jobs; waits for ``gate`` if given."""

    def body(b: Board | BoardProxy) -> str:
        if gate is not None and not b.wait_gate(gate, WAIT):
            raise TimeoutError(f"gate {gate!r} was never opened")
        time.sleep(0.01)
        return label

    return _run(key, label, (), body)


def reciprocal(x: int) -> float:
    """ezpq's lane-error example: 1/x, failing with ZeroDivisionError for 0."""
    time.sleep(0.001)
    return 1 / x


def identity(x: Any) -> Any:
    return x


def pid(key: str, label: str) -> int:
    """The id of the process the job ran in (the harness checks where jobs run)."""
    return _run(key, label, (), lambda _b: os.getpid())


def progressing(key: str, label: str, gate: str, steps: list[list[Any]]) -> str:
    """Report progress 0.5 "half", wait until the test opens ``gate``, then report each
    ``[fraction, message]`` of ``steps`` at once (faster than values are sent) and return."""

    def body(b: Board | BoardProxy) -> str:
        conveyor.progress(0.5, "half")
        if not b.wait_gate(gate, WAIT):
            raise TimeoutError(f"gate {gate!r} was never opened")
        for fraction, message in steps:
            conveyor.progress(fraction, message)
        return label

    return _run(key, label, (), body)


def progress_then_fail_once(key: str, label: str) -> str:
    """The first attempt reports progress 0.5 and fails; the next returns without any."""

    def body(b: Board | BoardProxy) -> str:
        if b.call_count(label) == 1:
            conveyor.progress(0.5, "first attempt")
            raise RuntimeError("first attempt fails")
        return label

    return _run(key, label, (), body)


def progress_items(count: int) -> int:
    """Report progress for each of ``count`` items, the last ``1.0`` "item <count>"."""
    for i in range(1, count + 1):
        conveyor.progress(i / count, f"item {i}")
    return count
