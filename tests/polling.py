"""Polling a condition that no event announces (a process that ended, a file written by a
child): the one helper the test modules share for it."""

from __future__ import annotations

import time
from collections.abc import Callable

#: seconds a test waits by default for something that should happen soon (forks included)
WAIT = 10.0


def wait_until(
    predicate: Callable[[], object], timeout: float = WAIT, interval: float = 0.01
) -> bool:
    """Poll ``predicate`` every ``interval`` seconds until it holds; False if ``timeout``
    passed first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
