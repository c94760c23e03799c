"""What a worker decodes and encodes: the jobs it claims, the results it reports.

A backend hands over jobs still encoded (:class:`~conveyor.records.ClaimedJob`); the worker
turns each into a :class:`~conveyor.records.RunnableJob` with its :class:`Codec`, which the
Queue builds from what it knows (its serializer, the functions it trusts). A durable job's
checks go in this order: the signature (with a secret) before any import or decode, the trust
(which modules may run) before any import, then the arguments. A job that fails a check is
refused (failed for good: no retry can mend a forged, untrusted or corrupt job); one whose
function cannot be loaded (importing its module raised, or it has no such function) has a
failed attempt, retried if it has retries left.

On ``memory://`` nothing is encoded: the payload (a :class:`~conveyor.records.Call`, or in
process mode the bytes for the child process) and the result pass through untouched.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from conveyor.errors import NotSerializable
from conveyor.job import ErrorInfo
from conveyor.records import Call, Failure, Finished, RunnableJob
from conveyor.references import Allowed, CannotLoad, resolve

if TYPE_CHECKING:
    from conveyor.records import ClaimedJob, Report
    from conveyor.serializer import Serializer


class Unrunnable(NamedTuple):
    """A claimed job that cannot run here, and the failure to report for it (``final``:
    refused)."""

    job: ClaimedJob
    failure: Failure

    @property
    def refused(self) -> bool:
        """True if no retry can mend it (its signature, trust or payload is bad)."""
        return self.failure.final


def _trust_nothing(ref: str) -> Callable[..., Any]:
    return resolve(ref, Allowed())


class Codec:
    """Decodes claimed jobs and encodes results for one queue.

    Args:
        serializer: the durable backend's serializer; None for ``memory://`` (payloads and
            results pass through untouched).
        resolve: the function a stored reference names, if the queue trusts it (raises
            otherwise: UntrustedFunction, LookupError, CannotLoad); default: trust nothing.
    """

    def __init__(
        self,
        serializer: Serializer | None = None,
        resolve: Callable[[str], Callable[..., Any]] | None = None,
    ) -> None:
        self.serializer = serializer
        self._resolve = resolve or _trust_nothing

    def decode_all(self, jobs: list[ClaimedJob]) -> tuple[list[RunnableJob], list[Unrunnable]]:
        """The jobs that may run, decoded, and those that cannot, with their failures."""
        if self.serializer is None:
            return [in_process(job) for job in jobs], []
        runnable: list[RunnableJob] = []
        unrunnable: list[Unrunnable] = []
        for job in jobs:
            try:
                runnable.append(self.decode(job))
            except CannotLoad as exc:
                failure = Failure(job.id, job.attempt, load_error(exc))
                unrunnable.append(Unrunnable(job, failure))
            except Exception as exc:  # whatever it is, this job cannot run: never the worker
                error = ErrorInfo(type(exc).__name__, str(exc))
                unrunnable.append(Unrunnable(job, Failure(job.id, job.attempt, error, final=True)))
        return runnable, unrunnable

    def decode(self, job: ClaimedJob) -> RunnableJob:
        """``job`` as its slot runs it: its signature checked (with a secret), its function
        loaded if trusted, its arguments decoded; raises CannotLoad (the function cannot be
        loaded) or whatever refuses it (a bad signature, an untrusted module, a corrupt
        payload)."""
        serializer = self.serializer
        if serializer is None:
            return in_process(job)
        if serializer.signed:
            serializer.verify_job(job.mac, job.envelope())
        fn = self._resolve(job.ref)
        args, kwargs = serializer.loads(job.payload)  # type: ignore[arg-type]
        return RunnableJob(
            job.id, job.attempt, job.task, job.mode, fn, tuple(args), dict(kwargs), None,
            job.timeout,
        )  # fmt: skip

    def finished(
        self,
        job: RunnableJob,
        result: Any,
        started: float | None = None,
        ended: float | None = None,
    ) -> Report:
        """The report of ``job`` that returned ``result``: its result encoded for a durable
        backend; one that cannot be stored fails the job (for good, as the attempt ran)."""
        serializer = self.serializer
        if serializer is None:
            return Finished(job.id, job.attempt, result, started, ended)
        try:
            encoded = serializer.dumps(result)
        except NotSerializable as exc:
            error = ErrorInfo("NotSerializable", f"the job's result cannot be stored: {exc}")
            return Failure(job.id, job.attempt, error, started, ended, final=True)
        return Finished(job.id, job.attempt, encoded, started, ended)


def in_process(job: ClaimedJob) -> RunnableJob:
    """An in-process job: its call, or in process mode its bytes for the child process."""
    payload = job.payload
    if isinstance(payload, Call):
        return RunnableJob(
            job.id, job.attempt, job.task, job.mode, payload.fn, payload.args, payload.kwargs,
            None, job.timeout,
        )  # fmt: skip
    assert payload is None or isinstance(payload, bytes)
    return RunnableJob(job.id, job.attempt, job.task, job.mode, None, (), {}, payload, job.timeout)


def load_error(exc: CannotLoad) -> ErrorInfo:
    """A job function that could not be loaded, as its error: the type of what importing its
    module raised (LookupError: no such function), the module named, the import's traceback."""
    cause = exc.__cause__
    if cause is None:
        return ErrorInfo("LookupError", str(exc))
    return ErrorInfo(type(cause).__qualname__, str(exc), "".join(traceback.format_exception(cause)))
