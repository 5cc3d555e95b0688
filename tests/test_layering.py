"""The package's layering, computed from every module's imports (function-level and type-only ones included).

- ``edr.runtime`` is the framework: it imports nothing of edr outside itself.
- No import cycle between edr's packages (``edr.detect``, ``edr.config``...):
  each depends on others one way only.
- ``edr.platform`` is the seam every layer asks about the operating system:
  it imports nothing of edr outside itself, and outside it (and the sensors
  and service installers, platform-specific by nature) no module looks at
  ``sys.platform``, imports a Linux- or Windows-only module or names a
  /proc path.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

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


#: Where platform-specific code may live: the seam itself, the two sensors, the service installers.
PLATFORM_SPECIFIC: Final = ("edr.platform", "edr.sources.ebpf", "edr.sources.etw", "edr.service")
#: Modules that exist on one OS only (``win32*`` too, see :func:`os_only`). bcc is the eBPF sensor's
#: library, not an OS module: ``edr.agent`` probes for it before starting that sensor.
OS_ONLY_MODULES: Final = frozenset({"pwd", "grp", "resource", "fcntl", "termios", "msvcrt", "winreg", "_winapi",
                                    "pywintypes", "ntsecuritycon"})


def os_only(module: str) -> bool:
    """Whether importing ``module`` ties the importer to one OS."""
    top = module.split(".")[0]
    return top in OS_ONLY_MODULES or top.startswith("win32")


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring constants in ``tree`` (they may explain /proc; code may not read it)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def platform_findings(source: str) -> list[str]:
    """What in ``source`` (a module's text) is platform-specific: ``sys.platform``, OS-only imports, /proc paths."""
    found = []
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if (isinstance(node, ast.Attribute) and node.attr == "platform" and isinstance(node.value, ast.Name)
                and node.value.id == "sys"):
            found.append(f"line {line}: sys.platform")
        elif isinstance(node, ast.ImportFrom) and node.module == "sys" and any(a.name == "platform"
                                                                              for a in node.names):
            found.append(f"line {line}: from sys import platform")
        elif isinstance(node, ast.Import):
            found.extend(f"line {line}: import {a.name}" for a in node.names if os_only(a.name))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and os_only(node.module):
            found.append(f"line {line}: from {node.module} import ...")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("/proc")
              and id(node) not in docstrings):
            found.append(f"line {line}: {node.value!r}")  # a path (f-strings' literal parts included)
    return found


def platform_violations(sources: Mapping[str, str]) -> dict[str, list[str]]:
    """Module -> its platform-specific findings, for modules outside :data:`PLATFORM_SPECIFIC`."""
    out = {}
    for module, source in sources.items():
        if module == "edr" or module.startswith(tuple(f"{p}." for p in PLATFORM_SPECIFIC)) \
                or module in PLATFORM_SPECIFIC:
            continue
        findings = platform_findings(source)
        if findings:
            out[module] = findings
    return out


def module_sources() -> dict[str, str]:
    return {module_name(p): p.read_text(encoding="utf-8") for p in sorted((SRC / "edr").rglob("*.py"))}


def test_the_platform_seam_imports_nothing_of_edr_outside_itself() -> None:
    outside = {m: sorted(t for t in targets if not t.startswith("edr.platform"))
               for m, targets in module_imports().items() if m.startswith("edr.platform")}
    assert {m: t for m, t in outside.items() if t} == {}


def test_only_the_platform_seam_sensors_and_service_are_platform_specific() -> None:
    sources = module_sources()
    assert len(sources) > 150
    assert platform_violations(sources) == {}
    # the check sees what the seam holds
    assert platform_findings(sources["edr.platform.linux.users"]) == ["line 5: import pwd"]
    assert any("sys.platform" in f for f in platform_findings(sources["edr.platform.private_files"]))


def test_the_platform_check_finds_what_it_must() -> None:
    """Planted in real modules, each kind of violation is reported with its line; inside the seam it is not."""
    real = module_sources()
    planted = {
        "edr.health": real["edr.health"] + "\nimport resource\n",
        "edr.agent": real["edr.agent"] + "\nMODE = 'windows' if sys.platform == 'win32' else 'linux'\n",
        "edr.alerts.daily_file": real["edr.alerts.daily_file"] + "\nfrom win32security import GetFileSecurity\n",
        "edr.scan.actor": real["edr.scan.actor"] + "\ndef pids():\n    return os.listdir('/proc')\n",
        "edr.scan.memory": real["edr.scan.memory"] + "\ndef rss(pid):\n    return open(f'/proc/{pid}/statm').read()\n",
        "edr.enrich.seed": real["edr.enrich.seed"] + '\ndef seed(proc="/proc"):\n    """Read /proc/<pid>."""\n',
        "edr.instance_lock": real["edr.instance_lock"] + "\ndef lock():\n    import fcntl, msvcrt\n",
        "edr.config": real["edr.config"] + "\nfrom sys import platform\n",
        "edr.platform.facade": real["edr.platform.facade"] + "\nimport pwd\n",
        "edr.sources.ebpf.loader": real["edr.sources.ebpf.loader"] + "\nimport fcntl\n",
    }
    found = platform_violations(planted)
    lines = {m: len(planted[m].splitlines()) for m in planted}
    assert found == {
        "edr.health": [f"line {lines['edr.health']}: import resource"],
        "edr.agent": [f"line {lines['edr.agent']}: sys.platform"],
        "edr.alerts.daily_file": [f"line {lines['edr.alerts.daily_file']}: from win32security import ..."],
        "edr.scan.actor": [f"line {lines['edr.scan.actor']}: '/proc'"],
        "edr.scan.memory": [f"line {lines['edr.scan.memory']}: '/proc/'"],
        "edr.instance_lock": [f"line {lines['edr.instance_lock']}: import fcntl",
                              f"line {lines['edr.instance_lock']}: import msvcrt"],
        "edr.enrich.seed": [f"line {lines['edr.enrich.seed'] - 1}: '/proc'"],  # not the docstring below it
        "edr.config": [f"line {lines['edr.config']}: from sys import platform"],
    }


def test_the_tests_mirror_the_source() -> None:
    """One test package per source package: tests/<path>/ exists only where src/edr/<path>/ does.

    tests/live is the exception, on purpose: it runs the whole agent (every package at once).
    """
    tests = Path(__file__).resolve().parent
    src = tests.parent / "src" / "edr"
    packages = sorted(p.parent.relative_to(tests) for p in tests.rglob("__init__.py") if p.parent != tests)
    strays = [str(p) for p in packages if p.parts[0] != "live" and not (src / p / "__init__.py").exists()]
    assert strays == [], f"test packages with no source package of that name: {strays}"
