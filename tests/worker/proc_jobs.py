"""Importable jobs for worker processes of the worker tests."""

from __future__ import annotations

import os
import time
from pathlib import Path


def write_pid_then_sleep(path: str, seconds: float) -> None:
    """Record this process's pid in ``path`` (written whole, then renamed), then sleep."""
    partial = Path(path + ".partial")
    partial.write_text(str(os.getpid()))
    partial.rename(path)
    time.sleep(seconds)
