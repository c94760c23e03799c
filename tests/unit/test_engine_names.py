"""Every backend's engine implements the same steps under the same names (conveyor.rules)."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from pathlib import Path

import pytest

import conveyor.backends
from conveyor import rules
from conveyor.backends.memory.engine import Engine as MemoryEngine
from conveyor.backends.redis import scripts
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
    found = []
    # the engine's own class and the parts it is made of (SQLite: lanes.Lanes)
    parts = [cls for cls in engine.__mro__ if cls is not object]
    methods = [
        method
        for part in parts
        for method in ast.parse(textwrap.dedent(inspect.getsource(part))).body[0].body  # type: ignore[attr-defined]
    ]
    for method in methods:
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


# ------------------------------------------------------------------ the Lua engine
LUA_FOLDER = Path(conveyor.backends.__file__).parent / "redis" / "lua"
#: the Lua engine's text, its parts in the order the library loads them
LUA_ENGINE = "\n".join(
    (LUA_FOLDER / f"{part}.lua").read_text(encoding="utf-8") for part in scripts.ENGINE
)
#: a Lua function named after a step it implements under another name (a Lua keyword)
LUA_RENAMED = {"end_": "end"}
#: the Lua engine's own functions, and why
LUA_OWN = {
    "take_back": "leases, as SQLite's",
    "cancel_quietly": "a dependent cancelled inside the cascade, as SQLite's",
    "advance_joined": "lanes joined in one step advance once all joined, as SQLite's",
    "drop": "forgetting a job and its bookkeeping (memory's drop)",
    "retry_delay": "rules.retry_delay (Lua cannot call Python)",
    "cascade_reason": "rules.cascade_reason (Lua cannot call Python)",
    "pyrepr": "Python's repr of a str, for the reasons above",
    "lane_name": "a lane's name as rules.lane_reason shows it",
    "lane_top": "the front of a lane's order (SQLite: LANE_TOP)",
    "set_status": "the per-status sets (SQLite: the status column, indexed)",
    "unindex": "a job leaves the indexes of its status (SQLite: partial indexes do it)",
    "event": "events (SQLite: the backend's event helper)",
    "begin": "a call's arguments, and what it collects, reset (the library is loaded once)",
    "finish": "a call's reply: wake-up markers, the message on the channel, the events",
    "made_ready": "a wake-up marker for a job made ready (memory, SQLite: a version moves)",
    "hand_over": "a job made ready started for an idle slot blocked on its own key (memory,"
    " SQLite: the slots wake and claim)",
    "put_back": "a running attempt back to waiting, uncounted (memory, SQLite: in requeue)",
    "num": "a number as text without losing digits",
    "jkey": "the key of a job's hash",
    "row": "the fields of a job's hash (SQLite: a SELECT)",
    "append": "list concatenation",
    "member": "a job's member in the ordered sets",
    "id_of": "the job id in such a member",
}


def lua_functions(text: str) -> dict[str, str]:
    """Every function of the Lua engine (``local function name`` or ``name = function``) and
    its body (the text up to the next function)."""
    pattern = re.compile(r"^(?:local function (\w+)|(\w+) = function)\(", re.MULTILINE)
    found = list(pattern.finditer(text))
    bodies = {}
    for i, match in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(text)
        name = match.group(1) or match.group(2)
        bodies[LUA_RENAMED.get(name, name)] = text[match.end() : end]
    return bodies


def test_the_lua_engine_has_every_step_and_explains_its_own() -> None:
    functions = set(lua_functions(LUA_ENGINE))
    assert set(rules.ENGINE_STEPS) - functions == set()
    assert functions - set(rules.ENGINE_STEPS) == set(LUA_OWN)


def test_the_lua_engine_reads_no_option_the_compiler_owns() -> None:
    bodies = lua_functions(LUA_ENGINE)
    found = [
        f"{name}: {option}"
        for name, body in bodies.items()
        if name != "insert"
        for option in OPTIONS
        if re.search(rf"\b{option}\b", body)
    ]
    assert found == []


def test_the_lua_name_check_sees_a_function() -> None:
    text = "local function conflict(r)\n  return r.exclusive\nend\nafter_end = function(id)\nend\n"
    assert set(lua_functions(text)) == {"conflict", "after_end"}
