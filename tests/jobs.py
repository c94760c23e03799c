"""Importable job functions, so worker processes can find them by reference."""

from __future__ import annotations

import os
import time
from typing import Any

import conveyor


def double(x: int) -> int:
    return x * 2


def add(a: int, b: int = 0) -> int:
    return a + b


def echo(*args: Any, **kwargs: Any) -> Any:
    return args, kwargs


def boom(message: str = "boom") -> None:
    raise ValueError(message)


def sleep_then(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def pid() -> int:
    return os.getpid()


def read_context() -> Any:
    return conveyor.context()


def make_context() -> dict[str, int]:
    return {"pid": os.getpid()}


def spin_forever() -> None:
    while True:
        time.sleep(0.01)


async def async_double(x: int) -> int:
    return x * 2
