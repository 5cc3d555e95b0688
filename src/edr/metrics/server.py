"""The Prometheus endpoint of the live agent, served by prometheus_client from its own thread.

Nothing on the event path updates a metric: a scrape reads the statistics
the actors keep anyway. The HTTP server runs in a daemon thread, so a slow
or stuck scraper never blocks the event loop; each scrape asks the event
loop for one snapshot (``trio.from_thread.run_sync``), so the statistics are
read between two steps of the actors, never while one is changing them.
Before the loop runs and after it has ended, the snapshot is read directly
(nothing else runs then).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from edr.detect.sigma.costs import RuleCosts
from edr.metrics.families import Heartbeats, Process, metric_families
from edr.metrics.listen import MetricsUnavailable, parse_listen
from edr.metrics.snapshot import Snapshot, take_snapshot
from edr.platform import current

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from edr.runtime.supervisor import Supervisor

log = logging.getLogger("edr.metrics")


class AgentCollector(Collector):
    """Reads the supervisor's statistics at scrape time and yields them as metric families."""

    def __init__(self, sup: Supervisor, *, pack: str | None, costs: Sequence[RuleCosts], top_rules: int,
                 heartbeats: Callable[[], Heartbeats] | None = None) -> None:
        self.sup = sup
        self.pack = pack
        self.costs = list(costs)
        self.top_rules = top_rules
        self.heartbeats = heartbeats
        self.start_time = time.time()
        self.scrapes = 0
        #: set while the event loop runs (:meth:`MetricsServer.run`)
        self.token: trio.lowlevel.TrioToken | None = None

    def _read(self) -> tuple[Snapshot, Process]:
        usage = current().resource_usage()
        snap = take_snapshot(self.sup.statistics(), self.sup.actor_statistics())
        return snap, Process(start_time=self.start_time, rss_bytes=usage.rss_bytes,
                             peak_rss_bytes=usage.peak_rss_bytes, cpu_seconds=usage.cpu_seconds)

    def snapshot(self) -> tuple[Snapshot, Process]:
        """One consistent reading: on the event loop while it runs, directly otherwise."""
        token = self.token
        if token is not None:
            try:
                return trio.from_thread.run_sync(self._read, trio_token=token)
            except trio.RunFinishedError:
                pass
        for _ in range(3):  # no loop: only a worker thread could be changing a dict now
            try:
                return self._read()
            except RuntimeError:
                continue
        return self._read()

    def collect(self) -> Iterator[Metric]:
        """Every metric family, from one snapshot."""
        self.scrapes += 1
        snap, process = self.snapshot()
        yield from metric_families(snap, process, pack=self.pack, costs=self.costs, top_rules=self.top_rules,
                                   heartbeats=self.heartbeats() if self.heartbeats is not None else None)


class MetricsServer:
    """prometheus_client's HTTP server for one :class:`AgentCollector`, on ``listen``."""

    def __init__(self, collector: AgentCollector, listen: str) -> None:
        self.collector = collector
        self.listen = listen
        self.host, self.port = parse_listen(listen)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self._httpd: WSGIServer | None = None

    def start(self) -> None:
        """Bind and serve from a daemon thread; MetricsUnavailable (naming ``metrics.listen``) if it cannot bind."""
        from prometheus_client import start_http_server

        try:
            httpd, _thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        except OSError as exc:
            raise MetricsUnavailable(f"cannot serve metrics on {self.listen} (metrics.listen): "
                                     f"{exc.strerror or exc}") from None
        self._httpd = httpd
        self.port = httpd.server_address[1]  # the real one when 0 was asked for
        log.info("metrics: serving Prometheus metrics at http://%s/metrics", self.address)

    @property
    def address(self) -> str:
        """``host:port`` as bound."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def run(self, _sup: Any = None) -> None:
        """Background task: let scrapes read on the event loop until cancelled."""
        self.collector.token = trio.lowlevel.current_trio_token()
        try:
            await trio.sleep_forever()
        finally:
            self.collector.token = None

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
