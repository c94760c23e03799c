"""How a worker in another process finds a job's function: by registered task name, or by
import path ``module:qualname``. Lambdas, closures and functions of ``__main__`` have neither,
so durable backends refuse them at put.

A stored reference is data anyone who can write the store may change, so a worker trusts only
two kinds: a task registered with its queue (recognised by name or by import path, without any
import), and a function of a module the queue allows (:class:`Allowed`). Anything else is
refused before any import; an allowed reference must also name the function by its own
``module:qualname``, so ``allowed_module:os.system`` (an attribute the module happened to
import) is refused too.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from conveyor.errors import NotSerializable, UntrustedFunction


class CannotLoad(LookupError):
    """An allowed function could not be loaded: importing its module raised (the exception is
    the ``__cause__``, any type: a module may raise anything at import), or the module has no
    such function. Unlike a refusal, a deploy may mend it: the job's attempt failed."""


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


def path_of(fn: Callable[..., Any]) -> str | None:
    """``module:qualname`` as ``fn`` names itself (no import, no check); None if it cannot."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    return f"{module}:{qualname}"


class Allowed:
    """The modules whose functions a durable queue's workers may import and run.

    ``"myapp.jobs"`` allows that module only; ``"myapp.*"`` allows every submodule of the
    package ``myapp`` at any depth (``myapp.jobs``, ``myapp.jobs.images``) but not ``myapp``
    itself: list ``"myapp"`` too for functions of the package's ``__init__``.
    """

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        patterns = tuple(patterns)
        self.patterns = patterns
        self._exact = frozenset(p for p in patterns if not p.endswith(".*"))
        self._packages = tuple(p[:-1] for p in patterns if p.endswith(".*"))  # "myapp."

    def __contains__(self, module: object) -> bool:
        return isinstance(module, str) and (
            module in self._exact or module.startswith(self._packages)
        )

    def __repr__(self) -> str:
        return f"Allowed({list(self.patterns)!r})"


def how_to_trust(module: str) -> str:
    """The two ways to make a function of ``module`` runnable, for error messages."""
    return (
        "register it as a task of the queue (@q.task, or q.task()(fn) for an existing "
        f"function) in the app that workers import, or allow its module: "
        f"allow_modules=[{module!r}] (environment: CONVEYOR_ALLOW_MODULES={module})"
    )


def split(ref: str) -> tuple[str, str]:
    """``module:qualname`` -> its two parts, each checked to be dotted identifiers (a stored
    reference is not trusted: no path tricks, no dunder attributes)."""
    module, _, qualname = ref.partition(":")
    if (
        not _dotted(module)
        or not _dotted(qualname)
        or any(part.startswith("__") and part.endswith("__") for part in qualname.split("."))
    ):
        raise LookupError(f"bad function reference {ref!r}; expected 'module:qualname'")
    return module, qualname


def resolve(ref: str, allowed: Allowed) -> Callable[..., Any]:
    """The function ``module:qualname`` names, imported only if ``allowed`` has its module.

    Raises:
        UntrustedFunction: the module is not allowed (nothing was imported), or the name leads
            to something that is not that module's own function.
        CannotLoad: importing the module raised, or it has no such function.
        LookupError: a malformed reference.
    """
    module_name, qualname = split(ref)
    if module_name not in allowed:
        raise UntrustedFunction(
            f"refused to run {ref!r}: it is not a task registered with this queue and module "
            f"{module_name!r} is not allowed (nothing was imported); to run it, "
            + how_to_trust(module_name)
        )
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:  # whatever the module's code raised at import
        raise CannotLoad(
            f"importing module {module_name!r} (for {ref}) failed: {exc or type(exc).__name__}"
        ) from exc
    target = _walk(module, qualname, ref)
    fn = getattr(target, "fn", target)  # a Task wraps the function
    if not callable(fn):
        raise LookupError(f"{ref!r} is not callable")
    if path_of(fn) != ref:
        raise UntrustedFunction(
            f"refused to run {ref!r}: it leads to {path_of(fn) or repr(fn)}, which is not a "
            f"function defined in {module_name!r}"
        )
    return fn  # type: ignore[no-any-return]


def _walk(module: ModuleType, qualname: str, ref: str) -> Any:
    """``module.a.b`` for ``a.b``, never stepping into another module."""
    target: Any = module
    for part in qualname.split("."):
        if isinstance(target, ModuleType) and target is not module:
            raise UntrustedFunction(
                f"refused to run {ref!r}: it reaches into module {target.__name__!r}, which "
                f"{module.__name__!r} imported"
            )
        target = getattr(target, part, None)
        if target is None:
            raise CannotLoad(f"{ref!r} not found: no {qualname!r} in module {module.__name__!r}")
    return target


def _dotted(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))


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
