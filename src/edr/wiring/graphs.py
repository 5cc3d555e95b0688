"""Where each mode's actor graph is, from a checkout and from an installed wheel alike.

The graphs are ``actors/<mode>.toml`` at the repository root; a wheel ships
the same files inside the package as ``edr/graphs/`` (pyproject's
force-include), so one lookup serves both: the package's own ``graphs``
first, then the checkout's ``actors``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

from edr.runtime.graph import Graph, load_graph
from edr.wiring.kinds import KINDS

_PACKAGE: Final = Path(__file__).resolve().parents[1]
#: Searched in this order.
GRAPH_DIRS: Final = (_PACKAGE / "graphs", _PACKAGE.parents[1] / "actors")
#: The modes a graph file exists for.
MODES: Final = ("linux", "windows", "replay")


def graph_path(mode: str) -> Path:
    """The graph file of ``mode``; FileNotFoundError naming where it looked."""
    for directory in GRAPH_DIRS:
        path = directory / f"{mode}.toml"
        if path.is_file():
            return path
    raise FileNotFoundError(f"no actor graph for mode {mode!r} in {', '.join(str(d) for d in GRAPH_DIRS)}")


def mode_graph(mode: str, capacities: Mapping[str, int] | None = None) -> Graph:
    """The validated graph of ``mode`` with edge capacities overridden by ``pipeline.capacities``."""
    graph = load_graph(graph_path(mode), KINDS)
    return graph.with_capacities(capacities) if capacities else graph
