"""The actor graph as data: load ``actors/<mode>.toml``, validate, render.

Format::

    [actors.source]
    kind = "replay_source"

    [[edges]]
    from = "source.out"
    to = "normalizer.in"
    capacity = 64          # batches
    policy = "block"       # block | drop_newest | drop_oldest

Validation errors name the file and the offending item: an unknown or
unimportable actor kind, an edge naming an unknown actor or port, a
duplicate edge, a port left unconnected, a capacity override for an edge
that does not exist. Which kinds exist is the caller's
(:class:`~edr.runtime.kinds.Kinds`); where graph files live is the
application's too.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from edr.runtime.buffer import Policy
from edr.runtime.errors import EdrError, Location, toml_error_line
from edr.runtime.kinds import Kind, KindError, Kinds


class GraphError(EdrError, ValueError):
    """An invalid graph; the message names the file and the item (and the line, for TOML syntax)."""

    def __init__(self, file: str, item: str, reason: str, line: int | None = None) -> None:
        super().__init__(reason, Location(file, line, item), message=f"{file}: {item}: {reason}")
        self.item = item


@attrs.frozen
class ActorSpec:
    """One node: its name, kind, ports and restart policy."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    on_error: str = "stop"
    #: outputs a graph may leave unconnected (sending on one is then a no-op)
    optional: tuple[str, ...] = ()


@attrs.frozen
class EdgeSpec:
    """One edge: ``src`` and ``dst`` are ``actor.port``."""

    src: str
    dst: str
    capacity: int
    policy: Policy

    @property
    def name(self) -> str:
        """``actor.port->actor.port``: how configuration and statistics name it."""
        return f"{self.src}->{self.dst}"


@attrs.frozen
class Graph:
    """A validated actor graph, and the kinds its actors are built from."""

    mode: str
    file: str
    actors: tuple[ActorSpec, ...]
    edges: tuple[EdgeSpec, ...]
    kinds: Kinds = attrs.field(eq=False, repr=False)

    def kind(self, spec: ActorSpec) -> Kind:
        """Where the class and builder of ``spec``'s kind are."""
        return self.kinds[spec.kind]

    def actor(self, name: str) -> ActorSpec:
        """The node called ``name``."""
        return next(a for a in self.actors if a.name == name)

    def with_capacities(self, overrides: Mapping[str, int], origin: str = "pipeline.capacities") -> Graph:
        """A copy with edge capacities overridden by configuration."""
        names = {e.name for e in self.edges}
        for key, value in overrides.items():
            if key not in names:
                raise GraphError(origin, key, f"no such edge in {self.file} (edges: {', '.join(sorted(names))})")
            if not isinstance(value, int) or value < 1:
                raise GraphError(origin, key, f"capacity must be a positive integer, not {value!r}")
        edges = tuple(attrs.evolve(e, capacity=overrides.get(e.name, e.capacity)) for e in self.edges)
        return attrs.evolve(self, edges=edges)


def load_graph(path: str | Path, kinds: Kinds) -> Graph:
    """Read and validate a graph file whose actors are of ``kinds``."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphError(str(path), "(file)", f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise GraphError(str(path), "(file)", f"invalid TOML: {exc}", toml_error_line(exc)) from None
    return parse_graph(data, str(path), mode=path.stem, kinds=kinds)


def _split(ref: Any, file: str, item: str) -> tuple[str, str]:
    if not isinstance(ref, str) or ref.count(".") != 1:
        raise GraphError(file, item, f"endpoint must be 'actor.port', not {ref!r}")
    actor, port = ref.split(".")
    return actor, port


def parse_graph(data: Mapping[str, Any], file: str, mode: str, kinds: Kinds) -> Graph:
    """Validate a decoded graph document against ``kinds``."""
    unknown_top = set(data) - {"actors", "edges", "description"}
    if unknown_top:
        raise GraphError(file, ", ".join(sorted(unknown_top)), "unknown top-level key")
    actors: dict[str, ActorSpec] = {}
    raw_actors = data.get("actors", {})
    if not isinstance(raw_actors, dict) or not raw_actors:
        raise GraphError(file, "actors", "expected a table of actors")
    for name, body in raw_actors.items():
        item = f"actor {name!r}"
        if not isinstance(body, dict) or not isinstance(body.get("kind"), str):
            raise GraphError(file, item, "needs kind = \"...\"")
        extra = set(body) - {"kind", "on_error"}
        if extra:
            raise GraphError(file, item, f"unknown key(s) {', '.join(sorted(extra))}")
        on_error = body.get("on_error", "stop")
        if on_error not in ("stop", "restart"):
            raise GraphError(file, item, f"on_error must be 'stop' or 'restart', not {on_error!r}")
        try:
            cls = kinds.resolve(body["kind"]).actor_class(body["kind"])
        except KindError as exc:
            reason = f"unknown actor kind {exc.kind!r}" if body["kind"] not in kinds else str(exc)
            raise GraphError(file, item, reason) from None
        inputs, outputs = cls.inputs, cls.outputs
        optional = tuple(getattr(cls, "optional_outputs", ()))
        actors[name] = ActorSpec(name, body["kind"], tuple(inputs), tuple(outputs), on_error, optional)

    edges: list[EdgeSpec] = []
    seen: set[tuple[str, str]] = set()
    raw_edges = data.get("edges", [])
    if not isinstance(raw_edges, list):
        raise GraphError(file, "edges", "expected [[edges]] tables")
    for i, body in enumerate(raw_edges, 1):
        item = f"edge #{i}"
        if not isinstance(body, dict):
            raise GraphError(file, item, "expected a table")
        extra = set(body) - {"from", "to", "capacity", "policy"}
        if extra:
            raise GraphError(file, item, f"unknown key(s) {', '.join(sorted(extra))}")
        src_a, src_p = _split(body.get("from"), file, item)
        dst_a, dst_p = _split(body.get("to"), file, item)
        item = f"edge {body['from']} -> {body['to']}"
        for a, p, direction in ((src_a, src_p, "outputs"), (dst_a, dst_p, "inputs")):
            if a not in actors:
                raise GraphError(file, item, f"unknown actor {a!r}")
            ports = getattr(actors[a], direction)
            if p not in ports:
                have = ", ".join(ports) or "none"
                raise GraphError(file, item, f"actor {a!r} has no {direction[:-1]} port {p!r} (has: {have})")
        key = (body["from"], body["to"])
        if key in seen:
            raise GraphError(file, item, "duplicate edge")
        seen.add(key)
        capacity = body.get("capacity", 64)
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise GraphError(file, item, f"capacity must be a positive integer, not {capacity!r}")
        try:
            policy = Policy(body.get("policy", "block"))
        except ValueError:
            raise GraphError(file, item,
                             f"policy must be block, drop_newest or drop_oldest, not {body.get('policy')!r}") from None
        edges.append(EdgeSpec(body["from"], body["to"], capacity, policy))

    connected = {e.src for e in edges} | {e.dst for e in edges}
    for spec in actors.values():
        for p in spec.inputs:
            if f"{spec.name}.{p}" not in connected:
                raise GraphError(file, f"actor {spec.name!r}", f"input port {p!r} is not connected")
        for p in spec.outputs:
            if f"{spec.name}.{p}" not in connected and p not in spec.optional:
                raise GraphError(file, f"actor {spec.name!r}", f"output port {p!r} is not connected")
    return Graph(mode=mode, file=file, actors=tuple(actors.values()), edges=tuple(edges), kinds=kinds)


def render_text(graph: Graph) -> str:
    """A plain listing of nodes and edges."""
    lines = [f"graph {graph.mode} ({graph.file})", "actors:"]
    for a in graph.actors:
        ins, outs = ",".join(a.inputs) or "-", ",".join(a.outputs) or "-"
        lines.append(f"  {a.name:<12} kind={a.kind:<16} in={ins} out={outs}")
    lines.append("edges:")
    for e in graph.edges:
        lines.append(f"  {e.src:>18} -> {e.dst:<18} capacity={e.capacity:<5} policy={e.policy.value}")
    return "\n".join(lines)


def render_mermaid(graph: Graph) -> str:
    """A Mermaid flowchart; edge labels give capacity and policy."""
    lines = ["flowchart LR"]
    for a in graph.actors:
        lines.append(f"    {a.name}[\"{a.name}<br/><small>{a.kind}</small>\"]")
    for e in graph.edges:
        sa, sp = e.src.split(".")
        da, dp = e.dst.split(".")
        arrow = "==>" if e.policy is Policy.BLOCK else "-.->"
        lines.append(f"    {sa} {arrow}|\"{sp}→{dp} {e.capacity} {e.policy.value}\"| {da}")
    return "\n".join(lines)
