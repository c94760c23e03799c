"""Helpers for testing code that uses conveyor: a clock you move by hand.

Example::

    from conveyor.testing import ManualClock

    clock = ManualClock()
    with conveyor.Queue(workers=1, clock=clock) as q:
        job = q.put(send_report, delay=3600)
        clock.advance(3600)   # the job becomes runnable now, no sleeping
        job.result(timeout=5)
"""

from conveyor.clock import Clock, ManualClock

__all__ = ["Clock", "ManualClock"]
