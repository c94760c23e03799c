"""Errors raised by conveyor.

The tree::

    ConveyorError
    ├── InvalidJob (also ValueError)       bad input at put; nothing was changed
    │   ├── UnknownDependency
    │   ├── DuplicateJob
    │   ├── DependencyCycle
    │   └── NotSerializable
    │       └── UntrustedFunction          neither a registered task nor in allow_modules
    ├── UnknownJob (also KeyError)         an id the queue does not know
    ├── JobFailed                          the job raised, timed out or its worker died
    ├── JobCancelled                       cancelled, expired, or a dependency failed
    ├── QueueFull                          put(block=False) on a queue at max_size
    ├── QueueClosed                        put on a closed queue
    ├── PayloadRefused                     a stored payload is unsigned, forged or corrupt
    ├── StorageError                       the queue's storage failed (full disk, bad file)
    └── MissingExtra (also ImportError)    an optional dependency is not installed
"""

from __future__ import annotations


class ConveyorError(Exception):
    """Base of every error conveyor raises."""


class InvalidJob(ConveyorError, ValueError):
    """A put was refused because of its input; the queue is unchanged."""


class UnknownDependency(InvalidJob):
    """A job names a dependency id the queue does not know."""


class DuplicateJob(InvalidJob):
    """A job id is already used in this queue."""


class DependencyCycle(InvalidJob):
    """The dependencies of the submitted jobs form a cycle."""


class NotSerializable(InvalidJob):
    """A function or its arguments cannot be sent where the job will run."""


class UntrustedFunction(NotSerializable):
    """A function that a durable queue's workers would refuse to run: it is neither a task
    registered with the queue nor from a module the queue allows (``allow_modules``).

    Raised at put; a worker that claims a job naming such a function fails it with this error
    without importing anything."""


class UnknownJob(ConveyorError, KeyError):
    """The queue does not know this job id (never submitted, or popped / forgotten)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id

    def __str__(self) -> str:
        return f"unknown job {self.job_id!r}: never submitted, or already popped or forgotten"


class JobFailed(ConveyorError):
    """The job failed: it raised, timed out, or its worker died.

    Attributes:
        job_id: the failed job.
        error: ``"ExceptionType: message"`` as raised where the job ran.
        error_type: the name of the exception type.
        traceback: the traceback text from where the job ran.
    """

    def __init__(self, job_id: str, error: str, error_type: str, traceback: str | None) -> None:
        super().__init__(f"job {job_id!r} failed: {error}")
        self.job_id = job_id
        self.error = error
        self.error_type = error_type
        self.traceback = traceback

    def __str__(self) -> str:
        text = f"job {self.job_id!r} failed: {self.error}"
        if self.traceback:
            text += "\n\nRemote traceback:\n" + self.traceback.rstrip()
        return text


class JobCancelled(ConveyorError):
    """The job was cancelled before it could finish; ``reason`` says why."""

    def __init__(self, job_id: str, reason: str | None) -> None:
        super().__init__(f"job {job_id!r} was cancelled: {reason or 'cancelled'}")
        self.job_id = job_id
        self.reason = reason


class QueueFull(ConveyorError):
    """The queue holds ``max_size`` jobs that have not started, and put was told not to wait."""


class QueueClosed(ConveyorError):
    """The queue was closed; it takes no more jobs."""


class PayloadRefused(ConveyorError):
    """A stored payload failed its signature check or could not be decoded; it was not run."""


class StorageError(ConveyorError):
    """The queue's storage failed: a file that cannot be opened or is not a queue database, a
    full disk. The message names the file; the storage error is chained as the cause. A put or
    claim that raised it changed nothing."""


class MissingExtra(ConveyorError, ImportError):
    """An optional dependency is missing; the message names the pip install to run."""

    def __init__(self, package: str, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs the {package!r} package: pip install 'conveyor[{extra}]'"
        )
        self.extra = extra
