"""Importable jobs for the SQLite backend tests (worker processes find them by import path)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def identity(x: Any) -> Any:
    return x


def note(folder: str, label: str) -> str:
    """Leave one file per run of ``label``: duplicates show up as extra files."""
    path = Path(folder) / f"{label}.{os.getpid()}.{os.urandom(4).hex()}"
    path.write_text(label, encoding="utf-8")
    return label


class Bomb:
    """Unpickling it leaves a mark: a forged pickle must never get that far."""

    def __init__(self, mark: str) -> None:
        self.mark = mark

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path(self.mark).write_text, ("unpickled",))
