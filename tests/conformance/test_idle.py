"""Idle workers change nothing: with no job to start, a worker's slots wait, they do not
claim again and again (each empty claim of a slot on SQLite was once a commit that woke the
slot itself, for ever)."""

from __future__ import annotations

from tests.conformance import jobs

#: seconds the queue is watched for a change while its workers idle
WATCH = 0.5


def test_idle_workers_make_no_change(queue_factory):
    q = queue_factory(workers=2)
    assert q.put(jobs.identity, args=(7,)).result(timeout=30) == 7  # the workers are up
    backend = q.backend
    since = backend.version(None)
    # wait() returns at the first change after `since`, or once WATCH seconds passed
    assert backend.wait(since, WATCH) == since
