"""The package's layers, read from its source (``ast``: nothing is imported).

Data flows one way, API -> backend -> worker -> executor (DESIGN §3); the imports say so:

- no circle among the imports made when a module loads, those under ``TYPE_CHECKING``
  included (an import made inside a function is listed apart: it runs later, and breaks no
  circle at load time, but it still names a dependency);
- the executors import neither the worker nor the backends: their slots see the worker
  through :class:`conveyor.executors.base.JobSource`;
- the backends import neither the worker, the facade (``conveyor.queue``) nor the executors.

An import ``from conveyor.a import b`` names ``conveyor.a.b`` when that is a module, else
``conveyor.a``; the package a module sits in is not counted as imported with it (every module
would then sit in a circle through ``conveyor/__init__.py``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "conveyor"

#: how an import is made
MODULE, TYPING, FUNCTION = "module", "TYPE_CHECKING", "function"


@dataclass
class Graph:
    """The package's internal imports: for each module, the modules it imports, by kind."""

    modules: set[str] = field(default_factory=set)
    edges: dict[str, dict[str, set[str]]] = field(default_factory=dict)

    def imports(self, module: str, *kinds: str) -> set[str]:
        """What ``module`` imports in the given ways."""
        return set().union(*(self.edges.get(module, {}).get(kind, set()) for kind in kinds))

    def add(self, module: str, kind: str, target: str) -> None:
        self.edges.setdefault(module, {}).setdefault(kind, set()).add(target)


def module_names(root: Path) -> dict[str, Path]:
    """Every module of the package under ``root``, by dotted name."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


Statement = ast.Import | ast.ImportFrom


def imports_of(tree: ast.Module) -> Iterator[tuple[str, Statement]]:
    """Each import statement of a module, with how it is made (MODULE, TYPING, FUNCTION)."""

    def walk(nodes: Iterable[ast.AST], kind: str) -> Iterator[tuple[str, Statement]]:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                yield kind, node
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from walk(ast.iter_child_nodes(node), FUNCTION)
            elif isinstance(node, ast.If) and kind == MODULE and _is_type_checking(node.test):
                yield from walk(node.body, TYPING)
                yield from walk(node.orelse, MODULE)
            else:
                yield from walk(ast.iter_child_nodes(node), kind)

    yield from walk(tree.body, MODULE)


def targets(module: str, is_package: bool, node: Statement, known: set[str]) -> Iterator[str]:
    """The package's modules an import statement names."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            name = alias.name
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                yield name
        return
    base = node.module or ""
    if node.level:
        package = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        if submodule in known:
            yield submodule
        elif base in known:
            yield base


def build_graph(root: Path = PACKAGE) -> Graph:
    """The import graph of the package under ``root``."""
    names = module_names(root)
    graph = Graph(modules=set(names))
    for module, path in names.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for kind, node in imports_of(tree):
            for target in targets(module, is_package, node, graph.modules):
                if target != module:
                    graph.add(module, kind, target)
    return graph


def cycles(graph: Graph, *kinds: str) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # the package is small: recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.imports(node, *kinds)):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph.modules):
        if node not in index:
            visit(node)
    return sorted(found)


def within(module: str, *layers: str) -> bool:
    """True if ``module`` is one of ``layers`` or inside one of them."""
    return any(module == layer or module.startswith(layer + ".") for layer in layers)


def crossings(graph: Graph, layer: str, forbidden: tuple[str, ...]) -> list[str]:
    """Every import (of any kind) from a module of ``layer`` into a ``forbidden`` layer."""
    return sorted(
        f"{module} -> {target} ({kind})"
        for module in graph.modules
        if within(module, layer)
        for kind in (MODULE, TYPING, FUNCTION)
        for target in graph.imports(module, kind)
        if within(target, *forbidden)
    )


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph()


# ---------------------------------------------------------------------------- the rules
#: the layers whose modules may sit in no circle at all, checked on their own so that the
#: circles left elsewhere, should any come back, hide none of theirs
CORE = ("conveyor.worker", "conveyor.executors", "conveyor.backends", "conveyor.runner")


def test_no_import_circle_at_load_time(graph: Graph) -> None:
    assert cycles(graph, MODULE, TYPING) == []


def test_no_import_circle_through_the_worker_executors_or_backends(graph: Graph) -> None:
    through = [c for c in cycles(graph, MODULE, TYPING) if any(within(m, *CORE) for m in c)]
    assert through == []


def test_executors_import_neither_the_worker_nor_the_backends(graph: Graph) -> None:
    assert crossings(graph, "conveyor.executors", ("conveyor.worker", "conveyor.backends")) == []


def test_backends_import_neither_the_worker_the_facade_nor_the_executors(graph: Graph) -> None:
    forbidden = ("conveyor.worker", "conveyor.queue", "conveyor.executors")
    assert crossings(graph, "conveyor.backends", forbidden) == []


# ------------------------------------------------------- the reading itself can fail
def test_the_graph_sees_the_package(graph: Graph) -> None:
    assert {"conveyor", "conveyor.job", "conveyor.runner", "conveyor.executors.base"} <= (
        graph.modules
    )
    assert "conveyor.job" in graph.imports("conveyor.records", MODULE)
    assert graph.imports("conveyor.executors", FUNCTION) >= {
        "conveyor.executors.thread",
        "conveyor.executors.process",
    }


def test_each_kind_of_import_is_told_apart(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("from pkg import a\n")
    (root / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from pkg.sub import b\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.sub.c import C\n"
        "else:\n"
        "    import pkg.d\n"
        "def f():\n"
        "    from . import e\n"
    )
    (root / "sub" / "__init__.py").write_text("from .b import B\n")
    (root / "sub" / "b.py").write_text("B = 1\n")
    (root / "sub" / "c.py").write_text("from ..a import x\n")
    for name in ("d", "e"):
        (root / f"{name}.py").write_text("")

    graph = build_graph(root)

    assert graph.imports("pkg.a", MODULE) == {"pkg.sub.b", "pkg.d"}
    assert graph.imports("pkg.a", TYPING) == {"pkg.sub.c"}
    assert graph.imports("pkg.a", FUNCTION) == {"pkg.e"}
    assert graph.imports("pkg.sub", MODULE) == {"pkg.sub.b"}
    assert cycles(graph, MODULE) == []
    assert cycles(graph, MODULE, TYPING) == [["pkg.a", "pkg.sub.c"]]
    assert crossings(graph, "pkg.sub", ("pkg.a",)) == ["pkg.sub.c -> pkg.a (module)"]
