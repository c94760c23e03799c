"""conveyor: one Python job queue, from the threads of a script to worker processes sharing a
SQLite file."""

# the queue and its handles
from conveyor.context import context

# errors
from conveyor.errors import (
    ConveyorError,
    DependencyCycle,
    DuplicateJob,
    InvalidJob,
    JobCancelled,
    JobFailed,
    MissingExtra,
    NotSerializable,
    PayloadRefused,
    QueueClosed,
    QueueFull,
    StorageError,
    UnknownDependency,
    UnknownJob,
    UntrustedFunction,
)
from conveyor.handle import Job
from conveyor.job import JobRecord, Status
from conveyor.observe import plot
from conveyor.queue import Queue
from conveyor.task import Task
from conveyor.tracking import progress

__version__ = "0.1.0"

__all__ = [
    "ConveyorError",
    "DependencyCycle",
    "DuplicateJob",
    "InvalidJob",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobRecord",
    "MissingExtra",
    "NotSerializable",
    "PayloadRefused",
    "Queue",
    "QueueClosed",
    "QueueFull",
    "Status",
    "StorageError",
    "Task",
    "UnknownDependency",
    "UnknownJob",
    "UntrustedFunction",
    "__version__",
    "context",
    "plot",
    "progress",
]
