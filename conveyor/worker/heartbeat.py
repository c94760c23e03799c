"""The heartbeat of a long-running worker on a durable backend.

::

    heartbeat thread, every lease / 3 seconds (1 s at most):
        write the reports still pending (drop those unwritten for a lease)
        backend.heartbeat(worker id, running ids) ──> stop each job the worker lost
        backend.recover_expired(by=worker id)         (jobs of workers that died)
      and, while batching, every REPORT_DELAY / 2: write the reports held back that long

The beat is also how a cancel made in another process reaches the job: its slot is freed
within a second, not a lease / 3; on a backend that hears of such cancels as they happen
(Redis: pub/sub), at the next tick (``Seam.stop_pending``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from conveyor.worker.reports import REPORT_DELAY

if TYPE_CHECKING:
    from conveyor.worker.reports import Reports, Troubles
    from conveyor.worker.seam import Seam
    from conveyor.worker.state import WorkerState

#: seconds between heartbeats at most (lease / 3 when that is shorter)
MAX_BEAT_INTERVAL = 1.0


class Heartbeat:
    """Beats for one worker: renews its leases, stops the jobs it lost (with ``stop_job``),
    recovers expired leases; the thread ends once ``give_up()`` says so, or at :meth:`stop`."""

    def __init__(
        self,
        state: WorkerState,
        seam: Seam,
        reports: Reports,
        troubles: Troubles,
        *,
        lease: float,
        stop_job: Callable[[str, str], None],
        give_up: Callable[[], bool],
    ) -> None:
        self.state = state
        self.seam = seam
        self.reports = reports
        self.troubles = troubles
        self.lease = lease
        self._stop_job = stop_job
        self._give_up = give_up
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, *, holds_back: bool) -> None:
        """Start the heartbeat thread; with ``holds_back`` (a batching worker), it also looks
        every ``REPORT_DELAY / 2`` for reports held back that long."""
        self._thread = threading.Thread(
            target=self._loop,
            args=(holds_back,),
            daemon=True,
            name=f"conveyor-heartbeat-{self.seam.worker_id}",
        )
        self._thread.start()

    def halt(self) -> None:
        """Beat no more (the thread ends at its next tick)."""
        self._halt.set()

    def stop(self) -> None:
        """Beat no more, and wait for the thread to end (unless called from it)."""
        self._halt.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _loop(self, holds_back: bool) -> None:
        interval = min(self.lease / 3, MAX_BEAT_INTERVAL)
        tick = min(interval, REPORT_DELAY / 2) if holds_back else interval
        next_beat = time.monotonic() + interval
        reports, troubles = self.reports, self.troubles
        while not self._halt.wait(tick):
            if self._give_up():
                return  # it stops heartbeating: its leases run out
            now = time.monotonic()
            if self.seam.stop_pending():
                next_beat = now  # a job of this worker was cancelled elsewhere: beat now
            if now < next_beat:
                since = reports.since
                due = since is not None and now - since >= REPORT_DELAY / 2
                if due and troubles.writes is None:  # failing: retried at the beat
                    reports.flush()
                continue
            next_beat = now + interval
            try:
                self.beat()
            except Exception as exc:  # a backend hiccup must not end the heartbeat
                troubles.beat_failed(exc)
            else:
                troubles.beats = None

    def beat(self) -> None:
        """Renew the leases of the running jobs; stop those the worker no longer holds
        (cancelled elsewhere, or recovered after a lost lease); recover expired leases.

        Reports still unwritten are retried first; those that could not be written for a
        lease are dropped, and their jobs' leases no longer renewed."""
        self.reports.flush()  # a report is held back no longer than a beat
        self.reports.drop_stale()
        state = self.state
        running = state.running.copy()  # one C call: atomic under the GIL
        lost = self.seam.heartbeat(list(running))
        for job_id in lost:
            job = running.get(job_id)
            if job is None:
                continue
            with state.cond:
                # a job whose report is pending or being written has ended: the beat may have
                # crossed its report (read before `running`, which the job leaves first)
                ended = job_id in self.reports.unwritten_ids()
                ended = ended or state.running.get(job_id) is not job
            if not ended:
                self._stop_job(
                    job_id, "it is no longer this worker's (cancelled, or taken back elsewhere)"
                )
        self.seam.recover_expired()  # each job taken back is logged
