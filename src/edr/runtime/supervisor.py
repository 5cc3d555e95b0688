"""Run a validated graph under one root nursery; shut it down in order.

Shutdown: the first SIGINT/SIGTERM (or :meth:`Supervisor.stop`) cancels the
sources only. Their out ports close, each downstream actor drains its inputs
and returns, its outputs close in turn, and the writers flush last. A second
signal cancels everything at once.

Failure: an actor that raises is logged with its name and its traceback.
With ``on_error = "stop"`` (the default) the whole graph is cancelled and
:meth:`run` returns exit code 1; with ``"restart"`` it is started again on
the same ports, at most ``MAX_RESTARTS`` times, then treated as ``stop``.
Nothing waits forever: a failure cancels every task, including any blocked
on a full edge.
"""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from edr.runtime.actor import Actor, ActorContext, Ports, resolve_kind
from edr.runtime.buffer import EdgeStatistics
from edr.runtime.channel import Edge, InPort, OutPort
from edr.runtime.flight import Flight
from edr.runtime.graph import Graph

MAX_RESTARTS = 3
#: Generation-0 threshold of the cyclic GC while a graph runs (CPython's default is 700).
#: Every event allocates a few containers and almost none form cycles, so the default
#: makes the collector run every few hundred events and costs a large share of a hop;
#: a larger threshold keeps the same collection, less often. None leaves the GC alone.
GC_GEN0_THRESHOLD: int | None = 20_000
log = logging.getLogger("edr.runtime")


class Supervisor:
    """Builds the actors and edges of a graph and runs them."""

    def __init__(self, graph: Graph, ctx: ActorContext, actors: dict[str, Actor] | None = None) -> None:
        self.graph = graph
        self.ctx = ctx
        self.edges: dict[str, Edge] = {}
        self.ports: dict[str, Ports] = {}
        self.actors: dict[str, Actor] = dict(actors or {})
        self.failed: list[str] = []
        self.stopping = False
        self._source_scopes: list[trio.CancelScope] = []
        self._root: trio.Nursery | None = None
        self.flight = Flight()
        for spec in graph.actors:
            self.ports[spec.name] = Ports(
                inputs={p: InPort(f"{spec.name}.{p}") for p in spec.inputs},
                outputs={p: OutPort(f"{spec.name}.{p}") for p in spec.outputs},
                flight=self.flight,
            )
        for e in graph.edges:
            edge = Edge(e.name, e.capacity, e.policy, self.flight)
            self.edges[e.name] = edge
            sa, sp = e.src.split(".")
            da, dp = e.dst.split(".")
            self.ports[sa].outputs[sp].attach(edge)
            self.ports[da].inputs[dp].attach(edge)

    def build_actors(self) -> None:
        """Instantiate every actor not supplied by the caller (may be slow: rule loading)."""
        for spec in self.graph.actors:
            if spec.name not in self.actors:
                self.actors[spec.name] = resolve_kind(spec.kind).build(self.ctx, spec.name)

    def statistics(self) -> dict[str, EdgeStatistics]:
        """Per-edge counters."""
        return {name: e.statistics() for name, e in self.edges.items()}

    def actor_statistics(self) -> dict[str, dict[str, Any]]:
        """Per-actor counters."""
        return {name: a.statistics() for name, a in self.actors.items()}

    def stop(self) -> None:
        """Begin an orderly shutdown: cancel the sources; the rest drains."""
        self.stopping = True
        for scope in self._source_scopes:
            scope.cancel()

    def abort(self) -> None:
        """Cancel everything now."""
        if self._root is not None:
            self._root.cancel_scope.cancel()

    async def _run_actor(self, name: str, actor: Actor) -> None:
        spec = self.graph.actor(name)
        ports = self.ports[name]
        restarts = 0
        try:
            while True:
                try:
                    if actor.is_source:
                        scope = trio.CancelScope()
                        self._source_scopes.append(scope)
                        if self.stopping:
                            scope.cancel()
                        with scope:
                            await actor.run(ports)
                    else:
                        await actor.run(ports)
                    return
                except trio.Cancelled:
                    raise
                except Exception:
                    log.exception("actor %s (%s) crashed", name, spec.kind)
                    for port in ports.inputs.values():
                        port.done()  # the batch it died on is not in flight any more
                    if spec.on_error == "restart" and restarts < MAX_RESTARTS and not self.stopping:
                        restarts += 1
                        log.warning("restarting actor %s (%d/%d)", name, restarts, MAX_RESTARTS)
                        continue
                    self.failed.append(name)
                    self.abort()
                    return
        finally:
            for port in ports.inputs.values():
                port.done()
            for out in ports.outputs.values():
                out.close()

    async def run(
        self,
        *,
        handle_signals: bool = True,
        on_started: Callable[[], None] | None = None,
        background: list[Callable[[Supervisor], Awaitable[None]]] | None = None,
    ) -> int:
        """Run until every actor has returned; 0 on a clean end, 1 if an actor failed.

        ``background`` tasks (health records, watchdog) run beside the graph
        and are cancelled once the graph has finished.
        """
        self.build_actors()
        saved = gc.get_threshold()
        if GC_GEN0_THRESHOLD is not None:
            # What exists now (loaded rule sets, caches) lives for the whole run: keep it
            # out of every later collection, and collect the short-lived rest less often.
            gc.collect()
            gc.freeze()
            gc.set_threshold(max(saved[0], GC_GEN0_THRESHOLD), *saved[1:])
        try:
            return await self._run(handle_signals, on_started, background)
        finally:
            gc.set_threshold(*saved)

    async def _run(
        self,
        handle_signals: bool,
        on_started: Callable[[], None] | None,
        background: list[Callable[[Supervisor], Awaitable[None]]] | None,
    ) -> int:
        async with trio.open_nursery() as outer:
            if handle_signals:
                outer.start_soon(self._watch_signals)
            for task in background or ():
                outer.start_soon(task, self)
            async with trio.open_nursery() as root:
                self._root = root
                for name, actor in self.actors.items():
                    root.start_soon(self._run_actor, name, actor, name=f"actor:{name}")
                if on_started is not None:
                    on_started()
            outer.cancel_scope.cancel()
        return 1 if self.failed else 0

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            count = 0
            async for signum in signals:
                count += 1
                if count == 1:
                    log.info("received %s: stopping sources, draining the pipeline", signal.Signals(signum).name)
                    self.stop()
                else:
                    log.warning("received %s again: cancelling everything", signal.Signals(signum).name)
                    self.abort()


def make_context(config: Any, mode: str, **options: Any) -> ActorContext:
    """An ActorContext for ``mode`` with ``options``."""
    return ActorContext(config=config, mode=mode, options=dict(options))
