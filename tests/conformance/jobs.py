"""Importable job functions for the conformance suite, and the Board they report to.

Jobs get plain arguments only (a board key and labels), so the same calls can later be
encoded for durable backends. What a test needs to share with its jobs (gates, barriers, a
log of starts and ends, concurrency counters) lives on a :class:`Board`, looked up by key.
Times are never measured: starts and ends are numbered by one counter under the board's lock,
so "A ended before B started" is an exact comparison of two integers.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

#: seconds any job waits on a gate or barrier before giving up (the test then fails)
WAIT = 5.0

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
        _boards[self.key] = self

    # ------------------------------------------------------------ for tests
    def gate(self, name: str) -> threading.Event:
        """The event ``name`` (created closed on first use)."""
        with self._cond:
            return self._gates.setdefault(name, threading.Event())

    def barrier(self, name: str, parties: int = 2) -> threading.Barrier:
        """The barrier ``name`` (created on first use, ``WAIT`` seconds timeout)."""
        with self._cond:
            return self._barriers.setdefault(name, threading.Barrier(parties, timeout=WAIT))

    def wait_started(self, *labels: str, timeout: float = WAIT) -> None:
        """Block until every job labelled ``labels`` has started."""
        with self._cond:
            ok = self._cond.wait_for(lambda: all(lb in self.spans for lb in labels), timeout)
        assert ok, f"jobs {labels} did not all start within {timeout} s; log: {self.log}"

    def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        """Block until ``predicate()`` (called under the board's lock) holds."""
        with self._cond:
            ok = self._cond.wait_for(predicate, timeout)
        assert ok, f"condition not met within {timeout} s; log: {self.log}"

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
        """Open every gate and break every barrier (teardown: no job stays blocked)."""
        with self._cond:
            gates, barriers = list(self._gates.values()), list(self._barriers.values())
        for gate in gates:
            gate.set()
        for barrier in barriers:
            barrier.abort()
        _boards.pop(self.key, None)

    # ------------------------------------------------------------- for jobs
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


def board(key: str) -> Board:
    return _boards[key]


def _run(key: str, label: str, groups: tuple[str, ...], body: Callable[[Board], Any]) -> Any:
    b = board(key)
    b.enter(label, groups)
    try:
        return body(b)
    finally:
        b.leave(label, groups)


# ---------------------------------------------------------------- job functions
def record(key: str, label: str, hold: float = 0.0, *groups: str) -> str:
    """Log start and end; sleep ``hold`` seconds in between (an overlap window)."""

    def body(_b: Board) -> str:
        if hold:
            time.sleep(hold)
        return label

    return _run(key, label, groups, body)


def blocker(key: str, label: str, gate: str) -> str:
    """Start, then wait until the test opens ``gate``."""

    def body(b: Board) -> str:
        if not b.gate(gate).wait(WAIT):
            raise TimeoutError(f"gate {gate!r} was never opened")
        return label

    return _run(key, label, (), body)


def meet(key: str, label: str, barrier: str) -> str:
    """Start, then wait at ``barrier`` until its other party is running too."""

    def body(b: Board) -> str:
        b.barrier(barrier).wait()
        return label

    return _run(key, label, (), body)


def fail(key: str, label: str, gate: str | None = None) -> None:
    """Start, wait for ``gate`` if given, then raise ValueError."""

    def body(b: Board) -> None:
        if gate is not None and not b.gate(gate).wait(WAIT):
            raise TimeoutError(f"gate {gate!r} was never opened")
        raise ValueError(f"{label} failed on purpose")

    return _run(key, label, (), body)


def flaky(key: str, label: str, failures: int) -> str:
    """Raise ValueError on the first ``failures`` calls, then return ``label``."""

    def body(b: Board) -> str:
        if b.calls[label] <= failures:
            raise ValueError(f"{label} attempt {b.calls[label]} failed on purpose")
        return label

    return _run(key, label, (), body)


def foo(key: str, label: str, gate: str | None = None) -> str:
    """PySiQ's ``foo``: one task name for several jobs; waits for ``gate`` if given."""

    def body(b: Board) -> str:
        if gate is not None and not b.gate(gate).wait(WAIT):
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
