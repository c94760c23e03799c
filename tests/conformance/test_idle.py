"""Idle workers change nothing: with no job to start, a worker's slots wait, they do not
claim again and again (each empty claim of a slot on SQLite was once a commit that woke the
slot itself, for ever)."""

from __future__ import annotations

import time

from tests.conformance import jobs

#: seconds the queue is watched for changes while its workers idle
WATCH = 0.5
#: the changes an idle queue may still see meanwhile (a worker's heartbeat; a spinning slot
#: made hundreds)
FEW = 3


def test_idle_workers_make_no_change(queue_factory):
    q = queue_factory(workers=2)
    assert q.put(jobs.identity, args=(7,)).result(timeout=30) == 7  # the workers are up
    backend = q.backend
    since = backend.version(None)
    changes = 0
    deadline = time.monotonic() + WATCH
    while (remaining := deadline - time.monotonic()) > 0:
        # wait() returns at the first change after `since`, or once the time is up
        version = backend.wait(since, remaining)
        if version != since:
            changes, since = changes + 1, version
    assert changes <= FEW, f"{changes} changes in {WATCH} s while the workers idled"
