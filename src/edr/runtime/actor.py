"""The actor protocol and an actor's ports.

An actor is a thin trio loop around a sans-IO core: it receives batches on
its input ports, calls the core, and sends batches on its output ports. The
runtime owns the ports: it closes an actor's output ports when ``run``
returns (normally, by cancellation or by error), which is how end-of-stream
propagates down the graph. How an actor is built is not the runtime's
business: a :class:`~edr.runtime.kinds.Kind` says where its class and its
builder are.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import attrs
import trio

from edr.runtime.channel import InPort, OutPort
from edr.runtime.flight import Flight


@attrs.define
class Ports:
    """An actor's ports by name, and the in-flight count of its graph."""

    inputs: dict[str, InPort]
    outputs: dict[str, OutPort]
    flight: Flight | None = None

    def input(self, name: str) -> InPort:
        """The input port ``name``."""
        return self.inputs[name]

    def output(self, name: str) -> OutPort:
        """The output port ``name``."""
        return self.outputs[name]

    async def settled(self) -> None:
        """Wait until the graph holds no batch in flight (see :mod:`edr.runtime.flight`).

        For a source that paces itself on the graph; returns at once outside
        a supervised graph. A cancellation point.
        """
        if self.flight is None:
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            await self.flight.settled()


class Actor(Protocol):
    """What the runtime runs.

    ``inputs`` and ``outputs`` name the ports (an actor may also name, in
    ``optional_outputs``, outputs a graph need not connect: sending on an
    unconnected output does nothing); ``is_source`` marks actors
    that the runtime cancels first on shutdown (they produce from outside the
    graph); every other actor ends when its inputs are exhausted.
    """

    inputs: ClassVar[tuple[str, ...]]
    outputs: ClassVar[tuple[str, ...]]
    is_source: ClassVar[bool]
    name: str

    async def run(self, ports: Ports) -> None:
        """Receive, compute, send until the inputs end (or, for a source, until cancelled)."""
        ...

    def statistics(self) -> dict[str, Any]:
        """Counters for health records."""
        ...


class ActorBase:
    """Convenience base: a name, empty statistics."""

    inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()
    optional_outputs: ClassVar[tuple[str, ...]] = ()
    is_source: ClassVar[bool] = False

    def __init__(self, name: str) -> None:
        self.name = name

    def statistics(self) -> dict[str, Any]:
        """No counters by default."""
        return {}
