"""Import edr as a Windows run would, on this machine: ``python -m tests.platform.as_windows``.

Every third-party and standard module edr imports is loaded first, as it
is (on Windows they load their Windows parts; here they must be whole to
be loaded at all). Then the Linux-only modules (``pwd``, ``resource``,
``fcntl``, ``bcc``) are blocked (``sys.modules[name] = None`` makes any later
import of them fail), ``sys.platform`` becomes ``win32``, and every edr
module a Windows run may import is imported: all of them except the eBPF
sensor and ``edr.platform.linux``. Prints one JSON report.
"""

from __future__ import annotations

import ast
import importlib
import json
import sys
import traceback
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "edr"
BLOCKED = ("pwd", "resource", "fcntl", "bcc")
#: Linux by nature: the eBPF sensor, and the Linux side of the platform seam.
LINUX_ONLY = ("edr.sources.ebpf", "edr.platform.linux")
#: Not importable for its own sake: it runs the command line.
NOT_A_LIBRARY = ("edr.__main__",)


def module_name(path: Path) -> str:
    parts = ["edr", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def outside_imports(paths: list[Path]) -> set[str]:
    """Every non-edr module the sources import, anywhere in them."""
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
    return {n for n in found if n.split(".")[0] != "edr"}


def windows_modules(paths: list[Path]) -> list[str]:
    names = sorted(module_name(p) for p in paths)
    return [n for n in names if not n.startswith(LINUX_ONLY) and n not in NOT_A_LIBRARY]


def main() -> None:
    paths = sorted(SRC.rglob("*.py"))
    absent = []
    for name in sorted(outside_imports(paths)):
        if name.split(".")[0] in BLOCKED:
            continue
        try:
            importlib.import_module(name)
        except ImportError:
            absent.append(name)  # Windows-only (pywin32, msvcrt): imported inside functions, never here
    for name in BLOCKED:
        sys.modules[name] = None  # type: ignore[assignment]
    sys.platform = "win32"

    failed: dict[str, str] = {}
    for name in windows_modules(paths):
        try:
            importlib.import_module(name)
        except BaseException:
            failed[name] = traceback.format_exc(limit=-3)

    report: dict[str, object] = {"failed": failed, "absent": absent}
    if not failed:
        from edr.alerts.ecs import HostInfo
        from edr.config import platform_trusted_paths
        from edr.platform import current
        from edr.platform.private_files import PrivateDir
        from edr.response.allowlist import ImageAllowlist
        from edr.scan.allowlist import PrefixAllowlist
        from edr.wiring.graphs import mode_graph
        from edr.wiring.kinds import KINDS

        graph = mode_graph("windows")
        for actor in graph.actors:
            kind = KINDS.resolve(actor.kind)
            kind.actor_class(actor.kind)
            if kind.builder is not None:
                module, _, function = kind.builder.partition(":")
                getattr(importlib.import_module(module), function)
        report.update({
            "platform": current().name,
            "private_files": PrivateDir.__module__,
            "trusted_paths": platform_trusted_paths(),
            "host_os": HostInfo(name="h").os_type,
            "allowlists_ignore_case": [ImageAllowlist([], []).windows, PrefixAllowlist([]).windows],
            "user_name": current().user_name(0),
            "watchdog": current().service.watchdog_interval(),
            "graph_kinds": sorted({a.kind for a in graph.actors}),
        })
    report["linux_loaded"] = sorted(m for m in sys.modules if m.startswith(LINUX_ONLY))
    report["blocked_loaded"] = [m for m in BLOCKED if sys.modules.get(m) is not None]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
