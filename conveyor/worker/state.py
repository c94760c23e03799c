"""What the parts of a worker share: the jobs it runs, the lock of its rare paths, its stop
flags, and the bookkeeping of jobs coming and going.

The jobs run are kept in :attr:`WorkerState.running` (set on claim, popped on report). A dict
set or pop is atomic under the GIL, so the per-job path takes no lock; :attr:`cond` is taken
only by what is rare (a stop, a cancel) or opted into (``burst``, ``max_jobs``, batching).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from conveyor.worker.decoding import in_process

if TYPE_CHECKING:
    from conveyor.records import ClaimedJob, RunnableJob
    from conveyor.worker.decoding import Codec, Unrunnable
    from conveyor.worker.outcomes import Outcomes
    from conveyor.worker.seam import Seam

log = logging.getLogger("conveyor.worker")

#: a worker keeps what the jobs it failed for good raised, for this many jobs
KEPT_EXCEPTIONS = 10_000


class WorkerState:
    """The shared state of one worker: ``seam`` puts jobs back, ``outcomes`` says and counts,
    ``codec`` decodes what it claims, ``on_change`` is called (from any thread) when the
    worker has news for whoever waits on it (see ``Worker``)."""

    def __init__(
        self,
        seam: Seam,
        outcomes: Outcomes,
        codec: Codec,
        on_change: Callable[[], object] | None,
    ) -> None:
        self.seam = seam
        self.outcomes = outcomes
        self.codec = codec
        #: what the jobs it failed for good raised, by id (the last KEPT_EXCEPTIONS)
        self.exceptions: OrderedDict[str, BaseException] = OrderedDict()
        #: the jobs the worker runs now, by id
        self.running: dict[str, RunnableJob] = {}
        #: guards the rare paths; notified when a job ends
        self.cond = threading.Condition()
        #: set by a stop: slots finish their job and claim no more
        self.stopping = threading.Event()
        #: a plain copy of :attr:`stopping`, cheaper to test per job
        self.draining = False
        #: running jobs were put back: a claim landing now is put back too
        self.refusing = False
        #: set once the worker has no more work to claim (burst drained, max_jobs claimed)
        self.done = threading.Event()
        #: per slot thread: ``sifted`` is True when its last claim held jobs that cannot run
        self.local = threading.local()
        self._on_change = on_change

    def changed(self) -> None:
        """Tell whoever waits on the worker that something changed."""
        if self._on_change is not None:
            self._on_change()

    def track(self, jobs: list[RunnableJob]) -> list[RunnableJob]:
        """Note claimed ``jobs`` as running (and counted); return those the slot may run."""
        running, bump = self.running, self.outcomes.claimed.bump
        for job in jobs:
            running[job.id] = job
            bump()
        if self.refusing:
            return self._refuse(jobs)
        return jobs

    def _refuse(self, jobs: list[RunnableJob]) -> list[RunnableJob]:
        """Put back jobs claimed after the worker put back its running jobs."""
        with self.cond:
            late = [job for job in jobs if self.running.pop(job.id, None) is not None]
        self.put_back(late)
        return []

    def sift(self, jobs: list[ClaimedJob]) -> list[RunnableJob]:
        """The claimed jobs decoded, those that may run (:mod:`conveyor.worker.decoding`).
        The others never reach a slot: their failures are reported, said and counted here,
        and the calling slot's ``local.sifted`` notes that some were."""
        codec = self.codec
        if codec.serializer is None:  # in process: nothing can be refused (the common path)
            if len(jobs) == 1:
                return [in_process(jobs[0])]
            return [in_process(job) for job in jobs]
        runnable, unrunnable = codec.decode_all(jobs)
        if unrunnable:
            self.local.sifted = True
            self._fail_unrunnable(unrunnable)
        return runnable

    def _fail_unrunnable(self, unrunnable: list[Unrunnable]) -> None:
        """Report the failures of claimed jobs that cannot run here (refused: for good), and
        say what became of them. A report that cannot be written is logged: the job goes
        back to the queue when its lease runs out."""
        try:
            reported = self.seam.report([item.failure for item in unrunnable])
        except Exception as exc:
            log.warning(
                "worker %s: reporting that %d job(s) cannot run here failed (%s); they return"
                " to the queue when their lease runs out",
                self.seam.worker_id,
                len(unrunnable),
                exc,
            )
            return
        for item, recorded in zip(unrunnable, reported.recorded, strict=True):
            if recorded.held:
                failure = item.failure
                self.outcomes.failed(item.job, failure.error, recorded, refused=failure.final)

    def keep_exception(self, job_id: str, exception: BaseException) -> None:
        """Keep what a job raised, for whoever reads its failure in this process (the last
        :data:`KEPT_EXCEPTIONS`)."""
        kept = self.exceptions
        kept[job_id] = exception
        if len(kept) > KEPT_EXCEPTIONS:
            kept.popitem(last=False)

    def ended(self, job: RunnableJob | None) -> None:
        """A job of this worker ended (``None``: already popped): wake who waits on that."""
        with self.cond:
            if job is not None and self.running.get(job.id) is job:
                del self.running[job.id]
            self.cond.notify_all()
            idle = not self.running
        if idle and self.draining:
            self.changed()

    def put_back(self, jobs: list[RunnableJob]) -> list[str]:
        """Requeue ``jobs`` (no longer this worker's); return the ids put back. One that cannot
        be is logged: its lease runs out and it goes back to the queue then."""
        requeued = []
        for job in jobs:
            try:
                if self.seam.requeue(job):
                    requeued.append(job.id)
            except Exception as exc:
                log.warning(
                    "worker %s: putting back job %s failed (%s); it returns to the queue when"
                    " its lease runs out",
                    self.seam.worker_id,
                    job.id,
                    exc,
                )
        self.outcomes.requeued += len(requeued)
        return requeued

    def mark_done(self) -> None:
        """The worker has no more work to claim."""
        self.done.set()
        with self.cond:
            self.cond.notify_all()
        self.changed()
