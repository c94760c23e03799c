"""Batched claims and reports, for durable backends where each backend call is a transaction.

While the worker's jobs lately ran shorter than ``PREFETCH_BELOW``, a claim takes up to
``prefetch`` jobs more than the slot asked for and keeps them at hand; a slot that ends a job
takes the next one from there, and the reports wait for the next backend call (a claim, the
heartbeat within ``REPORT_DELAY``, a stop), which writes them all and claims again. A job
claimed ahead counts its attempt only once a slot started it (the backend is told with the
next call), and its recorded start is when the slot took it.

No backend call is made under ``state.cond``: the backend runs event and done callbacks on the
calling thread, and a callback may put a job and wait for it.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from conveyor.worker.claiming import BURST_RECHECK, Claiming

if TYPE_CHECKING:
    from conveyor.clock import Clock
    from conveyor.records import RunnableJob
    from conveyor.worker.reports import Reports, Troubles
    from conveyor.worker.seam import Seam
    from conveyor.worker.state import WorkerState

#: a batching worker claims extra jobs only while its jobs lately ran shorter than this
#: (seconds), so that long jobs are never hoarded by one worker while another idles
PREFETCH_BELOW = 0.02


class Batched(Claiming):
    """Claims up to ``prefetch`` jobs ahead while jobs run short, and holds reports back to
    write them with the next claim; with ``burst``, ends once nothing may start and nothing
    runs anywhere (see :class:`~conveyor.worker.claiming.Budgeted`)."""

    holds_back = True

    def __init__(
        self,
        state: WorkerState,
        seam: Seam,
        reports: Reports,
        troubles: Troubles,
        clock: Clock,
        *,
        prefetch: int,
        burst: bool,
    ) -> None:
        super().__init__(state, seam, reports, troubles, clock)
        self.prefetch = prefetch
        self.burst = burst
        # all guarded by state.cond
        self.at_hand: deque[RunnableJob] = deque()  # claimed, not yet given to a slot
        self.given: dict[str, tuple[float, float]] = {}  # id: (monotonic, clock) given
        self.recent_runtime: float | None = None  # moving average, seconds
        self.claiming = 0  # slots in a backend call that may claim

    # ------------------------------------------------------------ the slots' calls
    def take(self, limit: int, timeout: float | None) -> list[RunnableJob]:
        """Write the pending reports and claim up to ``limit`` jobs for the calling slot (and
        some ahead while jobs are short) in one backend call; when none may start, block like
        ``Worker.claim`` (a burst worker instead ends once nothing runs, see
        :meth:`_end_burst_if_over`).

        So that a burst worker never ends while one of its slots is in a claim whose jobs it
        has not tracked yet, such calls are counted in :attr:`claiming`."""
        state = self.state
        while True:
            with state.cond:
                if limit and self.at_hand and not state.draining:
                    return self._give(limit)  # claimed ahead: pending reports wait a call
                stopping = state.draining or state.done.is_set()
                claim = 0 if stopping else limit
                extra = self._extra() if claim else 0
                if claim:
                    self.claiming += 1
            state.local.sifted = False
            since = self.seam.version() if claim else None  # before the claim: none missed
            try:
                self._hold(self.reports.write(claim, extra))
            finally:
                if claim:
                    with state.cond:
                        self.claiming -= 1
            with state.cond:
                if self.at_hand and not state.draining:
                    if len(self.at_hand) > limit:
                        state.cond.notify_all()  # a burst slot waiting for work may take some
                        self.seam.wake()  # so may a slot blocked in a claim
                    return self._give(limit)
                if not claim:
                    return []
                if state.local.sifted:
                    continue  # what it claimed could not run (said and recorded): again
                if self.burst and (state.running or self.claiming):
                    state.cond.wait(BURST_RECHECK)  # ours still run and may unblock more
                    continue
            if self.burst:
                self._end_burst_if_over()
                continue
            # nothing may start now: wait for a job for this slot (none claimed ahead), for a
            # change after the claim that just found none before claiming again
            state.local.sifted = False
            claimed = self.seam.claim(limit, timeout, self._claim_stop, since=since)
            jobs = state.sift(claimed)
            if not claimed and not self.at_hand:
                return []  # stopping, closed, or the timeout passed
            self._hold(state.track(jobs) if jobs else jobs)

    def finished(self, job: RunnableJob, result: Any, claim_next: int) -> list[RunnableJob]:
        """Hold the report back for the next backend call (this slot's next claim, if any)."""
        report = self.state.codec.finished(job, result, self.taken(job), self.clock.now())
        reports = self.reports
        with self.state.cond:
            reports.pend(reports.finished, report)
        if claim_next:
            return self.claim(claim_next)
        reports.flush()
        return []

    def taken(self, job: RunnableJob) -> float | None:
        """When a slot took ``job`` (queue clock; None if not claimed ahead); its runtime,
        finished or failed, goes into the average that decides on claiming ahead."""
        given = self.given.pop(job.id, None)
        if given is None:
            return None
        runtime = time.monotonic() - given[0]
        recent = self.recent_runtime
        self.recent_runtime = runtime if recent is None else 0.8 * recent + 0.2 * runtime
        return given[1]

    # ------------------------------------------------------------------ stopping
    def stop_claiming(self) -> None:
        """Write the pending reports, put back the jobs at hand (not started)."""
        self.reports.flush()
        state = self.state
        with state.cond:
            spare = list(self.at_hand)
            self.at_hand.clear()
            for job in spare:
                state.running.pop(job.id, None)
        state.put_back(spare)

    def drop(self, job_id: str) -> None:
        if self.at_hand:
            with self.state.cond:
                for waiting in [job for job in self.at_hand if job.id == job_id]:
                    self.at_hand.remove(waiting)
        self.given.pop(job_id, None)

    def clear(self) -> None:
        self.at_hand.clear()

    # ------------------------------------------------------------------- helpers
    def _give(self, limit: int) -> list[RunnableJob]:
        """(Under ``state.cond``) up to ``limit`` jobs at hand for the calling slot, which
        starts them now: the time is noted for their reports and the runtime average, and the
        backend is told with the next call that they started (an attempt claimed ahead counts
        only once it started)."""
        jobs = [self.at_hand.popleft() for _ in range(min(limit, len(self.at_hand)))]
        mono, now = time.monotonic(), self.clock.now()
        reports = self.reports
        for job in jobs:
            self.given[job.id] = (mono, now)
            reports.pend(reports.started, (job.id, job.attempt))
        return jobs

    def _extra(self) -> int:
        recent = self.recent_runtime
        return self.prefetch if recent is not None and recent < PREFETCH_BELOW else 0

    def _hold(self, jobs: list[RunnableJob]) -> None:
        """Keep claimed jobs at hand; once the worker is stopping, put them back at once."""
        if not jobs:
            return
        state = self.state
        with state.cond:
            if not state.draining:
                self.at_hand.extend(jobs)
                return
            for job in jobs:
                state.running.pop(job.id, None)
        state.put_back(jobs)
        with state.cond:
            state.cond.notify_all()
            if not state.running:
                state.changed()

    def _claim_stop(self) -> bool:
        """A blocked claim of a batching slot ends on a stop, or once jobs are at hand."""
        return self.state.stopping.is_set() or bool(self.at_hand)

    def _end_burst_if_over(self) -> None:
        """(A burst slot that found nothing, nothing of its worker running or being claimed)
        end the burst if nothing came back and nothing runs elsewhere, unless a claim began
        meanwhile; else wait a little before looking again."""
        if self.seam.recover_expired() > 0:
            return
        over = not self.seam.others_run()
        state = self.state
        with state.cond:
            if state.done.is_set() or state.draining:
                return
            if over and not (state.running or self.claiming or self.at_hand):
                state.mark_done()
            else:
                state.cond.wait(BURST_RECHECK)
