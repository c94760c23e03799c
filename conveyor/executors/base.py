"""The Executor protocol: one strategy per execution model (thread, process, async, inline)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from conveyor.worker import Worker


class Executor(Protocol):
    """Runs claimed jobs in its slots and enforces their timeouts.

    Each slot loops: ``worker.claim()``, run the job, ``worker.finished()`` or
    ``worker.failed()``, until ``worker.claim()`` returns nothing.
    """

    mode: str
    slots: int

    def start(self, worker: Worker) -> None:
        """Start the slots; they claim through ``worker``."""
        ...

    def stop_job(self, job_id: str, reason: str) -> None:
        """Stop a running job (cancelled); no report follows."""
        ...

    def stop(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Stop the slots; with ``wait``, after their running jobs end."""
        ...


def timeout_message(seconds: float) -> str:
    """The error text of a job stopped at its timeout."""
    return f"job exceeded its timeout of {seconds:g} s and was stopped"
