"""Property: random batches mixing every option all end, and no rule is broken (DESIGN §2).

hypothesis draws small batches (2 to 6 jobs, about a millisecond each) over two lanes:
priorities, ``after`` (earlier jobs only), exclusive groups, ``incompatible`` (job ids and task
names), a task with ``max_concurrency=1``, ``stop_on_lane_error``, short delays, retries of a
job that fails on its first attempt (and of one that always fails), unique keys and expiry.
Each example runs on the test's queue under names of its own (ids, lanes, groups, keys), to
the end: a queue that stops making progress with jobs left (nothing running, nothing
scheduled, the same counts for ``STALL`` seconds) is a deadlock, and fails the example with
the batch printed. Then the job records and the board's log of starts and ends (exact ticks,
see ``tests/conformance/jobs.py``) are checked against every rule.

Two queues: two worker slots with the default settings, the batch put while jobs run or behind
gate jobs, for the rules that forbid overlaps; and one slot without claim-ahead
(``prefetch=0``), always behind a gate, where starts happen one after another, so the order
rules (lane order, priority among startable jobs) can be checked exactly.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import conveyor
from conveyor import rules
from tests.conformance import jobs
from tests.conformance.jobs import Board

#: seconds a job runs
HOLD = 0.001
#: seconds without progress (nothing running or scheduled, jobs left) that make a deadlock
STALL = 1.0
#: seconds an example may take in all
LIMIT = 15.0
KINDS = ("record", "fail", "flaky", "limited")
#: no shrinking: a failing example (a batch of at most six jobs) is reported at once, well
#: within the test's timeout, rather than after many more runs that each wait for a stall
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Spec:
    """One generated job: what it runs and every option (indexes name earlier jobs)."""

    kind: str  # record: returns; fail: always raises; flaky: raises once; limited: max 1
    lane: int | None = None
    priority: int = 0
    after: tuple[int, ...] = ()
    exclusive: tuple[str, ...] = ()
    incompatible: tuple[str | int, ...] = ()  # task names, or indexes of jobs of the batch
    stop_on_lane_error: bool = False
    delay: float | None = None
    retries: int = 0
    retry_delay: float = 0.0
    unique: int | None = None
    expires: float | None = None


@st.composite
def batches(draw: Any) -> list[Spec]:
    size = draw(st.integers(2, 6))
    batch = []
    for i in range(size):
        kind = draw(st.sampled_from(KINDS))
        earlier = st.sets(st.integers(0, i - 1), max_size=2) if i else st.just(set())
        after = tuple(sorted(draw(earlier)))
        lanes: tuple[int | None, ...] = (None, 0, 1)
        if after:  # as often as not, in the lane of a dependency: a pipeline in a lane
            lanes = (None, *[batch[j].lane for j in after], 0, 1)
        names: list[tuple[str | int, ...]] = [(), ("limited",), ("flaky",)]
        names += [(j,) for j in range(size) if j != i]
        batch.append(
            Spec(
                kind=kind,
                lane=draw(st.sampled_from(lanes)),
                priority=draw(st.integers(-1, 1)),
                after=after,
                exclusive=draw(st.sampled_from(((), ("g",), ("h",), ("g", "h")))),
                incompatible=draw(st.sampled_from(names)),
                stop_on_lane_error=draw(st.booleans()),
                delay=draw(st.sampled_from((None, 0.005, 0.03))),
                retries=draw(st.integers(0, 2)) if kind in ("fail", "flaky") else 0,
                retry_delay=draw(st.sampled_from((0.0, 0.01))),
                unique=draw(st.sampled_from((None, None, 0, 1))),
                expires=draw(st.sampled_from((None, None, None, None, 0.02, 0.2))),
            )
        )
    return batch


@dataclass
class Run:
    """One job of an example as it ran: its spec, id, record and attempts as board ticks."""

    index: int
    spec: Spec
    id: str
    put_started: float
    put_ended: float
    record: conveyor.JobRecord | None = None
    attempts: list[list[int]] = field(default_factory=list)  # [start tick, end tick]

    @property
    def label(self) -> str:
        return f"j{self.index}"

    @property
    def order(self) -> tuple[int, int]:
        return (self.spec.priority, self.index)  # put in index order: submission order

    @property
    def status(self) -> str:
        assert self.record is not None
        return str(self.record.status)

    def first(self) -> int:
        return self.attempts[0][0]

    def last(self) -> int:
        return self.attempts[-1][1]


class Example:
    """Puts one batch on a queue under its own names, runs it to the end, checks it."""

    numbers = itertools.count()

    def __init__(self, q: conveyor.Queue, limited: Any, batch: list[Spec], slots: int) -> None:
        self.q, self.limited, self.batch, self.slots = q, limited, batch, slots
        self.prefix = f"x{next(self.numbers)}-"
        self.board = Board()
        self.runs: list[Run] = []  # the jobs a put created (not the ones unique sent elsewhere)
        self.ids: list[str] = []  # per spec: the id its put returned

    def run(self, gated: bool, exact: bool) -> None:
        try:
            gates = self._hold_slots() if gated else []
            for index, spec in enumerate(self.batch):
                self._put(index, spec)
            self.board.gate("go").set()
            problem = self._run_to_end()
            if problem is not None:
                raise AssertionError(f"{problem}\nbatch: {self._describe()}")
            for gate in gates:
                gate.result(timeout=LIMIT)
            self._read()
            problems = check(self.runs, self.ids, exact)
            assert not problems, "\n".join([*problems, f"batch: {self._describe()}"])
        finally:
            self._clean_up()

    def _hold_slots(self) -> list[conveyor.Job]:
        labels = [f"gate{n}" for n in range(self.slots)]
        gates = [self.q.put(jobs.blocker, args=(self.board.key, lb, "go")) for lb in labels]
        self.board.wait_started(*labels)
        return gates

    def _name(self, name: str | int) -> str:
        return f"{self.prefix}j{name}" if isinstance(name, int) else name

    def _put(self, index: int, spec: Spec) -> None:
        options: dict[str, Any] = {
            "id": f"{self.prefix}j{index}",
            "lane": None if spec.lane is None else f"{self.prefix}L{spec.lane}",
            "priority": spec.priority,
            "after": [self.ids[j] for j in spec.after],
            "exclusive": [self.prefix + group for group in spec.exclusive],
            "incompatible": [self._name(name) for name in spec.incompatible],
            "stop_on_lane_error": spec.stop_on_lane_error,
            "retries": spec.retries,
            "retry_delay": spec.retry_delay,
        }
        if spec.delay is not None:
            options["delay"] = spec.delay
        if spec.expires is not None:
            options["expires"] = spec.expires
        if spec.unique is not None:
            options["unique"] = f"{self.prefix}u{spec.unique}"
        key, label = self.board.key, f"j{index}"
        started = time.time()
        if spec.kind == "record":
            job = self.q.put(jobs.record, args=(key, label, HOLD), **options)
        elif spec.kind == "fail":
            job = self.q.put(jobs.fail, args=(key, label), **options)
        elif spec.kind == "flaky":
            job = self.q.put(jobs.flaky, args=(key, label, 1), **options)
        else:
            job = self.limited.put(args=(key, label, HOLD), **options)
        self.ids.append(job.id)
        if job.id == options["id"]:
            self.runs.append(Run(index, spec, job.id, started, time.time()))

    def _run_to_end(self) -> str | None:
        """None once no job is left; else what went wrong (a deadlock, a timeout)."""
        begun = time.monotonic()
        last: tuple[int, ...] | None = None
        stalled: float | None = None
        while self.q.wait(timeout=0.1):
            counts = self.q.backend.counts()
            now = time.monotonic()
            stuck = not counts[conveyor.Status.RUNNING] and not counts[conveyor.Status.SCHEDULED]
            state = tuple(counts.values())
            if not stuck or state != last:
                stalled = None
            elif stalled is None:
                stalled = now
            elif now - stalled > STALL:
                return f"deadlock: {self._statuses()} stay waiting, nothing runs or is due"
            last = state
            if now - begun > LIMIT:
                return f"not ended within {LIMIT} s: {self._statuses()}"
        return None

    def _statuses(self) -> dict[str, str]:
        return {run.label: str(self.q.status(run.id)) for run in self.runs}

    def _read(self) -> None:
        by_label = {run.label: run for run in self.runs}
        for tick, (event, label) in enumerate(list(self.board.log), start=1):
            run = by_label.get(label)
            if run is None:
                continue  # a gate
            if event == "start":
                run.attempts.append([tick, 0])
            else:
                run.attempts[-1][1] = tick
        for run in self.runs:
            run.record = self.q.job(run.id)

    def _clean_up(self) -> None:
        """Leave the queue empty for the next example, whatever happened."""
        for job_id in {*self.ids, *(run.id for run in self.runs)}:
            with contextlib.suppress(conveyor.UnknownJob):
                self.q.cancel(job_id)
        self.board.release()
        self.q.wait(timeout=STALL)
        self.q.collect()

    def _describe(self) -> str:
        return "[\n" + "".join(f"  j{i}: {spec},\n" for i, spec in enumerate(self.batch)) + "]"


# ------------------------------------------------------------------------------ the rules
def check(runs: list[Run], ids: list[str], exact: bool) -> list[str]:
    """Every rule broken by the runs of one example (empty: none)."""
    by_id = {run.id: run for run in runs}
    problems: list[str] = []
    for run in runs:
        problems += _ending(run)
        problems += _dependencies(run, [by_id[ids[j]] for j in run.spec.after])
        problems += _timers(run)
    problems += _overlaps(runs)
    problems += _lanes(runs)
    problems += _unique(runs, ids, by_id, exact)
    if exact:
        problems += _order(runs, ids, by_id)
    return problems


def _ending(run: Run) -> list[str]:
    assert run.record is not None
    status, tried = run.status, len(run.attempts)
    problems = []
    if status not in ("finished", "failed", "cancelled"):
        problems.append(f"{run.label} is {status} after the batch ended")
    if any(end == 0 for _, end in run.attempts):
        problems.append(f"{run.label} started but never ended: {run.attempts}")
    if tried != run.record.attempts:
        problems.append(f"{run.label} ran {tried} times, its record counts {run.record.attempts}")
    if tried > run.spec.retries + 1:
        problems.append(f"{run.label} ran {tried} times with retries={run.spec.retries}")
    expected = {
        "record": {"finished", "cancelled"},
        "limited": {"finished", "cancelled"},
        "fail": {"failed", "cancelled"},
        "flaky": {"finished" if run.spec.retries else "failed", "cancelled"},
    }[run.spec.kind]
    if status not in expected:
        problems.append(f"{run.label} ({run.spec.kind}) ended {status}: {run.record.error}")
    if status == "cancelled" and tried:
        problems.append(f"{run.label} was cancelled ({run.record.error}) after it started")
    return problems


def _dependencies(run: Run, deps: list[Run]) -> list[str]:
    assert run.record is not None
    problems = []
    if run.attempts:
        for dep in deps:
            if dep.status != "finished" or dep.last() > run.first():
                problems.append(f"{run.label} started before its dependency {dep.label} finished")
    error = run.record.error or ""
    if run.status == "cancelled" and error.startswith("dependency"):
        named = [rules.cascade_reason(dep.id, dep.status) for dep in deps]
        if error not in named or all(dep.status == "finished" for dep in deps):
            problems.append(f"{run.label} cancelled as {error!r}; its dependencies: {named}")
    return problems


def _timers(run: Run) -> list[str]:
    assert run.record is not None
    record, spec = run.record, run.spec
    problems = []
    if record.error == "expired":
        ended = record.ended.timestamp() if record.ended else 0.0
        if spec.expires is None or run.attempts or ended < run.put_started + spec.expires:
            problems.append(f"{run.label} expired wrongly (ended {ended}, put {run.put_started})")
    started = record.started.timestamp() if record.started else None
    if spec.delay is not None and started is not None and started < run.put_started + spec.delay:
        problems.append(f"{run.label} started before its delay of {spec.delay} s")
    return problems


def _overlap(a: Run, b: Run) -> bool:
    return any(sa < eb and sb < ea for sa, ea in a.attempts for sb, eb in b.attempts)


def _overlaps(runs: list[Run]) -> list[str]:
    """Exclusive groups, incompatible jobs and tasks (both ways), max_concurrency=1."""
    problems = []
    for a, b in itertools.combinations(runs, 2):
        assert a.record is not None and b.record is not None
        if not _overlap(a, b):
            continue
        shared = set(a.record.exclusive) & set(b.record.exclusive)
        if shared:
            problems.append(f"{a.label} and {b.label} of group {shared} overlapped")
        if {b.id, b.record.task} & set(a.record.incompatible) or {a.id, a.record.task} & set(
            b.record.incompatible
        ):
            problems.append(f"incompatible {a.label} and {b.label} overlapped")
        if a.record.task == b.record.task == "limited":
            problems.append(f"{a.label} and {b.label} overlapped beyond max_concurrency=1")
    return problems


def _lanes(runs: list[Run]) -> list[str]:
    """A lane runs one job at a time (through its retries); stop_on_lane_error."""
    problems = []
    for a, b in itertools.combinations(runs, 2):
        if a.spec.lane is None or a.spec.lane != b.spec.lane or not a.attempts or not b.attempts:
            continue
        if a.first() < b.last() and b.first() < a.last():
            problems.append(f"{a.label} and {b.label} of lane {a.spec.lane} overlapped")
    for run in runs:
        assert run.record is not None
        mates = [m for m in runs if m is not run and m.spec.lane == run.spec.lane]
        if run.spec.lane is None:
            continue
        error = run.record.error or ""
        if run.status == "cancelled" and error.startswith("previous job"):
            lane = run.record.lane
            assert lane is not None
            named = [
                rules.lane_reason(m.id, lane, "failed or was cancelled")
                for m in mates
                if m.status in ("failed", "cancelled")
            ]
            if not run.spec.stop_on_lane_error or error not in named:
                problems.append(f"{run.label} cancelled as {error!r}")
        if run.spec.stop_on_lane_error and run.attempts:
            before = [m for m in mates if m.attempts and m.last() < run.first()]
            previous = max(before, key=Run.last, default=None)
            if previous is not None and previous.status == "failed":
                problems.append(f"{run.label} ran after {previous.label} failed in its lane")
    return problems


def _unique(runs: list[Run], ids: list[str], by_id: dict[str, Run], exact: bool) -> list[str]:
    problems = []
    fresh = {run.index for run in runs}
    for index, job_id in enumerate(ids):
        if index in fresh:
            continue
        holder = by_id.get(job_id)
        if holder is None or holder.spec.unique is None:
            problems.append(f"j{index} was sent to {job_id}, not a job of its unique key")
    for a, b in itertools.combinations(runs, 2):  # a put first
        assert a.record is not None
        if a.spec.unique is None or a.spec.unique != b.spec.unique:
            continue
        ended = a.record.ended.timestamp() if a.record.ended else None
        if ended is None or ended > b.put_ended:
            problems.append(f"{b.label} was put while {a.label} held its unique key")
    if exact:  # reports are not batched: a record's end is when the backend ended the job
        for index, job_id in enumerate(ids):
            holder = by_id.get(job_id)
            if index in fresh or holder is None or holder.record is None:
                continue
            ended = holder.record.ended
            if ended is not None and ended.timestamp() < holder.put_started:
                problems.append(f"j{index} was sent to {holder.label}, which had ended")
    return problems


def _order(runs: list[Run], ids: list[str], by_id: dict[str, Run]) -> list[str]:
    """One slot, all jobs put before any starts: at each start no other job that certainly
    could start then (no timer, dependencies finished, first in its free lane) comes first
    by priority, then submission."""
    problems = []
    starts = sorted((start, run) for run in runs for start, _ in run.attempts)
    for tick, started in starts:
        for other in runs:
            if (
                other is started
                or not other.attempts
                or other.first() < tick
                or other.order > started.order
                or other.spec.delay is not None
                or not _joined(other, tick, ids, by_id)
                or not _lane_front(other, tick, runs, ids, by_id)
            ):
                continue
            problems.append(
                f"{started.label} started (tick {tick}) while {other.label} could, and comes "
                "first by priority then submission"
            )
    return problems


def _joined(run: Run, tick: int, ids: list[str], by_id: dict[str, Run]) -> bool:
    """Every dependency of ``run`` had finished before ``tick``."""
    deps = [by_id[ids[j]] for j in run.spec.after]
    return all(dep.status == "finished" and dep.attempts and dep.last() < tick for dep in deps)


def _lane_front(run: Run, tick: int, runs: list[Run], ids: list[str], by_id: Any) -> bool:
    """``run`` was certainly first in its lane's order, and the lane free, at ``tick``."""
    if run.spec.lane is None:
        return True
    for mate in runs:
        if mate is run or mate.spec.lane != run.spec.lane:
            continue
        if mate.attempts and mate.first() < tick < mate.last():
            return False  # it held the lane (it ran, or waited to retry)
        ahead = mate.order < run.order and not (mate.attempts and mate.first() < tick)
        if ahead and _joined(mate, tick, ids, by_id):
            return False  # it may have been in the lane ahead of run
    return True


# ------------------------------------------------------------------------------- the tests
#: batches that deadlocked before issue 7's fixes, tried first on every run
KNOWN = [
    # the example: the lane's front waits for a job behind it
    [Spec("record", lane=0, delay=0.03), Spec("record", lane=0, priority=-1, after=(0,))],
    # two lanes whose fronts wait for jobs behind each other's front
    [
        Spec("record", lane=0),
        Spec("record", lane=1),
        Spec("record", lane=0, priority=-1, after=(1,)),
        Spec("record", lane=1, priority=-1, after=(0,)),
    ],
    # unique sends the second put to the first job: one dependency (SQLite counted two)
    [Spec("record", unique=0), Spec("record", unique=0), Spec("record", after=(0, 1))],
]


def test_random_batches_on_two_slots_all_end_and_break_no_rule(queue_factory):
    q = queue_factory(workers=2, mode="thread")
    limited = q.task(name="limited", max_concurrency=1)(jobs.record)

    def run(batch: list[Spec], gated: bool) -> None:
        Example(q, limited, batch, slots=2).run(gated=gated, exact=False)

    for batch in KNOWN:
        run = example(batch=batch, gated=True)(run)
    SETTINGS(given(batch=batches(), gated=st.booleans())(run))()


def test_random_batches_on_one_slot_start_in_rule_order(queue_factory):
    q = queue_factory(workers=1, mode="thread", prefetch=0)
    limited = q.task(name="limited", max_concurrency=1)(jobs.record)

    def run(batch: list[Spec]) -> None:
        Example(q, limited, batch, slots=1).run(gated=True, exact=True)

    for batch in KNOWN:
        run = example(batch=batch)(run)
    SETTINGS(given(batch=batches())(run))()
