"""Every backend's engine implements the same steps under the same names (conveyor.rules)."""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest

from conveyor import rules
from conveyor.backends.memory.engine import Engine as MemoryEngine
from conveyor.backends.sqlite.engine import Engine as SQLiteEngine

#: steps only one engine has, and why
OWN_STEPS = {
    MemoryEngine: {
        "add_timer": "timers in a heap (SQLite: indexed columns)",
        "timer_wait": "how long a blocked wait may sleep (SQLite: a query)",
        "set_status": "status counts kept in memory (SQLite: COUNT)",
        "emit": "events (SQLite: the backend's event helper)",
        "drop": "forgetting an entry's bookkeeping",
    },
    SQLiteEngine: {
        "take_back": "leases: workers in other processes can die (memory has none)",
        "cancel_quietly": "a dependent cancelled inside the cascade (memory: end)",
        "advance_joined": "lanes joined in one step advance once all joined (memory: work list)",
    },
}


def steps(engine: type) -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(engine, inspect.isfunction)
        if not name.startswith("_")
    }


@pytest.mark.parametrize("engine", [MemoryEngine, SQLiteEngine], ids=["memory", "sqlite"])
def test_every_engine_has_every_step(engine: type) -> None:
    assert set(rules.ENGINE_STEPS) - steps(engine) == set()


@pytest.mark.parametrize("engine", [MemoryEngine, SQLiteEngine], ids=["memory", "sqlite"])
def test_an_engine_has_no_step_of_its_own_that_is_not_explained(engine: type) -> None:
    assert steps(engine) - set(rules.ENGINE_STEPS) == set(OWN_STEPS[engine])


OPTIONS = {"exclusive", "incompatible", "max_concurrency"}


def option_reads(engine: type) -> list[str]:
    """The engine's methods, other than ``insert`` (which compiles and stores a job), that read
    an option the compiler owns: as an attribute or as a row's column."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(engine)))
    found = []
    for method in tree.body[0].body:  # type: ignore[attr-defined]
        if not isinstance(method, ast.FunctionDef) or method.name == "insert":
            continue
        for node in ast.walk(method):
            name = (
                node.attr
                if isinstance(node, ast.Attribute)
                else node.value
                if isinstance(node, ast.Constant) and isinstance(node.value, str)
                else None
            )
            if name in OPTIONS:
                found.append(f"{method.name}: {name}")
    return found


@pytest.mark.parametrize("engine", [MemoryEngine, SQLiteEngine], ids=["memory", "sqlite"])
def test_no_engine_reads_an_option_the_compiler_owns(engine: type) -> None:
    """Groups, incompatibility and limits reach an engine only as the keys of a job's plan."""
    assert option_reads(engine) == []


def test_the_option_check_sees_a_read() -> None:
    class Reads:
        def conflict(self, entry: object) -> object:
            return entry.opts.exclusive  # type: ignore[attr-defined]

    assert option_reads(Reads) == ["conflict: exclusive"]
