"""One builder per actor kind: the configuration and :class:`~edr.wiring.context.Shared` in, an actor out.

Builders import what they build lazily, so that a graph of one mode never
loads another mode's dependencies (bcc, pywintrace) and validating a graph
loads nothing heavy. Each may be slow (compiling rules or BPF programs) and
may raise the error that says why its actor cannot run here.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edr.alerts.actor import AlertWriter, EventWriter
    from edr.alerts.sinks.actor import SinkActor
    from edr.detect.actor import DetectActor
    from edr.enrich.actor import EnricherActor
    from edr.metrics.actor import CoverageActor
    from edr.response.actor import Responder
    from edr.route.router import Router
    from edr.scan.actor import ScanDispatcher
    from edr.sources.ebpf.actor import EbpfNormalizer, EbpfSource
    from edr.sources.etw.actor import EtwNormalizerActor, EtwSource
    from edr.sources.etw.eventlog_actor import EventLogNormalizer, EventLogSource
    from edr.sources.replay.actor import ReplaySource
    from edr.sources.replay.normalizer import Normalizer
    from edr.wiring.context import AgentContext


def replay_source(ctx: AgentContext, name: str) -> ReplaySource:
    """The recorded files of ``ctx.options.files``, read by ``ctx.options.workers`` processes."""
    from edr.sources.replay.actor import ReplaySource

    return ReplaySource(name, list(ctx.options.files), ctx.config.pipeline.batch_size, ctx.log,
                        workers=ctx.options.workers)


def replay_normalizer(ctx: AgentContext, name: str) -> Normalizer:
    """Recorded records to events; no configuration."""
    from edr.sources.replay.normalizer import Normalizer

    return Normalizer(name, ctx.log)


def ebpf_source(ctx: AgentContext, name: str) -> EbpfSource:
    """Compile and attach the BPF programs per ``[sensor]`` (seconds), then drain them until the graph runs.

    Raises SensorUnavailable with the fix.
    """
    from edr.sources.ebpf.actor import EbpfSource
    from edr.sources.ebpf.sensor import EbpfSensor

    cfg = ctx.config.sensor
    sensor = EbpfSensor(families=set(cfg.families), max_args=cfg.max_args, max_arg_bytes=cfg.max_arg_bytes,
                        page_count=cfg.page_count, ignore_pids={os.getpid()}, batch_window_ms=cfg.batch_window_ms,
                        cache_dir=ctx.config.sigma.cache_dir)
    sensor.open()
    if sensor.udp_hooks_error is not None and "network" in sensor.families:
        ctx.log.warning("ebpf: UDP is observed from the syscalls, its source end read from the live process, "
                        "because the cgroup socket hooks could not be attached: %s", sensor.udp_hooks_error)
    source = EbpfSource(name, sensor, ctx.config.pipeline.batch_size)
    # attached from here on: keep the rings empty until the graph runs (start-up loses nothing)
    source.start_draining()
    return source


def ebpf_normalizer(ctx: AgentContext, name: str) -> EbpfNormalizer:
    """A decoder that resolves relative paths and cgroups through /proc."""
    from edr.sources.ebpf.actor import EbpfNormalizer
    from edr.sources.ebpf.decode import Decoder
    from edr.sources.ebpf.host import LiveHost

    return EbpfNormalizer(name, Decoder(host=LiveHost(), ignore_pids={os.getpid()}), ctx.log)


def etw_source(ctx: AgentContext, name: str) -> EtwSource:
    """Load pywintrace (raises EtwUnavailable with the fix); the session starts when the actor runs."""
    from edr.sources.etw.actor import EtwSource, import_pywintrace
    from edr.sources.etw.bridge import CallbackBridge
    from edr.sources.etw.providers import PROVIDERS
    from edr.sources.etw.session import EtwSession

    cfg = ctx.config.etw
    bridge = CallbackBridge(cfg.bridge_records)
    session = EtwSession(import_pywintrace(), name=cfg.session_name, providers=[PROVIDERS[p] for p in cfg.providers],
                         callback=bridge.callback, buffer_kb=cfg.buffer_kb, min_buffers=cfg.min_buffers,
                         max_buffers=cfg.max_buffers)
    return EtwSource(name, session, bridge, ctx.config.pipeline.batch_size)


def etw_normalizer(ctx: AgentContext, name: str) -> EtwNormalizerActor:
    """The ETW normalizer over this machine's host facts (or ``ctx.options.windows_host``)."""
    from edr.sources.etw.actor import EtwNormalizerActor
    from edr.sources.etw.host import WindowsHost
    from edr.sources.etw.normalize import EtwNormalizer, NormalizerLimits

    cfg = ctx.config.etw
    host = ctx.options.windows_host
    if not isinstance(host, WindowsHost):
        host = WindowsHost.live(cfg)
    limits = NormalizerLimits(processes=ctx.config.process.max_entries, file_objects=cfg.pointer_cache_entries,
                              file_keys=cfg.pointer_cache_entries, key_objects=cfg.pointer_cache_entries,
                              script_block_timeout=cfg.script_block_timeout_secs)
    normalizer = EtwNormalizer(devices=host.devices, sids=host.sids, facts=host.facts, pe=host.pe,
                               pe_wait=cfg.pe_wait_ms / 1000, limits=limits, ignore_pids={os.getpid()})
    return EtwNormalizerActor(name, normalizer, host)


def eventlog_source(ctx: AgentContext, name: str) -> EventLogSource:
    """Load pywin32 (raises EventLogUnavailable with the fix) and the saved bookmarks; subscribing is the actor's."""
    from edr.sources.etw.eventlog_actor import EventLogSource, import_pywin32
    from edr.sources.etw.eventlog_bookmarks import BookmarkFile
    from edr.sources.etw.eventlog_reader import EventLogReader

    cfg = ctx.config.eventlog
    evtlog, events = import_pywin32()
    store = BookmarkFile(cfg.bookmark_directory or ctx.config.agent.state_directory)
    bookmarks = store.load()
    reader = EventLogReader(evtlog, events, cfg.channels, start_after=bookmarks.positions(),
                            retry_secs=cfg.retry_secs)
    return EventLogSource(name, reader, bookmarks, store, ctx.config.pipeline.batch_size,
                          save_interval=cfg.bookmark_interval_secs)


def eventlog_normalizer(ctx: AgentContext, name: str) -> EventLogNormalizer:
    """Event Log records to events, as replay decodes them; no configuration."""
    from edr.sources.etw.eventlog_actor import EventLogNormalizer

    return EventLogNormalizer(name, ctx.log)


def router(ctx: AgentContext, name: str) -> Router:
    """Lanes, and connection aggregation per ``[network]`` (never in replay: records stay as recorded)."""
    from edr.route.aggregation import ConnectionAggregator
    from edr.route.router import Router

    cfg = ctx.config.network
    aggregator = None
    if cfg.aggregation_enabled and ctx.mode != "replay":
        detection = ctx.shared.detection
        aggregator = ConnectionAggregator(detection.fields_read, window=float(cfg.aggregation_window_secs),
                                          max_entries=cfg.aggregation_max_entries)
    return Router(name, aggregator)


def enricher(ctx: AgentContext, name: str) -> EnricherActor:
    """Live Linux: the shared process cache seeded with the running processes; replay: DNS and process
    correlation per recording (nothing of this machine looked up); other modes: pass-through."""
    from edr.enrich.actor import EnricherActor

    if ctx.mode == "replay":
        from edr.enrich.process_cache import ProcessCache
        from edr.enrich.replay import ReplayEnricher

        limits = ctx.config.process
        return EnricherActor(name, ReplayEnricher(processes=lambda: ProcessCache(
            max_entries=limits.max_entries, max_bytes=limits.max_bytes)))
    if ctx.mode != "linux":
        return EnricherActor(name, None)
    from edr.enrich.enricher import Enricher

    core = Enricher(processes=ctx.shared.processes)
    seeded = core.seed_running()
    ctx.log.info("enricher: %d running processes loaded", seeded)
    return EnricherActor(name, core)


def detect(ctx: AgentContext, name: str) -> DetectActor:
    """Every configured engine, replaced between batches when a hot reload publishes new rules."""
    from edr.detect.actor import DetectActor

    rules = ctx.shared.rules
    return DetectActor(name, list(rules.current.detection.engines), ctx.log, rules=rules)


def scan(ctx: AgentContext, name: str) -> ScanDispatcher:
    """YARA per ``[scanner]`` and hashing for the IOC engine's hash indicators (both replaced by a hot reload)."""
    from edr.scan.actor import ScanDispatcher, build_planner, build_scanner

    cfg = ctx.config
    rules = ctx.shared.rules
    iocs = rules.current.detection.iocs if cfg.ioc.enabled else None
    want_hashes = bool(iocs is not None and iocs.has_hashes)
    scanner = build_scanner(cfg, rules.current.yara, want_hashes)
    return ScanDispatcher(name, scanner, build_planner(cfg, scanner), iocs, workers=cfg.scan.workers,
                          queue_capacity=cfg.scan.queue_capacity, debug=cfg.alerts.match_debug != "off",
                          rules=rules if cfg.ioc.enabled or cfg.scanner.yara_enabled else None)


def alerts(ctx: AgentContext, name: str) -> AlertWriter:
    """The daily ECS alert files of ``[alerts]`` (or ``ctx.options.alert_file``), standard output when ``stdout``.

    Lines are folded (``alerts.dedup_*``) and chained (``alerts.chain_key_file``); the chain continues from
    the last line of the alert files and, live, from the anchor in ``agent.state_directory``.
    """
    import time

    from edr.alerts.actor import AlertWriter, ChainAnchor
    from edr.alerts.alert_lines import AlertLines
    from edr.alerts.chain import AlertChain, ChainKeyError, ChainStart, load_chain_key
    from edr.alerts.chain_recovery import family_path, recover_chain
    from edr.alerts.daily_file import DailyFile
    from edr.alerts.dedup import AlertDeduplicator
    from edr.alerts.ecs import HostInfo
    from edr.platform.private_files import PrivateDir

    cfg = ctx.config.alerts
    live = ctx.mode in ("linux", "windows")
    file = ctx.options.alert_file
    if file is None and ctx.options.alerts_to_file:
        file = DailyFile(cfg.directory, cfg.filename)
    key = None
    if cfg.chain_key_file:
        try:
            key = load_chain_key(cfg.chain_key_file)
        except ChainKeyError as exc:
            ctx.log.error("alerts: %s; the chain goes on with plain SHA-256 (alerts verify will say so)", exc)
    start = ChainStart.new_chain()
    anchor = None
    if file is not None:
        state = ctx.config.agent.state_directory if live else None
        resumed = recover_chain(file.directory, file.filename, state_directory=state, key=key)
        for note in resumed.notes:
            ctx.log.warning("alerts: %s", note)
        start = resumed.start
        if state is not None:
            anchor = ChainAnchor(PrivateDir(state), family_path(file.directory, file.filename), key, ctx.log)
    # A replay keeps one alert per matching record (each names its file and record) unless asked to fold
    # them as the live agent does; folding is for alert fatigue on a live host.
    fold = cfg.dedup_enabled and (live or ctx.options.dedup)
    dedup = (AlertDeduplicator(cfg.dedup_window_secs, max_entries=cfg.dedup_max_entries, max_bytes=cfg.dedup_max_bytes)
             if fold else None)
    core = AlertLines(HostInfo(replay=ctx.mode == "replay"), AlertChain(start, key=key), dedup)
    return AlertWriter(name, file, core, stdout=ctx.options.stdout, log=ctx.log, anchor=anchor,
                       clock=time.time if live else None)


def events(ctx: AgentContext, name: str) -> EventWriter:
    """The event stream of ``[events]``; disabled, the actor only drains its input."""
    from edr.alerts.actor import EventWriter
    from edr.alerts.daily_file import DailyFile

    cfg = ctx.config.events
    file = DailyFile(cfg.directory, cfg.filename) if cfg.enabled else None
    return EventWriter(name, file, ctx.log, frozenset(cfg.categories))


def responder(ctx: AgentContext, name: str) -> Responder:
    """Active response per ``[response]``; ``allowlist_paths`` inherits ``allowlist.paths`` / platform defaults."""
    from edr.response.actor import Responder
    from edr.response.allowlist import ImageAllowlist
    from edr.response.budget import ResponseGovernor
    from edr.response.decision import ResponsePolicy
    from edr.response.kill import terminate_target

    cfg = ctx.config
    allow = ImageAllowlist(cfg.response.allowlist_images, cfg.trusted_paths(cfg.response.allowlist_paths))
    # Until the worker has gathered the whole protected set, this process at least.
    policy = ResponsePolicy(enabled=cfg.response.enabled, prevention=cfg.response.prevention_enabled,
                            min_severity=cfg.response.min_severity, allowlist=allow,
                            protected_pids=frozenset({os.getpid()}))
    r = cfg.response
    governor = ResponseGovernor(per_rule_per_minute=r.rule_kills_per_minute,
                                global_per_minute=r.global_kills_per_minute, cooldown=r.breaker_cooldown_secs,
                                max_identities=r.decided_processes, identity_ttl=r.decided_ttl_secs)
    return Responder(name, policy, r.channel_capacity, ctx.options.terminator or terminate_target,
                     governor=governor)


def syslog_sink(ctx: AgentContext, name: str) -> SinkActor:
    """Alerts to the ``[syslog]`` targets; draining only when there is none (or a replay not asked to deliver)."""
    from edr.alerts.sinks.build import build_syslog

    return build_syslog(ctx.config.syslog, ctx.mode, name, ctx.log)


def webhook_sink(ctx: AgentContext, name: str) -> SinkActor:
    """Alerts to the ``[webhook]`` URLs; draining only when there is none (or a replay not asked to deliver)."""
    from edr.alerts.sinks.build import build_webhook

    return build_webhook(ctx.config.webhook, ctx.mode, name, ctx.log)


def coverage(ctx: AgentContext, name: str) -> CoverageActor:
    """Telemetry-loss alerts per ``[coverage]``; the agent binds it to the supervisor's statistics."""
    from edr.metrics.actor import CoverageActor
    from edr.metrics.coverage import LossMonitor

    cfg = ctx.config.coverage
    monitor = LossMonitor(interval=cfg.alert_interval_secs, burst=cfg.alert_burst)
    return CoverageActor(name, monitor, cfg.check_secs, ctx.log)
