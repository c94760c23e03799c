"""The seed projects' README examples, scaled down, run on conveyor.

Each job writes ("start" | "end", name) into one shared log under a lock, so order and overlap
are read from the log's order, never from clocks.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import conveyor
from conveyor import Status

WAIT = 10


class Log:
    """What ran when, as an ordered list of (event, name) pairs."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, event: str, name: Any) -> None:
        with self._lock:
            self.events.append((event, name))

    def at(self, event: str, name: Any) -> int:
        return self.events.index((event, name))

    def most_at_once(self, names: set[Any] | None = None) -> int:
        """The most jobs (of ``names``, or all) between their start and end at one moment."""
        running = most = 0
        for event, name in self.events:
            if names is not None and name not in names:
                continue
            running += 1 if event == "start" else -1
            most = max(most, running)
        return most


def random_sleep_seconds(x: int) -> float:
    """ezpq's random_sleep duration for ``x``, scaled from 0.5-1.5 s to 1-3 ms."""
    return random.Random(x).uniform(0.001, 0.003)


def random_sleep(x: int) -> float:
    n = random_sleep_seconds(x)
    time.sleep(n)
    return n


def test_pysiq_example_1_dependencies_on_two_workers():
    # given PySiQ's first example: 2 workers, 5 tasks, Task 5 after Tasks 3 and 4
    log = Log()

    def foo(seconds: float, message: str) -> str:
        log.add("start", message)
        time.sleep(seconds)
        log.add("end", message)
        return message + " finished"

    durations = {"Task 1": 0.05, "Task 2": 0.02, "Task 3": 0.05, "Task 4": 0.025, "Task 5": 0.02}
    # when the tasks are enqueued as in the README
    with conveyor.Queue(workers=2) as q:
        for name, seconds in durations.items():
            after = ["Task 3", "Task 4"] if name == "Task 5" else []
            q.put(foo, args=(seconds, name), id=name, after=after)
        assert q.wait(timeout=WAIT) == 0
        statuses = {name: q.status(name) for name in durations}
        results = {name: q.result(name) for name in durations}
    # then every task finished with its result, kept until asked for
    assert statuses == dict.fromkeys(durations, Status.FINISHED)
    assert results == {name: name + " finished" for name in durations}
    # and Task 5 started only after Tasks 3 and 4 had both ended
    assert log.at("start", "Task 5") > log.at("end", "Task 3")
    assert log.at("start", "Task 5") > log.at("end", "Task 4")
    # and never more than the 2 workers ran at once
    assert log.most_at_once() <= 2
    # and Tasks 1 and 2 took the two workers first, Task 5 came last
    starts = [name for event, name in log.events if event == "start"]
    assert set(starts[:2]) == {"Task 1", "Task 2"}
    assert starts[4] == "Task 5"


def test_ezpq_quickstart_map_keeps_input_order():
    # given ezpq's quickstart: 60 random sleeps on 6 workers
    # when mapped
    with conveyor.Queue(workers=6) as q:
        output = q.map(random_sleep, range(60))
    # then the outputs come back in input order
    assert output == [random_sleep_seconds(x) for x in range(60)]


def test_ezpq_quickstart_put_wait_collect():
    # given the same 60 jobs put one by one
    with conveyor.Queue(workers=6) as q:
        ids = [q.put(random_sleep, args=[x]).id for x in range(60)]
        # when waiting and collecting
        assert q.wait(timeout=WAIT) == 0
        output = q.collect()
        size_after = q.size()
    # then collect returns all 60 records, finished, with their outputs, and empties the queue
    assert len(output) == 60
    assert sorted(r.id for r in output) == sorted(ids)
    assert all(r.status is Status.FINISHED for r in output)
    assert {r.id: r.result for r in output} == {
        job_id: random_sleep_seconds(x) for x, job_id in enumerate(ids)
    }
    assert all(r.task == "random_sleep" for r in output)
    assert all(r.started is not None and r.ended is not None for r in output)
    assert size_after == 0


def test_ezpq_priorities_on_one_worker():
    # given one worker held by a first job, and 60 jobs with priority x % 2 behind it
    log = Log()
    release = threading.Event()
    started = threading.Event()

    def first() -> None:
        started.set()
        release.wait(WAIT)

    def job(x: int) -> int:
        log.add("start", x)
        log.add("end", x)
        return x

    with conveyor.Queue(workers=1) as q:
        q.put(first)
        assert started.wait(WAIT)
        for x in range(60):
            q.put(job, args=(x,), priority=x % 2)
        # when the worker is freed
        release.set()
        assert q.wait(timeout=WAIT) == 0
    # then every priority-0 job started before any priority-1 job, each group in put order
    order = [x for event, x in log.events if event == "start"]
    assert order == list(range(0, 60, 2)) + list(range(1, 60, 2))


def test_ezpq_lanes_never_overlap_within_a_lane():
    # given ezpq's lane example: 60 jobs in 5 lanes (x % 5) on 6 workers
    log = Log()

    def lane_job(x: int) -> int:
        log.add("start", x)
        time.sleep(random_sleep_seconds(x))
        log.add("end", x)
        return x

    with conveyor.Queue(workers=6) as q:
        for x in range(60):
            q.put(lane_job, args=(x,), lane=x % 5, timeout=5)
        assert q.wait(timeout=WAIT) == 0
        records = q.collect()
    # then all 60 finished, each recording its lane
    assert len(records) == 60
    assert all(r.status is Status.FINISHED for r in records)
    assert {r.result: r.lane for r in records} == {x: x % 5 for x in range(60)}
    for lane in range(5):
        members = [x for x in range(60) if x % 5 == lane]
        lane_events = [(event, x) for event, x in log.events if x % 5 == lane]
        # then same-lane jobs never overlapped: each ended before the next started ...
        assert log.most_at_once(set(members)) == 1
        # ... and they ran in the order they were put
        assert lane_events == [(event, x) for x in members for event in ("start", "end")]
    # and never more than the 6 workers ran at once
    assert log.most_at_once() <= 6
