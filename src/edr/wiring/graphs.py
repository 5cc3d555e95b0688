"""Where each mode's actor graph is, from a checkout and from an installed wheel alike.

The graphs are ``actors/<mode>.toml`` at the repository root; a wheel ships
the same files inside the package as ``edr/graphs/`` (:mod:`edr.resources`
finds either).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

from edr.resources import shipped
from edr.runtime.graph import Graph, load_graph
from edr.wiring.kinds import KINDS

#: The modes a graph file exists for.
MODES: Final = ("linux", "windows", "replay")


def graph_path(mode: str) -> Path:
    """The graph file of ``mode``; FileNotFoundError naming where it looked."""
    path = shipped("graphs") / f"{mode}.toml"
    if not path.is_file():
        raise FileNotFoundError(f"no actor graph for mode {mode!r}: {path} does not exist")
    return path


def mode_graph(mode: str, capacities: Mapping[str, int] | None = None) -> Graph:
    """The validated graph of ``mode`` with edge capacities overridden by ``pipeline.capacities``."""
    graph = load_graph(graph_path(mode), KINDS)
    return graph.with_capacities(capacities) if capacities else graph
