"""Fixtures of the conformance suite: every test runs once per backend URL.

Add a backend by adding its URL to ``BACKENDS`` (and its id to ``BACKEND_IDS``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import conveyor
from tests.conformance.jobs import Board

BACKENDS = ["memory://", "sqlite:///{tmp}/queue.db"]  # {tmp} is absolute: four slashes
BACKEND_IDS = ["memory", "sqlite"]


@pytest.fixture(params=BACKENDS, ids=BACKEND_IDS)
def backend_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A backend URL; a file-backed one gets a fresh folder per test."""
    url = str(request.param)
    if "{tmp}" in url:
        url = url.replace("{tmp}", str(tmp_path_factory.mktemp("db")))
    return url


@pytest.fixture
def queue_factory(backend_url: str) -> Iterator[Callable[..., conveyor.Queue]]:
    """Build ``conveyor.Queue(backend_url, **kwargs)``; close each one without waiting."""
    built: list[conveyor.Queue] = []

    def make(**kwargs: Any) -> conveyor.Queue:
        queue = conveyor.Queue(backend_url, **kwargs)
        built.append(queue)
        return queue

    yield make
    for queue in built:
        queue.close(wait=False)


@pytest.fixture
def board(queue_factory: Callable[..., conveyor.Queue]) -> Iterator[Board]:
    """Gates, barriers and a start/end log shared with the jobs; all released at teardown.

    It depends on ``queue_factory`` so that it is torn down first: blocked jobs are released
    before their queues are closed.
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
