"""Importable jobs of the security tests, and a payload whose unpickling leaves a mark."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def echo(x: Any) -> Any:
    """Return the argument."""
    return x


def arm(mark: str) -> Bomb:
    """Return a Bomb: its result is a pickle that leaves ``mark`` when read."""
    return Bomb(mark)


class Bomb:
    """Unpickling it writes the file ``mark``: a payload nobody may decode unasked."""

    def __init__(self, mark: str) -> None:
        self.mark = mark

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path(self.mark).write_text, ("unpickled",))
