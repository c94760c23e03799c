"""Jobs for the observe tests: importable functions, so that a SQLite queue can store them."""

from __future__ import annotations


def add(a: int, b: int = 0) -> int:
    return a + b


def boom(message: str) -> None:
    raise RuntimeError(message)
