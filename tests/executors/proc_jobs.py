"""Importable job functions for worker processes (forkserver children import them by name)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import conveyor

#: how many times ``counting_context`` ran in this process
CONTEXT_CALLS = 0


def pid_of(_item: Any = None) -> int:
    return os.getpid()


def counting_context() -> dict[str, Any]:
    """A context function that counts its calls in the process it runs in."""
    global CONTEXT_CALLS
    CONTEXT_CALLS += 1
    return {"pid": os.getpid(), "token": uuid.uuid4().hex}


def context_report() -> tuple[int, Any, int]:
    """(this pid, this worker's context value, how often the context function ran here)."""
    return os.getpid(), conveyor.context(), CONTEXT_CALLS


def exit_hard() -> None:
    os._exit(1)


def kill_self() -> None:
    os.kill(os.getpid(), 9)


def raise_from_a_named_function(value: int) -> None:
    raise RuntimeError(f"bad value {value}")


def write_pid_then_spin(path: str) -> None:
    """Announce this process's pid in ``path``, then never return."""
    tmp = Path(path + ".tmp")
    tmp.write_text(str(os.getpid()))
    tmp.replace(path)
    while True:
        time.sleep(0.01)


def progress_then_sleep(fraction: float, message: str) -> None:
    """Report progress, then sleep far past any test's timeout."""
    conveyor.progress(fraction, message)
    time.sleep(60)


def progress_then_return(fraction: float, message: str) -> str:
    """Report progress and return the message."""
    conveyor.progress(fraction, message)
    return message
