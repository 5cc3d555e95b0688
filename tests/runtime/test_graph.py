"""Graph files: every validation error names the file and the item; the shipped replay graph validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from edr.runtime.buffer import Policy
from edr.runtime.graph import GraphError, load_graph, render_mermaid, render_text
from edr.wiring.graphs import mode_graph
from edr.wiring.kinds import KINDS
from tests.cli_helpers import run_edr

GOOD_ACTORS = """
[actors.norm]
kind = "normalizer"
[actors.sink]
kind = "null"
"""
GOOD_EDGE = """
[[edges]]
from = "norm.out"
to = "sink.in"
capacity = 4
policy = "drop_oldest"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "g.toml"
    p.write_text(text)
    return p


def error_of(path: Path) -> GraphError:
    with pytest.raises(GraphError) as info:
        load_graph(path, KINDS)
    assert str(path) in str(info.value)
    assert info.value.file == str(path)
    return info.value


def test_unconnected_port_of_a_third_actor(tmp_path: Path) -> None:
    text = GOOD_ACTORS + GOOD_EDGE + '[actors.r]\nkind = "router"\n' + """
[[edges]]
from = "r.priority"
to = "norm.in"
[[edges]]
from = "r.bulk"
to = "norm.in"
"""
    # r.in is still unconnected: that is itself an error naming the actor and port
    err = error_of(write(tmp_path, text))
    assert err.item == "actor 'r'" and "'in'" in str(err)


def test_unknown_actor_kind(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, '[actors.x]\nkind = "warp_drive"\n'))
    assert err.item == "actor 'x'"
    assert "unknown actor kind 'warp_drive'" in str(err)


def test_edge_to_unknown_actor(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, GOOD_ACTORS + '[[edges]]\nfrom = "norm.out"\nto = "ghost.in"\n'))
    assert err.item == "edge norm.out -> ghost.in"
    assert "unknown actor 'ghost'" in str(err)


def test_edge_from_unknown_port(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, GOOD_ACTORS + '[[edges]]\nfrom = "norm.sideways"\nto = "sink.in"\n'))
    assert err.item == "edge norm.sideways -> sink.in"
    assert "no output port 'sideways'" in str(err)


def test_edge_to_an_output_port(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, GOOD_ACTORS + '[[edges]]\nfrom = "norm.out"\nto = "norm.out"\n'))
    assert "no input port 'out'" in str(err)


def test_unconnected_port(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, GOOD_ACTORS + GOOD_EDGE))
    assert err.item == "actor 'norm'"
    assert "input port 'in' is not connected" in str(err)


def test_duplicate_edge(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, GOOD_ACTORS + GOOD_EDGE + GOOD_EDGE))
    assert err.item == "edge norm.out -> sink.in"
    assert "duplicate edge" in str(err)


@pytest.mark.parametrize("policy", ['"drop_random"', '"BLOCK"', "3"])
def test_bad_policy(tmp_path: Path, policy: str) -> None:
    err = error_of(write(tmp_path, GOOD_ACTORS + GOOD_EDGE.replace('"drop_oldest"', policy)))
    assert err.item == "edge norm.out -> sink.in"
    assert "policy must be" in str(err)


@pytest.mark.parametrize("capacity", ["0", "-3", '"8"', "true", "2.5"])
def test_bad_capacity(tmp_path: Path, capacity: str) -> None:
    err = error_of(write(tmp_path, GOOD_ACTORS + GOOD_EDGE.replace("capacity = 4", f"capacity = {capacity}")))
    assert err.item == "edge norm.out -> sink.in"
    assert "capacity must be a positive integer" in str(err)


def test_bad_endpoint_and_unknown_keys(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, GOOD_ACTORS + '[[edges]]\nfrom = "norm"\nto = "sink.in"\n'))
    assert err.item == "edge #1" and "'actor.port'" in str(err)
    err = error_of(write(tmp_path, GOOD_ACTORS + GOOD_EDGE.replace("capacity = 4", "capacty = 4")))
    assert err.item == "edge #1" and "capacty" in str(err)
    err = error_of(write(tmp_path, '[actors.x]\nkind = "null"\nrestart = true\n'))
    assert err.item == "actor 'x'" and "restart" in str(err)
    err = error_of(write(tmp_path, "nodes = 1\n" + GOOD_ACTORS))
    assert err.item == "nodes"
    err = error_of(write(tmp_path, "[actors\n"))
    assert "invalid TOML" in str(err)


def test_replay_graph_validates_and_renders() -> None:
    graph = mode_graph("replay")
    assert graph.file.endswith("actors/replay.toml")
    assert {a.name for a in graph.actors} == {"source", "normalizer", "router", "enricher", "detect", "events",
                                               "alerts", "syslog", "webhook"}
    assert all(e.policy is Policy.BLOCK for e in graph.edges)  # replay never sheds
    alerts_edge = next(e for e in graph.edges if e.dst == "alerts.in")
    assert alerts_edge.policy is Policy.BLOCK  # alerts are never dropped
    text = render_text(graph)
    mermaid = render_mermaid(graph)
    assert mermaid.startswith("flowchart LR")
    for e in graph.edges:
        sa, sp = e.src.split(".")
        da, dp = e.dst.split(".")
        assert f"{sa} ==>|\"{sp}→{dp} {e.capacity} block\"| {da}" in mermaid
        assert e.src in text and e.dst in text
    for a in graph.actors:
        assert f"{a.name}[" in mermaid


def test_capacity_override(tmp_path: Path) -> None:
    graph = mode_graph("replay")
    name = "detect.alerts->alerts.in"
    changed = graph.with_capacities({name: 3})
    assert next(e for e in changed.edges if e.name == name).capacity == 3
    with pytest.raises(GraphError) as info:
        graph.with_capacities({"detect.alerts->nowhere.in": 3}, origin="conf/x.toml")
    assert "conf/x.toml" in str(info.value) and "detect.alerts->nowhere.in" in str(info.value)
    assert graph.file in str(info.value)
    with pytest.raises(GraphError, match="positive integer"):
        graph.with_capacities({name: 0})


def test_edr_graph_command(tmp_path: Path) -> None:
    r = run_edr(["graph", "--mode", "replay", "--format", "mermaid"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("flowchart LR")
    assert r.stdout.strip() == render_mermaid(mode_graph("replay"))
    r = run_edr(["graph", "--mode", "replay"], cwd=tmp_path)
    assert r.returncode == 0 and "detect.alerts" in r.stdout
    cfg = tmp_path / "c.toml"
    cfg.write_text('[pipeline]\ncapacities = { "no.such->edge.in" = 4 }\n')
    r = run_edr(["graph", "--mode", "replay", "--config", str(cfg)], cwd=tmp_path)
    assert r.returncode == 2 and "no.such->edge.in" in r.stderr


def test_unimportable_or_non_actor_kind_is_a_graph_error(tmp_path: Path) -> None:
    """A registered kind whose module cannot be imported, or whose class is not an actor, is named, not raised raw."""
    from edr.runtime.kinds import Kinds

    kinds = KINDS.with_kinds({"ghost": "edr.sources.nowhere:Ghost", "notactor": "edr.event:Event"})
    path = write(tmp_path, '[actors.x]\nkind = "ghost"\n')
    with pytest.raises(GraphError) as info:
        load_graph(path, kinds)
    assert info.value.item == "actor 'x'" and "cannot import edr.sources.nowhere" in str(info.value)
    path = write(tmp_path, '[actors.x]\nkind = "notactor"\n')
    with pytest.raises(GraphError, match="is not an actor"):
        load_graph(path, kinds)
    with pytest.raises(GraphError, match="no Missing"):
        load_graph(path, Kinds({"notactor": "edr.event:Missing"}))
