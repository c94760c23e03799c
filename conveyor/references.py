"""How a worker in another process finds a job's function: by registered task name, or by
import path ``module:qualname``. Lambdas, closures and functions of ``__main__`` have neither,
so durable backends refuse them at put."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from conveyor.errors import NotSerializable


def reference(fn: Callable[..., Any], name: str) -> str:
    """The import path of ``fn`` (``module:qualname``); raises NotSerializable if it has none."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        raise NotSerializable(
            f"{name!r} cannot be found by a worker in another process: "
            + (
                "it is defined in __main__"
                if module == "__main__"
                else "a lambda or a function defined inside another function has no import path"
            )
            + "; define it at module level of an importable module, or register it with "
            "@queue.task(name=...)"
        )
    found = _lookup(module, qualname)
    if found is not fn and getattr(found, "fn", None) is not fn:
        raise NotSerializable(
            f"{name!r} is not reachable as {module}:{qualname}; define it at module level"
        )
    return f"{module}:{qualname}"


def resolve(ref: str) -> Callable[..., Any]:
    """Import ``module:qualname`` and return the function (a Task's own function if a Task)."""
    module, _, qualname = ref.partition(":")
    if not module or not qualname:
        raise LookupError(f"bad function reference {ref!r}; expected 'module:qualname'")
    target = _lookup(module, qualname)
    if target is None:
        raise LookupError(f"{ref!r} not found: no {qualname!r} in module {module!r}")
    fn = getattr(target, "fn", target)  # a Task wraps the function
    if not callable(fn):
        raise LookupError(f"{ref!r} is not callable")
    return fn  # type: ignore[no-any-return]


def _lookup(module: str, qualname: str) -> Any:
    try:
        target: Any = importlib.import_module(module)
    except ImportError:
        return None
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            return None
    return target
