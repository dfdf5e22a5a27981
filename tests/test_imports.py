"""The package's imports form no circle: every module can be read (and tested) from the floor below up.

Walks the source of `wwwserve/` with `ast` (every import statement: module level, inside functions,
and under `if TYPE_CHECKING:`) and fails on any strongly connected group of modules. An import of a
module's parent package through its name (`from wwwserve.agent import X`) counts as an import of
that package's `__init__`; the implicit run of parent `__init__` files does not (Python runs them
first, so they cannot close a circle on their own).
"""

from __future__ import annotations

import ast
from collections.abc import Collection
from pathlib import Path

import wwwserve

ROOT = Path(wwwserve.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


def _edges(source: str, name: str, package: str, mods: Collection[str]) -> set[str]:
    """The package's modules that `source` (module `name` in `package`) imports, anywhere in it."""
    edges: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            edges.update(a.name for a in node.names if a.name in mods)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, `level - 1` floors up
                floors = package.split(".")
                base = ".".join(floors[: len(floors) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in mods:
                    edges.add(full)
                elif base in mods:
                    edges.add(base)
    edges.discard(name)
    return edges


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {
        name: _edges(
            path.read_text(), name, name if path.name == "__init__.py" else name.rsplit(".", 1)[0], mods
        )
        for name, path in mods.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    group.append(w)
                    if w == v:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def test_the_walker_finds_a_circle_when_there_is_one() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_walker_sees_type_checking_function_level_and_relative_imports() -> None:
    source = """
from typing import TYPE_CHECKING
from . import b
if TYPE_CHECKING:
    from p.c import Thing
def f():
    import p.d
from p import e
"""
    mods = {"p", "p.a", "p.b", "p.c", "p.d"}
    assert _edges(source, "p.a", "p", mods) == {"p.b", "p.c", "p.d", "p"}  # `e` is a name in p's __init__
    graph = _graph()
    assert "wwwserve.agent.dispatch" in graph["wwwserve.agent.agent"]
    assert len(graph) > 50 and sum(map(len, graph.values())) > 200


def test_no_import_circle_in_the_package() -> None:
    assert _cycles(_graph()) == []


def test_no_part_of_the_agent_imports_the_agent() -> None:
    graph = _graph()
    parts = ("dispatch", "credits", "duels", "service", "ports", "relay", "replies", "peers", "beats")
    for part in parts:
        assert "wwwserve.agent.agent" not in graph[f"wwwserve.agent.{part}"], part
        assert "wwwserve.agent" not in graph[f"wwwserve.agent.{part}"], part  # nor through __init__
