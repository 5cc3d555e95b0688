"""The actor kinds a graph file may name: each actor's class and its builder."""

from __future__ import annotations

from typing import Final

from edr.runtime.kinds import Kind, Kinds


def _kind(actor: str, builder: str) -> Kind:
    return Kind(actor, f"edr.wiring.builders:{builder}")


KINDS: Final = Kinds({
    "replay_source": _kind("edr.sources.replay.actor:ReplaySource", "replay_source"),
    "normalizer": _kind("edr.sources.replay.normalizer:Normalizer", "replay_normalizer"),
    "ebpf_source": _kind("edr.sources.ebpf.actor:EbpfSource", "ebpf_source"),
    "ebpf_normalizer": _kind("edr.sources.ebpf.actor:EbpfNormalizer", "ebpf_normalizer"),
    "etw_source": _kind("edr.sources.etw.actor:EtwSource", "etw_source"),
    "etw_normalizer": _kind("edr.sources.etw.actor:EtwNormalizerActor", "etw_normalizer"),
    "eventlog_source": _kind("edr.sources.etw.eventlog_actor:EventLogSource", "eventlog_source"),
    "eventlog_normalizer": _kind("edr.sources.etw.eventlog_actor:EventLogNormalizer", "eventlog_normalizer"),
    "router": _kind("edr.route.router:Router", "router"),
    "enricher": _kind("edr.enrich.actor:EnricherActor", "enricher"),
    "detect": _kind("edr.detect.actor:DetectActor", "detect"),
    "scan": _kind("edr.scan.actor:ScanDispatcher", "scan"),
    "alerts": _kind("edr.alerts.actor:AlertWriter", "alerts"),
    "events": _kind("edr.alerts.actor:EventWriter", "events"),
    "responder": _kind("edr.response.actor:Responder", "responder"),
    "syslog_sink": _kind("edr.alerts.sinks.actor:SinkActor", "syslog_sink"),
    "webhook_sink": _kind("edr.alerts.sinks.actor:SinkActor", "webhook_sink"),
    "coverage": _kind("edr.metrics.actor:CoverageActor", "coverage"),
    "null": Kind("edr.runtime.null:NullSink"),
})
