"""Importable jobs for the SQLite backend tests (worker processes find them by import path)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def identity(x: Any) -> Any:
    return x


def note(folder: str, label: str) -> str:
    """Leave one file per run of ``label``: duplicates show up as extra files."""
    path = Path(folder) / f"{label}.{os.getpid()}.{os.urandom(4).hex()}"
    path.write_text(label, encoding="utf-8")
    return label


def rendezvous(folder: str, label: str, parties: int) -> str:
    """Leave a mark like ``note``, then wait until marks of ``parties`` processes are there:
    jobs that every worker process must take part in."""
    note(folder, label)
    deadline = time.monotonic() + 60
    while len({p.name.split(".")[1] for p in Path(folder).iterdir()}) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{parties} processes did not meet")
        time.sleep(0.005)
    return label


class Bomb:
    """Unpickling it leaves a mark: a forged pickle must never get that far."""

    def __init__(self, mark: str) -> None:
        self.mark = mark

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path(self.mark).write_text, ("unpickled",))
