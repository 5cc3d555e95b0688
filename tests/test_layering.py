"""The package's layering, computed from every module's imports (function-level and type-only ones included).

- ``edr.runtime`` is the framework: it imports nothing of edr outside itself.
- No import cycle between edr's packages (``edr.detect``, ``edr.config``...):
  each depends on others one way only.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

from tests.conftest import REPO

SRC = REPO / "src"


def module_name(path: Path) -> str:
    """``src/edr/detect/actor.py`` -> ``edr.detect.actor``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every edr module ``path`` imports, wherever the import statement is."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in found if n == "edr" or n.startswith("edr.")}


def module_imports() -> dict[str, set[str]]:
    """Module -> the edr modules it imports (names that are not modules are kept; they share a prefix)."""
    return {module_name(p): imports_of(p) for p in sorted((SRC / "edr").rglob("*.py"))}


def package(module: str) -> str:
    """The unit of layering: ``edr.detect.sigma.engine`` -> ``edr.detect``; top-level modules are their own."""
    parts = module.split(".")
    return ".".join(parts[:2])


def package_graph(imports: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    """Package -> the other packages it imports (``edr`` itself, the version, does not count)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for module, targets in imports.items():
        src = package(module)
        graph[src]
        for target in targets:
            dst = package(target)
            if dst != src and dst != "edr":
                graph[src].add(dst)
    return dict(graph)


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_runtime_imports_nothing_of_edr_outside_itself() -> None:
    outside = {m: sorted(t for t in targets if not t.startswith("edr.runtime"))
               for m, targets in module_imports().items() if m.startswith("edr.runtime")}
    assert {m: t for m, t in outside.items() if t} == {}


def test_no_import_cycle_between_packages() -> None:
    graph = package_graph(module_imports())
    assert len(graph) > 10  # the walk found the packages
    assert cycles(graph) == []


def test_the_cycle_finder_finds_what_it_must() -> None:
    """The check above can fail: a planted cycle, direct or through a third package, is reported."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    real = package_graph(module_imports())
    planted = {k: set(v) for k, v in real.items()}
    planted["edr.event"].add("edr.detect")  # detect imports event: this closes a loop
    assert any({"edr.detect", "edr.event"} <= set(c) for c in cycles(planted))
