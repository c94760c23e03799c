"""The worker: claims jobs for an executor's slots, reports how they ended, heartbeats, and
stops gracefully.

::

    worker.py     Worker: life cycle (start, stop, stop_claiming, wait_idle), the slots' calls
    claiming.py   the ways to claim and report, one class each, chosen once: Direct, Budgeted
    batching.py   Batched: claims ahead while jobs run short, reports held back for the next call
    reports.py    reports still to be written (kept, retried, dropped after a lease); give-up clock
    heartbeat.py  the beat: leases renewed, lost jobs stopped, expired leases recovered
    outcomes.py   saying and counting what happened to each job (logger ``conveyor.worker``)
    state.py      what the parts share: the running jobs, the lock, the stop flags
    seam.py       every call the worker makes to its backend, one method per concern
"""

from conveyor.worker.batching import PREFETCH_BELOW
from conveyor.worker.claiming import BURST_RECHECK, RETRY_FIRST, RETRY_MAX
from conveyor.worker.heartbeat import MAX_BEAT_INTERVAL
from conveyor.worker.outcomes import OUTCOMES, first_line, job_fields
from conveyor.worker.reports import REPORT_DELAY
from conveyor.worker.worker import Worker

__all__ = [
    "BURST_RECHECK",
    "MAX_BEAT_INTERVAL",
    "OUTCOMES",
    "PREFETCH_BELOW",
    "REPORT_DELAY",
    "RETRY_FIRST",
    "RETRY_MAX",
    "Worker",
    "first_line",
    "job_fields",
]
