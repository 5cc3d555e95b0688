"""Driving an actor in a trio test through real edges and ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import attrs
import trio

from edr.runtime.actor import Actor, ActorBase, Ports
from edr.runtime.buffer import Policy
from edr.runtime.channel import Edge, InPort, OutPort
from edr.runtime.graph import parse_graph
from edr.runtime.supervisor import Supervisor
from edr.wiring.kinds import KINDS


@attrs.define
class Running:
    """A running actor: ``send`` batches in, ``received`` what it sent out, ``close`` the input."""

    edge: Edge
    received: list[Any]
    done: trio.Event

    async def send(self, batch: list[Any]) -> None:
        await self.edge.send(batch)

    def close(self) -> None:
        self.edge.close()


@asynccontextmanager
async def running(actor: Any, *, in_capacity: int = 64, policy: Policy = Policy.DROP_NEWEST,
                  output: str | None = "alerts") -> AsyncIterator[Running]:
    """Run ``actor`` with one input edge (as the graph's scan edge: drop_newest) and a collected output."""
    in_edge = Edge("test->actor.in", in_capacity, policy)
    inport = InPort("in")
    inport.attach(in_edge)
    outputs: dict[str, OutPort] = {}
    collected: list[Any] = []
    out_in = InPort("collector")
    if output is not None:
        port = OutPort(output)
        out_edge = Edge("actor.out->test", 1024, Policy.BLOCK)
        port.attach(out_edge)
        out_in.attach(out_edge)
        outputs[output] = port
    done = trio.Event()
    handle = Running(in_edge, collected, done)

    async def run_actor() -> None:
        try:
            await actor.run(Ports(inputs={"in": inport}, outputs=outputs))
        finally:
            for port in outputs.values():
                port.close()
            done.set()

    async def collect() -> None:
        async for batch in out_in:
            collected.extend(batch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_actor)
        if output is not None:
            nursery.start_soon(collect)
        yield handle
        handle.close()


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0,
                   state: Callable[[], object] | None = None) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds, showing ``state()`` if given."""
    deadline = trio.current_time() + timeout
    while not predicate():
        if trio.current_time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; state: {state() if state else '?'}")
        await trio.sleep(0.01)


class Feed(ActorBase):
    """Sends its batches on ``out``, then ends (which closes its edges) once ``hold`` is set."""

    inputs: ClassVar = ()
    outputs: ClassVar = ("out",)

    def __init__(self, name: str, batches: Sequence[list[Any]]) -> None:
        super().__init__(name)
        self.batches = batches
        self.hold = trio.Event()
        self.hold.set()

    async def run(self, ports: Ports) -> None:
        for batch in self.batches:
            await ports.output("out").send(batch)
        await self.hold.wait()


def supervised(actors: dict[str, tuple[str, Actor | None]], edges: list[tuple[str, str, int, str]]) -> Supervisor:
    """A supervisor over a graph of the agent's kinds plus ``t_feed``: ``{name: (kind, actor or None)}``,
    edges as ``(from, to, capacity, policy)``; actors given as None are built by their kind's builder."""
    kinds = KINDS.with_kinds({"t_feed": "tests.scan.harness:Feed"})
    graph = parse_graph({
        "actors": {name: {"kind": kind} for name, (kind, _) in actors.items()},
        "edges": [{"from": a, "to": b, "capacity": c, "policy": p} for a, b, c, p in edges],
    }, "test-graph.toml", "test", kinds)
    return Supervisor(graph, None, {name: actor for name, (_, actor) in actors.items() if actor is not None})
