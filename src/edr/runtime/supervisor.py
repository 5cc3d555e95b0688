"""Run a validated graph under one root nursery; shut it down in order, in bounded time.

Shutdown: the first SIGINT/SIGTERM (or :meth:`Supervisor.stop`) cancels the
sources only. Their out ports close, each downstream actor drains its inputs
and returns, its outputs close in turn, and the writers flush last. A second
signal cancels everything at once.

Bounded: with a ``stop_timeout`` T, whatever has not drained ``T - g``
seconds after the stop is cancelled (``g``, :func:`cancel_grace`, is at most
a second: the time cancelled tasks get to unwind). Cancelling cannot
interrupt a worker thread stuck in a system call (a hung disk); if the graph
has still not ended ``g`` seconds after it was cancelled, the ``on_stuck``
hook given to :meth:`Supervisor.run` is called from a watchdog thread with
the names of the actors still running (the command line ends the process
there). So T bounds the whole stop.

What was lost: an actor that delivers to the outside world (a file, a
socket) may define ``unwritten() -> dict[str, int]``: per kind of item
(``"alerts"``, ``"events"``...), how many it has been given and not yet
delivered, counting what is still queued on its input edges and what
senders abandoned on them when they were cancelled. :meth:`Supervisor.unwritten`
sums them; the runtime knows nothing of the kinds. A graph that ends with
anything unwritten (it was cancelled: by the stop timeout, a second signal
or a failure) makes :meth:`Supervisor.run` return 1, never 0.

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
import math
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from edr.runtime.actor import Actor, Ports
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


def cancel_grace(stop_timeout: float) -> float:
    """Seconds between cancelling what is left of a stop and giving up on it: a quarter of it, at most 1."""
    return min(1.0, stop_timeout / 4)


class Supervisor:
    """Builds the actors and edges of a graph and runs them.

    ``ctx`` is whatever the application's builders make actors from (the
    runtime passes it on and never looks inside). ``stop_timeout``: the
    longest an orderly stop may take, in seconds (None: wait for the drain
    however long it takes).
    """

    def __init__(self, graph: Graph, ctx: object, actors: dict[str, Actor] | None = None, *,
                 stop_timeout: float | None = None) -> None:
        if stop_timeout is not None and not (math.isfinite(stop_timeout) and stop_timeout > 0):
            raise ValueError(f"stop_timeout must be a positive number of seconds, not {stop_timeout!r}")
        self.graph = graph
        self.ctx = ctx
        self.stop_timeout = stop_timeout
        self.edges: dict[str, Edge] = {}
        self.ports: dict[str, Ports] = {}
        self.actors: dict[str, Actor] = dict(actors or {})
        self.failed: list[str] = []
        #: An orderly stop was asked for (signal or :meth:`stop`).
        self.stopping = False
        #: The graph was cancelled rather than drained, and why ("stop timeout", "second signal", "failure").
        self.cancelled: str | None = None
        self._source_scopes: list[trio.CancelScope] = []
        self._root: trio.Nursery | None = None
        self._stop_requested = trio.Event()
        self._running: set[str] = set()
        self._on_stuck: Callable[[list[str]], None] | None = None
        self._watchdog: threading.Timer | None = None
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
                self.actors[spec.name] = self.graph.kind(spec).make(spec.kind, self.ctx, spec.name)

    def statistics(self) -> dict[str, EdgeStatistics]:
        """Per-edge counters."""
        return {name: e.statistics() for name, e in self.edges.items()}

    def actor_statistics(self) -> dict[str, dict[str, Any]]:
        """Per-actor counters."""
        return {name: a.statistics() for name, a in self.actors.items()}

    def unwritten(self) -> dict[str, int]:
        """Per kind, the items actors were given and have not delivered (see the module's notes).

        Exact once :meth:`run` has returned; while the graph runs it includes
        what is merely on its way. Safe to call from another thread.
        """
        total: dict[str, int] = {}
        for actor in list(self.actors.values()):
            report = getattr(actor, "unwritten", None)
            if report is None:
                continue
            for kind, n in report().items():
                total[kind] = total.get(kind, 0) + n
        return total

    def stop(self) -> None:
        """Begin an orderly shutdown: cancel the sources; the rest drains.

        With a ``stop_timeout``, the clock starts now: what has not drained by
        then is cancelled (see the module's notes). Idempotent.
        """
        self.stopping = True
        self._stop_requested.set()
        for scope in self._source_scopes:
            scope.cancel()

    def abort(self, reason: str = "abort") -> None:
        """Cancel everything now; ``reason`` is kept in :attr:`cancelled`."""
        if self._root is not None and not self._root.cancel_scope.cancel_called:
            self.cancelled = self.cancelled or reason
            self._root.cancel_scope.cancel()
            self._arm_watchdog()

    def _arm_watchdog(self) -> None:
        # Cancellation reaches every task at its next checkpoint; a thread stuck
        # in a system call has none. Only a thread can notice that in time.
        if self._on_stuck is None or self._watchdog is not None:
            return
        grace = cancel_grace(self.stop_timeout) if self.stop_timeout is not None else 1.0
        on_stuck = self._on_stuck
        self._watchdog = threading.Timer(grace, lambda: on_stuck(sorted(self._running)))
        self._watchdog.daemon = True
        self._watchdog.start()

    async def _enforce_stop_timeout(self) -> None:
        await self._stop_requested.wait()
        if self.stop_timeout is None:
            return
        await trio.sleep(self.stop_timeout - cancel_grace(self.stop_timeout))
        left = sorted(self._running)
        log.error("stop timeout: %s still running %.1fs after the stop; cancelling them",
                  ", ".join(left) or "nothing", self.stop_timeout - cancel_grace(self.stop_timeout))
        self.abort("stop timeout")

    async def _run_actor(self, name: str, actor: Actor) -> None:
        spec = self.graph.actor(name)
        ports = self.ports[name]
        restarts = 0
        self._running.add(name)
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
                    self.abort("failure")
                    return
        finally:
            self._running.discard(name)
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
        on_stuck: Callable[[list[str]], None] | None = None,
    ) -> int:
        """Run until every actor has returned; 0 on a clean end, 1 if an actor failed or anything is unwritten.

        ``background`` tasks (health records, watchdog) run beside the graph
        and are cancelled once the graph has finished. ``on_stuck`` is called
        from another thread, with the names of the actors still running, if
        the graph has not ended a grace period after it was cancelled (see
        the module's notes); it is expected to end the process.
        """
        self._on_stuck = on_stuck
        self.build_actors()
        saved = gc.get_threshold()
        if GC_GEN0_THRESHOLD is not None:
            # What exists now (loaded rule sets, caches) lives for the whole run: keep it
            # out of every later collection, and collect the short-lived rest less often.
            gc.collect()
            gc.freeze()
            gc.set_threshold(max(saved[0], GC_GEN0_THRESHOLD), *saved[1:])
        try:
            await self._run(handle_signals, on_started, background)
        finally:
            gc.set_threshold(*saved)
            if self._watchdog is not None:
                self._watchdog.cancel()
        return 1 if self.failed or any(self.unwritten().values()) else 0

    async def _run(
        self,
        handle_signals: bool,
        on_started: Callable[[], None] | None,
        background: list[Callable[[Supervisor], Awaitable[None]]] | None,
    ) -> None:
        async with trio.open_nursery() as outer:
            if handle_signals:
                # started before any actor runs: a signal is never a KeyboardInterrupt mid-graph
                await outer.start(self._watch_signals)
            outer.start_soon(self._enforce_stop_timeout)
            for task in background or ():
                outer.start_soon(task, self)
            async with trio.open_nursery() as root:
                self._root = root
                for name, actor in self.actors.items():
                    root.start_soon(self._run_actor, name, actor, name=f"actor:{name}")
                if on_started is not None:
                    on_started()
            outer.cancel_scope.cancel()

    async def _watch_signals(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            count = 0
            async for signum in signals:
                count += 1
                name = signal.Signals(signum).name
                if count == 1:
                    if self.stop_timeout is None:
                        log.info("received %s: stopping sources, draining the pipeline", name)
                    else:
                        log.info("received %s: stopping sources, draining the pipeline (at most %.1fs)",
                                 name, self.stop_timeout)
                    self.stop()
                else:
                    log.warning("received %s again: cancelling everything", name)
                    self.abort("second signal")

