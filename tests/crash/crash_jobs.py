"""Jobs for the crash tests: each run leaves a mark naming the job and the worker process."""

from __future__ import annotations

import os
import time
from pathlib import Path


def mark(folder: str, job: str, seconds: float = 0.0) -> str:
    """Record that ``job`` started in this process, work a little, record that it ended."""
    pid = os.getpid()
    (Path(folder) / f"{job}.{pid}.start").touch()
    if seconds:
        time.sleep(seconds)
    (Path(folder) / f"{job}.{pid}.end").touch()
    return job


def mark_item(item: list[str]) -> str:
    """``mark`` for ``map``, which passes one argument: ``[folder, job]``."""
    folder, job = item
    return mark(folder, job)
