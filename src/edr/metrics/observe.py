"""What the live agent starts so that operators can see it: the metrics endpoint, the heartbeat, loss checks.

:func:`observe` is called once the actors are built and before the graph
runs; it binds the coverage actor to the supervisor's statistics, applies the
rule-cost settings to the Sigma engines, starts the metrics endpoint (a bind
failure raises :class:`~edr.metrics.server.MetricsUnavailable` before anything
runs) and returns the background tasks to run beside the graph.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from edr.detect.sigma.costs import RuleCosts
from edr.health import Heartbeat
from edr.metrics.actor import CoverageActor
from edr.metrics.listen import MetricsUnavailable
from edr.metrics.snapshot import Snapshot, take_snapshot

if TYPE_CHECKING:
    from edr.config import Config
    from edr.metrics.server import MetricsServer
    from edr.runtime.supervisor import Supervisor

log = logging.getLogger("edr.metrics")


@attrs.define
class Observability:
    """The running observers: the endpoint (None when ``[metrics] enabled`` is false), the heartbeat,
    and the background tasks to run beside the graph."""

    server: MetricsServer | None
    heartbeat: Heartbeat
    background: list[Callable[[Supervisor], Awaitable[None]]]

    def stop(self) -> None:
        """Stop serving metrics (idempotent)."""
        if self.server is not None:
            self.server.stop()


def active_pack(config: Config) -> str | None:
    """The id of the active rule pack; None when none is installed or the store cannot be read."""
    from edr.rulepacks.store import PackStore

    try:
        return PackStore(config.rules.store_directory).active_id()
    except Exception:  # the endpoint says "none"; the rule loading has already logged why
        return None


def rule_costs(engines: Sequence[Any], every: int, budget_us: float) -> list[RuleCosts]:
    """Apply the sampling period and budget to every engine that accounts rule costs; their tables."""
    tables = []
    for engine in engines:
        configure = getattr(engine, "configure_costs", None)
        if configure is not None:
            configure(every, budget_us)
            tables.append(engine.costs)
    return tables


def observe(config: Config, sup: Supervisor, engines: Sequence[Any]) -> Observability:
    """Bind, configure and start what ``[metrics]`` and ``[coverage]`` ask for (see the module's notes)."""
    def loss_probe() -> Snapshot:
        # The loss monitor reads only what the sources lost and the edges dropped, every check_secs: the
        # sources' statistics, not every actor's (the detection actor's alone took most of a millisecond).
        sources = {name: actor.statistics() for name, actor in sup.actors.items() if actor.is_source}
        return take_snapshot(sup.statistics(), sources)

    if config.coverage.loss_alerts:
        for actor in sup.actors.values():
            if isinstance(actor, CoverageActor):
                actor.bind(loss_probe)
    heartbeat = Heartbeat()
    background: list[Callable[[Supervisor], Awaitable[None]]] = []
    if config.coverage.heartbeat_secs > 0:
        background.append(functools.partial(heartbeat.run, interval=float(config.coverage.heartbeat_secs)))
    cfg = config.metrics
    costs = rule_costs(engines, cfg.rule_sample_every, cfg.rule_budget_us)
    server = None
    if cfg.enabled:
        try:  # only an agent that serves metrics needs prometheus-client
            from edr.metrics.families import Heartbeats
            from edr.metrics.server import AgentCollector, MetricsServer
        except ImportError as exc:
            raise MetricsUnavailable(f"[metrics] enabled = true needs prometheus-client ({exc}): "
                                     "pip install prometheus-client") from None
        collector = AgentCollector(sup, pack=active_pack(config), costs=costs, top_rules=cfg.top_rules,
                                   heartbeats=lambda: Heartbeats(heartbeat.count, heartbeat.last))
        server = MetricsServer(collector, cfg.listen)
        server.start()
        background.append(server.run)
    return Observability(server=server, heartbeat=heartbeat, background=background)
