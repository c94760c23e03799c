"""Bad input fails at put with a clear error (an InvalidJob) and changes nothing (DESIGN §2)."""

from __future__ import annotations

import threading

import pytest

import conveyor
from tests.conformance import jobs


@pytest.fixture
def queue(queue_factory, events):
    """A producer-only queue already holding two jobs, one of them with the id "taken"."""
    q = queue_factory(workers=0)
    q.put(jobs.identity, args=(1,), id="taken")
    q.put(jobs.identity, args=(2,), priority=3, lane="L", unique="u")
    events.attach(q, "queued")
    return q


def _snapshot(q):
    return q.size(), [r.as_dict() for r in q.jobs()]


BAD_PUTS = {
    "duplicate-id": (lambda q: q.put(jobs.identity, args=(3,), id="taken"), conveyor.DuplicateJob),
    "not-callable": (lambda q: q.put(42), conveyor.InvalidJob),
    "priority-str": (lambda q: q.put(jobs.identity, args=(3,), priority="high"), None),
    "priority-float": (lambda q: q.put(jobs.identity, args=(3,), priority=1.5), None),
    "priority-bool": (lambda q: q.put(jobs.identity, args=(3,), priority=True), None),
    "negative-timeout": (lambda q: q.put(jobs.identity, args=(3,), timeout=-1), None),
    "zero-timeout": (lambda q: q.put(jobs.identity, args=(3,), timeout=0), None),
    "unknown-option": (lambda q: q.put(jobs.identity, args=(3,), colour="red"), None),
    "delay-and-at": (lambda q: q.put(jobs.identity, args=(3,), delay=5, at=1e10), None),
    "args-str": (lambda q: q.put(jobs.identity, args="abc"), None),
    "args-int": (lambda q: q.put(jobs.identity, args=3), None),
    "args-dict": (lambda q: q.put(jobs.identity, args={"x": 3}), None),
    "args-set": (lambda q: q.put(jobs.identity, args={3}), None),
    "args-generator": (lambda q: q.put(jobs.identity, args=(x for x in [3])), None),
    "kwargs-list": (lambda q: q.put(jobs.identity, args=(), kwargs=[("x", 3)]), None),
    "unknown-dependency": (
        lambda q: q.put(jobs.identity, args=(3,), after=["nope"]),
        conveyor.UnknownDependency,
    ),
    "self-dependency": (
        lambda q: q.put(jobs.identity, args=(3,), id="me", after=["me"]),
        conveyor.DependencyCycle,
    ),
    "negative-retries": (lambda q: q.put(jobs.identity, args=(3,), retries=-1), None),
    "backoff-below-one": (lambda q: q.put(jobs.identity, args=(3,), backoff=0.5), None),
    "negative-delay": (lambda q: q.put(jobs.identity, args=(3,), delay=-1), None),
    "empty-id": (lambda q: q.put(jobs.identity, args=(3,), id=""), None),
    "submit-not-callable": (lambda q: q.submit("print", 1), None),
}


@pytest.mark.parametrize("case", list(BAD_PUTS))
def test_bad_input_raises_invalid_job_and_changes_nothing(queue, events, case):
    put, error = BAD_PUTS[case]
    before = _snapshot(queue)

    with pytest.raises(error or conveyor.InvalidJob) as caught:
        put(queue)

    assert isinstance(caught.value, conveyor.InvalidJob)
    assert isinstance(caught.value, ValueError)
    assert str(caught.value)  # a message, not a bare exception
    assert _snapshot(queue) == before
    assert events.count("queued") == 0


def test_a_refused_put_does_not_take_its_id_or_unique_key(queue):
    with pytest.raises(conveyor.UnknownDependency):
        queue.put(jobs.identity, args=(3,), id="fresh", unique="k", after=["nope"])

    job = queue.put(jobs.identity, args=(3,), id="fresh", unique="k")

    assert job.id == "fresh"
    assert queue.status("fresh") == "waiting"


@pytest.mark.timeout(10)
def test_a_map_with_one_unencodable_item_submits_nothing(queue, events):
    in_process = queue.task(mode="process")(jobs.identity)
    before = _snapshot(queue)

    with pytest.raises(conveyor.NotSerializable):
        in_process.map([1, 2, 3, threading.Lock(), 5])

    assert _snapshot(queue) == before
    assert events.count("queued") == 0


@pytest.mark.timeout(10)
def test_a_map_with_a_bad_option_submits_nothing(queue, events):
    before = _snapshot(queue)

    with pytest.raises(conveyor.UnknownDependency):
        queue.map(jobs.identity, [1, 2, 3], after=["nope"])
    with pytest.raises(conveyor.InvalidJob):
        queue.map(jobs.identity, [1, 2, 3], priority="urgent")

    assert _snapshot(queue) == before
    assert events.count("queued") == 0
