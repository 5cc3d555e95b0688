"""A :class:`~edr.metrics.snapshot.Snapshot` as Prometheus metric families (sans-IO).

Names follow Prometheus conventions: ``edr_`` prefix, counters end in
``_total`` (prometheus_client appends it to a counter family's name), base
units (seconds, bytes). Per-rule series are limited to the ``top_rules``
costliest rules so that a pack of thousands of rules cannot blow up the
number of series.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import attrs
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from edr import __version__
from edr.detect.sigma.costs import RuleCosts
from edr.metrics.snapshot import Snapshot


@attrs.frozen
class Process:
    """The agent process: start time (epoch seconds), RSS and peak RSS (bytes), CPU seconds."""

    start_time: float
    rss_bytes: int
    peak_rss_bytes: int
    cpu_seconds: float


@attrs.frozen
class Heartbeats:
    """Heartbeat records written so far, and the epoch time of the last one (None: none yet)."""

    count: int
    last: float | None


def _counter(name: str, doc: str, labels: Sequence[str], values: Iterable[tuple[Sequence[str], float]]
             ) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=list(labels))
    for label_values, value in values:
        family.add_metric(list(label_values), value)
    return family


def _gauge(name: str, doc: str, labels: Sequence[str], values: Iterable[tuple[Sequence[str], float]]
           ) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for label_values, value in values:
        family.add_metric(list(label_values), value)
    return family


def metric_families(snap: Snapshot, process: Process, *, pack: str | None, costs: Sequence[RuleCosts] = (),
                    top_rules: int = 20, heartbeats: Heartbeats | None = None) -> Iterator[Metric]:
    """Every metric family of the agent, from one snapshot."""
    info = InfoMetricFamily("edr_build", "The agent's version.")
    info.add_metric([], {"version": __version__})
    yield info
    packs = InfoMetricFamily("edr_rule_pack", "The active Sigma rule pack (\"none\": bundled rules only).")
    packs.add_metric([], {"pack": pack or "none"})
    yield packs
    yield _gauge("edr_start_time_seconds", "When the agent started, seconds since the epoch.", (),
                 [((), process.start_time)])
    yield _gauge("edr_resident_memory_bytes", "Resident set size of the agent.", (), [((), process.rss_bytes)])
    yield _gauge("edr_peak_resident_memory_bytes", "Peak resident set size of the agent.", (),
                 [((), process.peak_rss_bytes)])
    yield _counter("edr_cpu_seconds", "CPU time of the agent (user and system).", (), [((), process.cpu_seconds)])

    yield _counter("edr_events", "Events the sensor delivered, per family (eBPF) or source (etw).", ("family",),
                   (((f,), n) for f, n in sorted(snap.events.items())))
    yield _counter("edr_events_lost", "Events the kernel (eBPF ring buffers) or ETW could not deliver, per family "
                   "or provider.", ("family",), (((f,), n) for f, n in sorted(snap.lost.items())))
    yield _counter("edr_detect_events", "Events the Sigma engine evaluated, per logsource category.", ("category",),
                   (((c,), n) for c, n in sorted(snap.categories.items())))

    edges = sorted(snap.edges.items())
    yield _counter("edr_edge_sent_events", "Events sent into an edge of the actor graph.", ("edge",),
                   (((e,), c.sent) for e, c in edges))
    yield _counter("edr_edge_dropped_events", "Events an edge shed by its overflow policy.", ("edge",),
                   (((e,), c.dropped) for e, c in edges))
    yield _gauge("edr_edge_depth_events", "Events queued on an edge now.", ("edge",),
                 (((e,), c.depth) for e, c in edges))
    yield _gauge("edr_edge_high_water_events", "Most events ever queued on an edge at once.", ("edge",),
                 (((e,), c.high_water) for e, c in edges))
    yield _gauge("edr_edge_capacity_batches", "An edge's capacity, in batches.", ("edge",),
                 (((e,), c.capacity) for e, c in edges))

    yield _counter("edr_alerts", "Alerts the detection engines raised, per engine and severity.",
                   ("engine", "severity"), (((e, s), n) for (e, s), n in sorted(snap.alerts.items())))
    yield _counter("edr_scan_alerts", "Alerts the file and memory scanner raised.", (), [((), snap.scan_alerts)])
    yield _counter("edr_alerts_written", "Alerts the alert writer delivered (file or standard output).", (),
                   [((), snap.alerts_written)])
    sigma = snap.sigma
    yield _counter("edr_sigma_events", "Events the Sigma engine matched.", (), [((), sigma.get("events", 0))])
    yield _counter("edr_sigma_rule_evaluations", "Sigma rule conditions evaluated (candidates of all events).", (),
                   [((), sigma.get("candidates_evaluated", 0))])
    yield _counter("edr_sigma_rule_matches", "Sigma rule conditions that matched.", (),
                   [((), sigma.get("matches", 0))])
    yield from _rule_families(costs, top_rules)

    yield _counter("edr_response_actions", "What became of the responder's kill requests, per outcome.",
                   ("outcome",), (((o,), n) for o, n in sorted(snap.response.items())))
    sinks = sorted(snap.sinks.items())
    yield _counter("edr_sink_sent_alerts", "Alerts a sink delivered.", ("sink",),
                   (((s,), c["sent"]) for s, c in sinks if "sent" in c))
    yield _counter("edr_sink_failed_alerts", "Alerts a sink failed to deliver.", ("sink",),
                   (((s,), c["failed"]) for s, c in sinks if "failed" in c))
    yield _gauge("edr_sink_queued_alerts", "Alerts waiting in a sink's queue.", ("sink",),
                 (((s,), c["queued"]) for s, c in sinks if "queued" in c))
    yield _gauge("edr_sink_spooled_alerts", "Alerts held in a sink's disk spool.", ("sink",),
                 (((s,), c["spooled"]) for s, c in sinks if "spooled" in c))

    cov = snap.coverage
    yield _counter("edr_telemetry_loss_alerts", "EDR-TELEMETRY-LOSS alerts raised, per kind.", ("kind",),
                   (((k,), n) for k, n in sorted(cov.get("loss_alerts", {}).items())))
    yield _counter("edr_telemetry_loss_suppressed", "Loss checks whose alert the rate limit held back, per kind.",
                   ("kind",), (((k,), n) for k, n in sorted(cov.get("loss_suppressed", {}).items())))
    if heartbeats is not None:
        yield _counter("edr_heartbeats", "Heartbeat records written to the operational log.", (),
                       [((), heartbeats.count)])
        if heartbeats.last is not None:
            yield _gauge("edr_heartbeat_timestamp_seconds", "When the last heartbeat was written (epoch seconds).",
                         (), [((), heartbeats.last)])


def _rule_families(costs: Sequence[RuleCosts], top_rules: int) -> Iterator[Metric]:
    cpu = CounterMetricFamily("edr_rule_cpu_seconds", "Estimated CPU time of a Sigma rule's evaluations "
                              "(sampled; costliest rules only).", labels=["rule_id", "rule"])
    evals = CounterMetricFamily("edr_rule_evaluations", "Estimated evaluations of a Sigma rule "
                                "(sampled; costliest rules only).", labels=["rule_id", "rule"])
    matches = CounterMetricFamily("edr_rule_matches", "Matches of a Sigma rule (exact; costliest rules only).",
                                  labels=["rule_id", "rule"])
    over = GaugeMetricFamily("edr_rule_over_budget", "1 for a Sigma rule whose mean evaluation exceeds "
                             "metrics.rule_budget_us.", labels=["rule_id", "rule"])
    for table in costs:
        for c in table.top(top_rules):
            labels = [c.rule_id, c.title]
            cpu.add_metric(labels, c.cpu_seconds)
            evals.add_metric(labels, c.evaluations)
            matches.add_metric(labels, c.matches)
            over.add_metric(labels, 1.0 if c.over_budget else 0.0)
    yield from (cpu, evals, matches, over)
