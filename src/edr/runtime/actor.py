"""The actor protocol, the context actors are built from, and the kind registry.

An actor is a thin trio loop around a sans-IO core: it receives batches on
its input ports, calls the core, and sends batches on its output ports. The
runtime owns the ports: it closes an actor's output ports when ``run``
returns (normally, by cancellation or by error), which is how end-of-stream
propagates down the graph.

Kinds are registered by name with the import path of their class, so that
validating a graph never imports (or builds) heavy engines.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import attrs
import trio

from edr.runtime.channel import InPort, OutPort
from edr.runtime.flight import Flight

if TYPE_CHECKING:
    from edr.config import Config


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


@attrs.define
class ActorContext:
    """What every actor is built from: configuration, mode options, shared state.

    ``shared`` is for objects that several actors are built around and that
    are created once at start (for example the loaded engines, so ``edr
    replay`` and the benchmarks build them once); actors never mutate each
    other's state through it.
    """

    config: Config
    mode: str
    options: dict[str, Any] = attrs.field(factory=dict)
    shared: dict[str, Any] = attrs.field(factory=dict)
    log: logging.Logger = attrs.field(factory=lambda: logging.getLogger("edr"))


class Actor(Protocol):
    """What the runtime runs.

    ``inputs`` and ``outputs`` name the ports; ``is_source`` marks actors
    that the runtime cancels first on shutdown (they produce from outside the
    graph); every other actor ends when its inputs are exhausted.
    """

    inputs: ClassVar[tuple[str, ...]]
    outputs: ClassVar[tuple[str, ...]]
    is_source: ClassVar[bool]
    name: str

    @classmethod
    def build(cls, ctx: ActorContext, name: str) -> Actor:
        """Create the actor (may do slow set-up such as loading rules)."""
        ...

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
    is_source: ClassVar[bool] = False

    def __init__(self, name: str) -> None:
        self.name = name

    def statistics(self) -> dict[str, Any]:
        """No counters by default."""
        return {}


#: kind -> "module:Class". Importing is deferred until a graph uses the kind.
REGISTRY: dict[str, str] = {
    "replay_source": "edr.sources.replay.actor:ReplaySource",
    "ebpf_source": "edr.sources.ebpf.actor:EbpfSource",
    "etw_source": "edr.sources.etw.actor:EtwSource",
    "normalizer": "edr.runtime.stages:Normalizer",
    "ebpf_normalizer": "edr.sources.ebpf.actor:EbpfNormalizer",
    "etw_normalizer": "edr.sources.etw.actor:EtwNormalizerActor",
    "router": "edr.runtime.router:Router",
    "enricher": "edr.enrich.actor:EnricherActor",
    "detect": "edr.detect.actor:DetectActor",
    "scan": "edr.scan.actor:ScanDispatcher",
    "alerts": "edr.alerts.actor:AlertWriter",
    "events": "edr.alerts.actor:EventWriter",
    "responder": "edr.response.actor:Responder",
    "null": "edr.runtime.stages:NullSink",
}


class UnknownKind(LookupError):
    """A graph names an actor kind nobody registered."""


def resolve_kind(kind: str) -> type[Any]:
    """The class registered for ``kind`` (imports its module)."""
    try:
        target = REGISTRY[kind]
    except KeyError:
        raise UnknownKind(kind) from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def port_names(kind: str) -> tuple[Sequence[str], Sequence[str]]:
    """(inputs, outputs) of a kind."""
    cls = resolve_kind(kind)
    return cls.inputs, cls.outputs
