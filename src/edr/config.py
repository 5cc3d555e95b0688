"""Configuration: attrs models, layered sources, errors that name the key.

Precedence, lowest to highest: built-in defaults < TOML file (``--config``,
else ``EDR_CONFIG``, else the installed one: ``/etc/edr/config.toml`` on
Linux, ``%ProgramData%\\edr\\config.toml`` on Windows, when it exists) <
environment ``EDR__SECTION__KEY`` (values parsed as TOML) < CLI flags.

Paths: the defaults follow the installed layout (:func:`installed_layout`:
``/var/lib/edr`` for state, rule packs and the compiled-rule cache,
``/var/log/edr`` for the operational log, alerts and events; under
``%ProgramData%\\edr`` on Windows). A relative path in a configuration file
is relative to that file's directory, never to the working directory; one
from the environment or the command line is relative to the working
directory. A rule path may be the word ``bundled``: the rules shipped with
edr for that key (:func:`edr.resources.shipped`); ``scanner.sigma_rules_path``
may also list ``pack``, the active rule pack (``edr rules install``), which
the commands that load rules expand. Every path is absolute once loaded.

Section and key names follow Rustinel's ``config.toml`` (``scanner``,
``allowlist``, ``logging``, ``alerts``, ``response``, ``network``, ``ioc``,
``process``) so an operator's file carries over; edr's own additions live in
their own sections (``events``, ``pipeline``, ``health``, ``simple``,
``sigma``, ``scan``, ``sensor``).
"""

from __future__ import annotations

import math
import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import cattrs

from edr.platform import current as current_platform
from edr.runtime.errors import EdrError, Location, toml_error_line
from edr.severity import SEVERITIES
from edr.sink_targets import parse_syslog_target, parse_webhook_url, webhook_display

ENV_PREFIX: Final = "EDR__"
#: A rule path naming the rules shipped with edr for its key.
BUNDLED: Final = "bundled"
#: A Sigma rule path naming the active rule pack's rules.
PACK: Final = "pack"
#: What a ConfigError about the configuration file as a whole (not one key) names as its key.
FILE_KEY: Final = "(file)"
#: A documented configuration is ~10 KiB; anything near this is not one (and is not read whole).
MAX_CONFIG_BYTES: Final = 4 << 20
#: Upper bound of every duration in seconds: beyond an hour a timeout is a typo, and the
#: values reach C code (YARA's timeout is an int) where a huge number overflows.
MAX_SECONDS: Final = 3600.0


def platform_trusted_paths() -> list[str]:
    """The compiled-in allowlist prefixes for this platform."""
    return list(current_platform().trusted_paths)


class ConfigError(EdrError, ValueError):
    """A configuration value that cannot be used; the message names the key and its source.

    A problem with the configuration file itself (missing, not a regular file,
    unreadable, not UTF-8, not TOML) has ``key`` :data:`FILE_KEY` and the
    file's path as ``source``. ``location``: the source as ``file`` when it
    is one (not an environment variable or a default), the line when known,
    the dotted key.
    """

    def __init__(self, key: str, source: str, reason: str, line: int | None = None) -> None:
        is_file = not source.startswith(("environment", "default", "--", "?"))
        location = Location(source if is_file else None, line, None if key == FILE_KEY else key)
        if key == FILE_KEY:
            message = f"configuration file {source}: {reason}"
        else:
            message = f"configuration {key} (from {source}): {reason}"
        super().__init__(reason, location, message=message)
        self.key = key
        self.source = source


def _one_of(*choices: str) -> Any:
    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(repr(c) for c in choices)}, not {value!r}")

    return check


def _positive(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value <= 0:
        raise ValueError(f"must be greater than 0, not {value!r}")


def _non_negative(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value < 0:
        raise ValueError(f"must be 0 or more, not {value!r}")


def _seconds(*, zero_ok: bool) -> Any:
    """A duration: more than 0 (or 0 with ``zero_ok``) and at most :data:`MAX_SECONDS`."""

    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        low_ok = value >= 0 if zero_ok else value > 0
        if not low_ok or value > MAX_SECONDS:
            low = "from 0" if zero_ok else "more than 0"
            raise ValueError(f"must be {low} and at most {MAX_SECONDS:g} seconds, not {value!r}")

    return check


def _known_categories(_inst: Any, attribute: attrs.Attribute[Any], values: list[str]) -> None:
    from edr.event import CATEGORIES

    unknown = sorted(set(values) - CATEGORIES)
    if unknown:
        raise ValueError(f"unknown event categories {unknown} (known: {', '.join(sorted(CATEGORIES))})")


_LEVELS = ("trace", "debug", "info", "warn", "warning", "error", "critical")


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


def _path(text: str, bundled: str | None = None) -> dict[str, Any]:
    """Metadata of a path-valued key: resolved at load (see the module's notes); ``bundled``: where
    under the shipped rules the word ``bundled`` points for this key."""
    return {"doc": text, "path": True, "bundled": bundled}


@attrs.frozen
class Layout:
    """Where an installed edr keeps things on this platform."""

    config_file: str
    state: str
    logs: str


def installed_layout(platform: str | None = None, environ: Mapping[str, str] | None = None) -> Layout:
    """The installed layout of ``platform`` ("linux" or "windows"; default this one): the defaults of
    every path key and of the config file."""
    if (platform or current_platform().name) == "windows":
        env = os.environ if environ is None else environ
        base = env.get("ProgramData") or "C:\\ProgramData"
        root = f"{base}\\edr"
        return Layout(config_file=f"{root}\\config.toml", state=f"{root}\\state", logs=f"{root}\\logs")
    return Layout(config_file="/etc/edr/config.toml", state="/var/lib/edr", logs="/var/log/edr")


_LAYOUT: Final = installed_layout()


@attrs.define
class AgentConfig:
    """[agent]: the agent process itself (edr addition)."""

    state_directory: str = attrs.field(
        default=_LAYOUT.state, metadata=_path("Agent state (the instance lock); created 0700.")
    )
    stop_timeout_secs: float = attrs.field(
        default=10.0, validator=_seconds(zero_ok=False),
        metadata=_doc("Longest an orderly stop (SIGTERM) may take; alerts still unwritten then are "
                      "counted and the exit code is 1."),
    )
    permissions: str = attrs.field(
        default="enforce", validator=_one_of("enforce", "warn"),
        metadata=_doc('As root: "enforce" refuses configuration and rule files other users can write; '
                      '"warn" only logs them (test rigs).'),
    )


@attrs.define
class ScannerConfig:
    """[scanner]: which detection engines run and where their rules are."""

    sigma_enabled: bool = attrs.field(default=True, metadata=_doc("Run the Sigma engine."))
    sigma_rules_path: str | list[str] = attrs.field(
        factory=lambda: [BUNDLED, PACK],
        metadata=_path('Sigma rule files or directories (recursive): "bundled" is the rules shipped with edr, '
                       '"pack" the active rule pack (edr rules install|update).', bundled="sigma"),
    )
    sigma_match_mode: str = attrs.field(
        default="all", validator=_one_of("all", "best"),
        metadata=_doc('"all": one alert per matching rule; "best": only the most severe per event.'),
    )
    yara_enabled: bool = attrs.field(default=True, metadata=_doc("Scan executables with YARA."))
    yara_rules_path: str = attrs.field(
        default=BUNDLED, metadata=_path('YARA rule file or directory ("bundled": shipped with edr).', bundled="yara")
    )
    yara_allowlist_paths: list[str] | None = attrs.field(
        default=None, metadata=_doc("Path prefixes YARA never scans; unset inherits allowlist.paths.")
    )


@attrs.define
class AllowlistConfig:
    """[allowlist]: trusted path prefixes shared by response, IOC hashing and YARA."""

    paths: list[str] | None = attrs.field(
        default=None, metadata=_doc("Trusted prefixes; unset means the platform defaults.")
    )


@attrs.define
class LoggingConfig:
    """[logging]: the agent's operational log."""

    level: str = attrs.field(default="info", validator=_one_of(*_LEVELS), metadata=_doc("Log level."))
    directory: str = attrs.field(default=_LAYOUT.logs, metadata=_path("Directory of the daily log files."))
    filename: str = attrs.field(default="edr.log", metadata=_doc("Log file name; the date is appended."))
    console_output: bool = attrs.field(default=False, metadata=_doc("Also log to the console (stderr)."))


@attrs.define
class AlertsConfig:
    """[alerts]: the ECS NDJSON alert files."""

    directory: str = attrs.field(default=_LAYOUT.logs, metadata=_path("Directory of the daily alert files."))
    filename: str = attrs.field(default="alerts.json", metadata=_doc("Alert file name; the date is appended."))
    match_debug: str = attrs.field(
        default="off", validator=_one_of("off", "summary", "full"),
        metadata=_doc("Attach match details to alerts: off | summary | full."),
    )
    dedup_enabled: bool = attrs.field(
        default=True, metadata=_doc("Fold identical alerts (same rule, acting process and key fields) within "
                                    "dedup_window_secs into the first, written at once, and one rollup "
                                    "carrying edr.alert.count."),
    )
    dedup_window_secs: float = attrs.field(
        default=10.0, validator=_positive,
        metadata=_doc("Seconds from the first of identical alerts during which the others are counted; the "
                      "rollup is written when the window closes."),
    )
    dedup_max_entries: int = attrs.field(
        default=4096, validator=_positive,
        metadata=_doc("Open dedup windows at most; beyond, the oldest closes early (its rollup written, counted)."),
    )
    dedup_max_bytes: int = attrs.field(
        default=8 << 20, validator=_positive,
        metadata=_doc("Bytes the dedup windows may hold; beyond, the oldest closes early (its rollup written, "
                      "counted)."),
    )
    chain_key_file: str = attrs.field(
        default="",
        metadata=_path('File holding the HMAC key of the alert chain (mode 0600, at least 16 bytes: '
                      '"openssl rand -hex 32"); "" chains with plain SHA-256.'),
    )


@attrs.define
class ResponseConfig:
    """[response]: active response (terminating the offending process)."""

    enabled: bool = attrs.field(default=False, metadata=_doc("Evaluate alerts for response at all."))
    prevention_enabled: bool = attrs.field(
        default=False, metadata=_doc("Really kill; false means dry-run (log what would be killed).")
    )
    min_severity: str = attrs.field(
        default="critical", validator=_one_of(*SEVERITIES),
        metadata=_doc("Lowest alert severity that triggers a response."),
    )
    channel_capacity: int = attrs.field(
        default=128, validator=_positive,
        metadata=_doc("Queued response requests; beyond this they are dropped and counted."),
    )
    allowlist_images: list[str] = attrs.field(
        factory=list, metadata=_doc("Image basenames or full paths never terminated.")
    )
    allowlist_paths: list[str] | None = attrs.field(
        default=None, metadata=_doc("Path prefixes never terminated; unset inherits allowlist.paths.")
    )
    rule_kills_per_minute: int = attrs.field(
        default=10, validator=_positive,
        metadata=_doc("Kills (or dry-run would-kills) one rule may cause per minute; more opens the breaker."),
    )
    global_kills_per_minute: int = attrs.field(
        default=30, validator=_positive,
        metadata=_doc("Kills (or would-kills) all rules together may cause per minute; more opens the breaker."),
    )
    breaker_cooldown_secs: float = attrs.field(
        default=900.0, validator=_seconds(zero_ok=True),
        metadata=_doc("Once a budget is exceeded, seconds of dry-run (plus a critical alert); 0: until restart."),
    )
    decided_processes: int = attrs.field(
        default=8192, validator=_positive,
        metadata=_doc("Processes remembered as decided, so each gets one kill or would-terminate line."),
    )
    decided_ttl_secs: float = attrs.field(
        default=3600.0, validator=_seconds(zero_ok=False),
        metadata=_doc("Seconds a decided process is remembered (bounds pid reuse when no start time is known)."),
    )


@attrs.define
class ProcessConfig:
    """[process]: the process metadata cache."""

    max_entries: int = attrs.field(
        default=65536, validator=_positive, metadata=_doc("Process records kept when exits are missed.")
    )
    max_bytes: int = attrs.field(
        default=32 << 20, validator=_positive,
        metadata=_doc("Bytes the process records may hold (command lines included); oldest evicted, counted."),
    )


@attrs.define
class NetworkConfig:
    """[network]: aggregation of repeated identical connections."""

    aggregation_enabled: bool = attrs.field(default=True, metadata=_doc("Aggregate identical connections."))
    aggregation_max_entries: int = attrs.field(
        default=20000, validator=_positive, metadata=_doc("Distinct connections tracked at once.")
    )
    aggregation_window_secs: int = attrs.field(
        default=60, validator=_positive, metadata=_doc("Window after which an aggregate is emitted.")
    )
    aggregation_interval_buffer_size: int = attrs.field(
        default=50, validator=_positive, metadata=_doc("Accepted for Rustinel compatibility; unused.")
    )


@attrs.define
class IocConfig:
    """[ioc]: atomic indicators (hashes, IPs, domains, path regexes)."""

    enabled: bool = attrs.field(default=True, metadata=_doc("Match atomic indicators."))
    hashes_path: str = attrs.field(
        default=BUNDLED, metadata=_path('MD5/SHA1/SHA256 list ("" none).', bundled="ioc/hashes.txt"))
    ips_path: str = attrs.field(
        default=BUNDLED, metadata=_path('IP addresses and CIDR ranges ("" none).', bundled="ioc/ips.txt"))
    domains_path: str = attrs.field(
        default=BUNDLED, metadata=_path('Domains; *. or . = suffix ("" none).', bundled="ioc/domains.txt"))
    paths_regex_path: str = attrs.field(
        default=BUNDLED,
        metadata=_path('Path regexes (RE2, case-insensitive; "" none).', bundled="ioc/paths_regex.txt"),
    )
    default_severity: str = attrs.field(
        default="high", validator=_one_of(*SEVERITIES), metadata=_doc("Severity of IOC alerts.")
    )
    max_file_size_mb: int = attrs.field(
        default=50, validator=_positive, metadata=_doc("Larger files are not hashed (counted).")
    )
    hash_allowlist_paths: list[str] | None = attrs.field(
        default=None, metadata=_doc("Prefixes never hashed; unset inherits allowlist.paths.")
    )


@attrs.define
class SigmaConfig:
    """[sigma]: Sigma engine tuning (edr addition)."""

    cache_dir: str = attrs.field(
        default=f"{_LAYOUT.state}{os.sep}cache",
        metadata=_path('Cache directory (created 0700): the compiled Sigma rules and the eBPF sensor\'s '
                       'compiled build (ebpf-sensor.json); "" disables both caches (the sensor is then '
                       'compiled in a child process at every start).'),
    )
    correlation_max_groups: int = attrs.field(
        default=10000, validator=_positive, metadata=_doc("Correlation groups kept; oldest evicted.")
    )
    correlation_max_bytes: int = attrs.field(
        default=64 << 20, validator=_positive,
        metadata=_doc("Bytes correlation state may hold (groups, entries, values); oldest evicted, counted."),
    )
    placeholders: dict[str, list[str]] = attrs.field(
        factory=dict, metadata=_doc("Values for %placeholder% names used by the expand modifier.")
    )


@attrs.define
class ScanConfig:
    """[scan]: file and memory scanning workers (edr addition)."""

    workers: int = attrs.field(default=2, validator=_positive, metadata=_doc("Scan worker threads."))
    queue_capacity: int = attrs.field(
        default=1024, validator=_positive, metadata=_doc("Queued scan requests; overflow dropped, counted.")
    )
    timeout_secs: float = attrs.field(
        default=10.0, validator=_seconds(zero_ok=False), metadata=_doc("Per-scan timeout.")
    )
    yara_max_file_size_mb: int = attrs.field(
        default=64, validator=_positive, metadata=_doc("Larger files are not YARA-scanned (counted).")
    )
    cache_entries: int = attrs.field(
        default=16384, validator=_positive, metadata=_doc("Scan results cached by file identity.")
    )
    settle_secs: float = attrs.field(
        default=1.0, validator=_seconds(zero_ok=True),
        metadata=_doc("Quiet time before a written executable is scanned."),
    )
    memory_enabled: bool = attrs.field(default=False, metadata=_doc("YARA-scan new processes' memory."))
    memory_max_mb: int = attrs.field(
        default=256, validator=_positive, metadata=_doc("Skip processes with a larger resident size.")
    )
    sweep_interval_secs: int = attrs.field(
        default=0, validator=_non_negative, metadata=_doc("Periodic memory sweep interval; 0 = off.")
    )
    sweep_max_per_minute: int = attrs.field(
        default=60, validator=_positive, metadata=_doc("Memory-sweep rate limit (processes per minute).")
    )


@attrs.define
class SimpleConfig:
    """[simple]: TOML rules (edr addition)."""

    enabled: bool = attrs.field(default=True, metadata=_doc("Run simple TOML rules and built-ins."))
    rules_path: str = attrs.field(
        default=BUNDLED,
        metadata=_path('The [[rules]] file ("bundled": shipped with edr; "" built-ins only).',
                       bundled="edr-rules.toml"),
    )
    builtin_enabled: bool = attrs.field(default=True, metadata=_doc("Run the built-in detections."))


@attrs.define
class EventsConfig:
    """[events]: the optional stream of every normalized event (edr addition)."""

    enabled: bool = attrs.field(default=False, metadata=_doc("Write every event as NDJSON."))
    directory: str = attrs.field(default=_LAYOUT.logs, metadata=_path("Directory of the daily event files."))
    filename: str = attrs.field(default="events.json", metadata=_doc("Event file name; the date is appended."))
    categories: list[str] = attrs.field(
        factory=list, validator=_known_categories,
        metadata=_doc('Only these categories (e.g. ["process_creation"]); empty records every event.'),
    )


@attrs.define
class PipelineConfig:
    """[pipeline]: batching and channel capacities (edr addition)."""

    batch_size: int = attrs.field(default=512, validator=_positive, metadata=_doc("Events per batch at most."))
    capacities: dict[str, int] = attrs.field(
        factory=dict, metadata=_doc('Per-edge capacity overrides, e.g. "router.bulk->enricher.in" = 32.')
    )


@attrs.define
class HealthConfig:
    """[health]: periodic health records in the operational log (edr addition)."""

    interval_secs: int = attrs.field(default=10, validator=_positive, metadata=_doc("Seconds between records."))
    watchdog: bool = attrs.field(default=True, metadata=_doc("Send systemd watchdog pings when asked to."))


@attrs.define
class MetricsConfig:
    """[metrics]: the Prometheus endpoint and per-rule cost accounting (edr addition)."""

    enabled: bool = attrs.field(default=False, metadata=_doc("Serve Prometheus metrics at metrics.listen."))
    listen: str = attrs.field(default="127.0.0.1:9464", metadata=_doc("HOST:PORT of the metrics endpoint."))
    top_rules: int = attrs.field(
        default=20, validator=_positive, metadata=_doc("Rules exported with their own CPU-time series (costliest)."),
    )
    rule_sample_every: int = attrs.field(
        default=64, validator=_positive,
        metadata=_doc("Time the Sigma rule evaluations of one event in this many (cost sampling)."),
    )
    rule_budget_us: float = attrs.field(
        default=500.0, validator=_non_negative,
        metadata=_doc("A rule whose mean evaluation costs more (microseconds) is reported; 0 never."),
    )


@attrs.define
class CoverageConfig:
    """[coverage]: telemetry-loss alerts and the heartbeat (edr addition)."""

    loss_alerts: bool = attrs.field(
        default=True, metadata=_doc("Raise EDR-TELEMETRY-LOSS when the sensor loses events or an edge drops."),
    )
    check_secs: float = attrs.field(default=1.0, validator=_seconds(zero_ok=False),
                                    metadata=_doc("Seconds between loss checks."))
    alert_interval_secs: float = attrs.field(
        default=30.0, validator=_seconds(zero_ok=False),
        metadata=_doc("At most one loss alert per kind this often, once the burst is spent."),
    )
    alert_burst: int = attrs.field(default=3, validator=_positive,
                                   metadata=_doc("Loss alerts per kind allowed back to back."))
    heartbeat_secs: float = attrs.field(
        default=60.0, validator=_seconds(zero_ok=True),
        metadata=_doc("Seconds between heartbeat lines in the operational log; 0 turns them off."),
    )


@attrs.define
class SensorConfig:
    """[sensor]: the Linux eBPF sensor (edr addition)."""

    families: list[str] = attrs.field(
        factory=lambda: ["process", "network", "file", "dns"],
        metadata=_doc("Event families to collect: process, network, file, dns."),
    )
    max_args: int = attrs.field(default=32, validator=_positive, metadata=_doc("argv entries captured."))
    max_arg_bytes: int = attrs.field(default=4096, validator=_positive, metadata=_doc("argv bytes captured."))
    page_count: int = attrs.field(
        default=64, validator=_positive,
        metadata=_doc("Ring buffer pages per family (the process family gets four times as many)."),
    )
    batch_window_ms: int = attrs.field(
        default=25, validator=_non_negative,
        metadata=_doc("Under load, gather kernel records for up to this long per batch: "
                      "fewer, larger batches cost less CPU; it adds at most this much latency."),
    )


@attrs.define
class RetentionConfig:
    """[retention]: how long and how much of the daily files to keep (edr addition); 0 = no limit."""

    interval_secs: int = attrs.field(
        default=3600, validator=_positive, metadata=_doc("Seconds between retention passes (one runs at start)."),
    )
    alerts_max_days: int = attrs.field(
        default=90, validator=_non_negative,
        metadata=_doc("Alert files of the last N UTC days are kept (today included); older ones removed."),
    )
    alerts_max_total_mb: int = attrs.field(
        default=0, validator=_non_negative,
        metadata=_doc("MiB the alert files may hold together; the oldest are removed first (never today's)."),
    )
    events_max_days: int = attrs.field(
        default=7, validator=_non_negative, metadata=_doc("Event stream files of the last N UTC days are kept."),
    )
    events_max_total_mb: int = attrs.field(
        default=2048, validator=_non_negative,
        metadata=_doc("MiB the event stream files may hold together; the oldest are removed first."),
    )
    logs_max_days: int = attrs.field(
        default=30, validator=_non_negative, metadata=_doc("Operational log files of the last N UTC days are kept."),
    )
    logs_max_total_mb: int = attrs.field(
        default=512, validator=_non_negative,
        metadata=_doc("MiB the operational log files may hold together; the oldest are removed first."),
    )


#: The ETW providers the Windows sensor can enable, by manifest name (their GUIDs and keywords are
#: :data:`edr.sources.etw.providers.PROVIDERS`, which a test keeps in step with this list).
ETW_PROVIDERS: Final = (
    "Microsoft-Windows-Kernel-Process", "Microsoft-Windows-Kernel-File", "Microsoft-Windows-Kernel-Network",
    "Microsoft-Windows-Kernel-Registry", "Microsoft-Windows-DNS-Client", "Microsoft-Windows-PowerShell",
    "Microsoft-Windows-TaskScheduler", "Microsoft-Windows-WMI-Activity",
)


def _known_providers(_inst: Any, attribute: attrs.Attribute[Any], values: list[str]) -> None:
    unknown = sorted(set(values) - set(ETW_PROVIDERS))
    if unknown:
        raise ValueError(f"unknown ETW providers {unknown} (known: {', '.join(ETW_PROVIDERS)})")


@attrs.define
class EtwConfig:
    """[etw]: the real-time ETW session, the callback bridge and the normalizer's caches (Windows).

    Sizing for a fork storm (4,000 processes started as fast as Windows can):
    each start brings about 32 records (start, stop, ~25 image loads, a few
    file and registry opens), ~128,000 records in all. The bridge holds
    ``bridge_records`` = 262,144 between two hand-overs to Trio, twice that,
    so even a pipeline that took nothing during the whole storm loses nothing
    (``tests/etw/test_bridge.py`` replays such a storm). The kernel side gets
    ``min_buffers`` x ``buffer_kb`` = 16 MiB up front, growing to
    ``max_buffers`` x ``buffer_kb`` = 64 MiB (records are 200-400 bytes: over
    160,000 records) before ETW counts a lost event.
    """

    session_name: str = attrs.field(
        default="edr-etw",
        metadata=_doc("Name of the real-time session; a stale one of that name is stopped at start."))
    providers: list[str] = attrs.field(
        factory=lambda: list(ETW_PROVIDERS), validator=_known_providers,
        metadata=_doc("Providers to enable, by manifest name."))
    buffer_kb: int = attrs.field(default=256, validator=_positive, metadata=_doc("ETW buffer size (KiB)."))
    min_buffers: int = attrs.field(default=64, validator=_positive, metadata=_doc("ETW buffers allocated at start."))
    max_buffers: int = attrs.field(default=256, validator=_positive,
                                   metadata=_doc("ETW buffers at most; beyond them ETW counts lost events."))
    bridge_records: int = attrs.field(
        default=262_144, validator=_positive,
        metadata=_doc("Records the callback bridge holds for Trio; beyond them records are dropped, counted."))
    pe_wait_ms: int = attrs.field(
        default=100, validator=_non_negative,
        metadata=_doc("Per batch, how long new process images' hashes and version info are waited for; "
                      "0 never waits (they fill the cache for the next start)."))
    pe_max_file_mb: int = attrs.field(default=64, validator=_positive, metadata=_doc("Larger images are not hashed."))
    pe_workers: int = attrs.field(default=2, validator=_positive, metadata=_doc("Threads reading PE files."))
    pe_cache_entries: int = attrs.field(default=4096, validator=_positive,
                                        metadata=_doc("PE results kept, by file identity."))
    sid_cache_entries: int = attrs.field(default=4096, validator=_positive, metadata=_doc("SID -> account names kept."))
    pointer_cache_entries: int = attrs.field(
        default=65536, validator=_positive,
        metadata=_doc("FileObject, FileKey and KeyObject names kept (each); oldest evicted, counted."))
    script_block_timeout_secs: float = attrs.field(
        default=30.0, validator=_non_negative,
        metadata=_doc("A PowerShell script block whose parts stop coming is reported incomplete after this."))


#: SigmaHQ's release package with every generic and emerging-threat rule (experimental and up,
#: level medium and up); GitHub redirects ``latest`` to the newest release.
DEFAULT_UPDATE_URL: Final = "https://github.com/SigmaHQ/sigma/releases/latest/download/sigma_all_rules.zip"


def _update_url(_inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value and not value.startswith(("https://", "http://")):
        raise ValueError(f"must be an https:// URL (or http:// for a test server or mirror), not {value!r}")


@attrs.define
class RulesConfig:
    """[rules]: installed Sigma rule packs (``edr rules install|update|list|rollback``)."""

    store_directory: str = attrs.field(
        default=f"{_LAYOUT.state}{os.sep}rules",
        metadata=_path("Where rule packs are installed: one versioned directory per pack under packs/, "
                      "an 'active' link to the one in use. Created root-only (0700)."),
    )
    update_url: str = attrs.field(
        default=DEFAULT_UPDATE_URL, validator=_update_url,
        metadata=_doc("The pack 'edr rules update' downloads (.zip or .tar.gz). https:// is required; "
                      "http:// only when written so (a test server or a mirror on a trusted network)."),
    )
    ca_file: str = attrs.field(
        default="",
        metadata=_doc('PEM file of the CAs trusted for update_url, replacing the system\'s; "" uses the '
                      "system's CAs."),
    )
    timeout_secs: float = attrs.field(
        default=300.0, validator=_positive,
        metadata=_doc("Longest a download may take in all; the connection also gives up after 30 s of silence "
                      "(or this, if shorter)."),
    )
    require_signature: bool = attrs.field(
        default=False,
        metadata=_doc("Refuse any pack that is not signed by public_key: it must carry SHA256SUMS and "
                      "SHA256SUMS.minisig (a minisign signature of SHA256SUMS)."),
    )
    public_key: str = attrs.field(
        default="",
        metadata=_doc('minisign public key that signs packs: the key itself ("RW...") or the path of its .pub '
                      'file. With a key set, a signed pack whose signature does not verify is always refused.'),
    )
    keep: int = attrs.field(
        default=2, validator=_non_negative,
        metadata=_doc("Previous packs kept for 'edr rules rollback' besides the active one; older ones are "
                      "removed after each install."),
    )
    strict: bool = attrs.field(
        default=False,
        metadata=_doc("Refuse a pack in which any rule is rejected (by default rejected rules are reported "
                      "and the pack activates when at least one rule loads)."),
    )
    max_download_bytes: int = attrs.field(
        default=128 << 20, validator=_positive,
        metadata=_doc("Largest archive 'update' downloads or 'install' opens (SigmaHQ's is a few MB)."),
    )
    max_unpacked_bytes: int = attrs.field(
        default=512 << 20, validator=_positive,
        metadata=_doc("Most bytes a pack may unpack to in all (against zip and gzip bombs)."),
    )
    max_files: int = attrs.field(
        default=50_000, validator=_positive,
        metadata=_doc("Most entries (files and directories) a pack may hold (SigmaHQ's has ~4,000)."),
    )


# --- [eventlog]: the Windows Event Log channel source -------------------------------------------

#: The channels SigmaHQ's ``service: security|system|application|windefend`` rules are written for.
EVENTLOG_CHANNELS: Final = ("Security", "System", "Application", "Microsoft-Windows-Windows Defender/Operational")
#: WaitForMultipleObjects waits on at most 64 handles: one per channel, one spare.
MAX_EVENTLOG_CHANNELS: Final = 63


def _channels(_inst: Any, attribute: attrs.Attribute[Any], values: list[str]) -> None:
    if not values:
        raise ValueError(f"{attribute.name} must name at least one channel (or leave the source out of the graph)")
    if len(values) > MAX_EVENTLOG_CHANNELS:
        raise ValueError(f"{attribute.name} names {len(values)} channels; "
                         f"at most {MAX_EVENTLOG_CHANNELS} can be watched")
    seen: set[str] = set()
    for value in values:
        if not isinstance(value, str) or not value.strip() or value != value.strip():
            raise ValueError(f"{attribute.name}: {value!r} is not a channel name")
        if value.lower() in seen:  # channel names ignore case on Windows
            raise ValueError(f"{attribute.name}: {value!r} is named twice")
        seen.add(value.lower())


@attrs.define
class EventLogConfig:
    """[eventlog]: which Event Log channels are read live, and where their bookmarks are kept."""

    channels: list[str] = attrs.field(
        factory=lambda: list(EVENTLOG_CHANNELS), validator=_channels,
        metadata=_doc("Event Log channels read live (EvtSubscribe); a channel that cannot be read is logged "
                      "and retried, the others run."))
    bookmark_directory: str = attrs.field(
        default="", metadata=_path("Where each channel's bookmark (the last record passed on) is kept; "
                                   "empty: agent.state_directory."))
    bookmark_interval_secs: float = attrs.field(
        default=5.0, validator=_positive,
        metadata=_doc("How often the bookmarks are written while the agent runs (and always when it stops)."))
    retry_secs: float = attrs.field(
        default=30.0, validator=_positive,
        metadata=_doc("After a channel could not be subscribed to or read, how long before it is tried again."))


# --- sinks: [syslog] and [webhook] -------------------------------------------------------------
# Sections, not a [[sinks]] list: every key then has a name the environment can set
# (EDR__SYSLOG__TARGETS='["tcp://siem:514"]') and an error can name (syslog.targets). Several
# destinations of one kind are a list (targets, urls); each gets its own spool (named after it,
# edr.sink_targets.spool_name, in spool_directory) and its own delivery task, so one that is down never
# holds back another. No destination (the default) means no delivery: the sink actors only drain.

_STATE: Final = _LAYOUT.state
#: RFC 5424 facility names and codes (``security`` is code 13, "log audit").
FACILITIES: Final = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7, "uucp": 8,
    "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14, "solaris-cron": 15,
    **{f"local{i}": 16 + i for i in range(8)},
}



def _syslog_targets(_inst: Any, attribute: attrs.Attribute[Any], value: list[str]) -> None:
    for text in value:
        parse_syslog_target(text)
    if len(set(value)) != len(value):
        raise ValueError("lists a target twice")


def _webhook_urls(_inst: Any, attribute: attrs.Attribute[Any], value: list[str]) -> None:
    for text in value:
        try:
            parse_webhook_url(text)
        except ValueError as exc:  # the message shows the URL without what may be its token
            raise ValueError(str(exc).replace(repr(text), repr(webhook_display(text)))) from None
    if len(set(value)) != len(value):
        raise ValueError("lists a URL twice")


def _message_bytes(_inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 480 <= value <= 65_000:
        raise ValueError(f"must be from 480 (RFC 5424's minimum) to 65000 bytes, not {value!r}")


@attrs.define
class SyslogConfig:
    """[syslog]: alerts to syslog receivers as RFC 5424 messages (edr addition)."""

    targets: list[str] = attrs.field(
        factory=list, validator=_syslog_targets,
        metadata=_doc('Receivers: "udp://HOST:PORT", "tcp://HOST:PORT" (RFC 6587 octet counting), '
                      '"tls://HOST:PORT" (RFC 5425) or "unix:///dev/log"; empty sends nothing.'),
    )
    replay: bool = attrs.field(
        default=False, metadata=_doc("Deliver the alerts of 'edr replay' too (by default only the live agent's)."),
    )
    facility: str = attrs.field(
        default="local0", validator=_one_of(*FACILITIES),
        metadata=_doc("Facility of every message (kern, user, ..., authpriv, security, local0..local7); the "
                      "severity follows rule.severity: critical 2, high 3, medium 4, low 5, informational 6."),
    )
    app_name: str = attrs.field(default="edr", metadata=_doc("APP-NAME of every message (printable ASCII)."))
    message: str = attrs.field(
        default="json", validator=_one_of("json", "text"),
        metadata=_doc('MSG part: "json", the ECS document (as in the alert file, with event.id), or "text", one '
                      'line naming the rule, the process and what it acted on. Rule id and severity are always in '
                      'the structured data [edr@32473 ...].'),
    )
    max_message_bytes: int = attrs.field(
        default=8192, validator=_message_bytes,
        metadata=_doc("Longest message sent (rsyslog's default limit is 8 KiB); a longer JSON message is sent "
                      "as text instead, a longer text cut, both counted."),
    )
    tls_ca_file: str = attrs.field(
        default="", metadata=_path('PEM CAs that sign tls:// receivers\' certificates; "" uses the system\'s.'),
    )
    tls_cert_file: str = attrs.field(
        default="", metadata=_path('PEM client certificate for tls:// receivers that ask for one ("" none).'),
    )
    tls_key_file: str = attrs.field(
        default="", metadata=_path('Its private key (mode 0600); "" when tls_cert_file holds it.'),
    )
    timeout_secs: float = attrs.field(
        default=30.0, validator=_seconds(zero_ok=False),
        metadata=_doc("Longest a connection attempt, or a send that makes no progress, may take."),
    )
    confirm_secs: float = attrs.field(
        default=2.0, validator=_seconds(zero_ok=False),
        metadata=_doc("tcp/tls: messages count as delivered once the connection has stayed up this long after "
                      "them (plain syslog has no acknowledgement); those sent before a break are sent again."),
    )
    retry_initial_secs: float = attrs.field(
        default=0.5, validator=_seconds(zero_ok=False),
        metadata=_doc("First wait before reconnecting; doubles up to retry_max_secs."),
    )
    retry_max_secs: float = attrs.field(
        default=60.0, validator=_seconds(zero_ok=False), metadata=_doc("Longest wait between two connection attempts."),
    )
    drain_secs: float = attrs.field(
        default=5.0, validator=_seconds(zero_ok=False),
        metadata=_doc("At a stop (or the end of a replay), how long to go on delivering what is spooled; the rest "
                      "is delivered at the next start."),
    )
    spool_directory: str = attrs.field(
        default=f"{_STATE}/spool", metadata=_path("Where each destination's spool is (created 0700)."),
    )
    spool_max_mb: int = attrs.field(
        default=256, validator=_positive,
        metadata=_doc("MiB of undelivered alerts each destination's spool may hold; beyond, new ones are counted "
                      "as lost (the alert file still has them)."),
    )


@attrs.define
class WebhookConfig:
    """[webhook]: alerts POSTed in batches to HTTPS receivers, signed with HMAC-SHA256 (edr addition)."""

    urls: list[str] = attrs.field(
        factory=list, validator=_webhook_urls,
        metadata=_doc('Receivers ("https://...", or "http://..." when written so); each has its own queue and '
                      'spool; empty sends nothing.'),
    )
    replay: bool = attrs.field(
        default=False, metadata=_doc("Deliver the alerts of 'edr replay' too (by default only the live agent's)."),
    )
    format: str = attrs.field(
        default="ndjson", validator=_one_of("ndjson", "json"),
        metadata=_doc('Body: "ndjson" (application/x-ndjson, one ECS document a line) or "json" (a JSON array).'),
    )
    secret_file: str = attrs.field(
        default="",
        metadata=_path('File holding the shared secret (mode 0600, at least 16 bytes: "openssl rand -hex 32"); '
                       'every request carries X-Edr-Signature: sha256=HMAC-SHA256(secret, body) in hex. "" sends '
                       'unsigned requests.'),
    )
    ca_file: str = attrs.field(default="", metadata=_path('PEM CAs for https:// receivers; "" uses the system\'s.'))
    cert_file: str = attrs.field(default="", metadata=_path('PEM client certificate ("" none).'))
    key_file: str = attrs.field(default="", metadata=_path('Its private key (mode 0600); "" when cert_file holds it.'))
    timeout_secs: float = attrs.field(
        default=30.0, validator=_seconds(zero_ok=False),
        metadata=_doc("Longest a connection, or a wait for the response, may take."),
    )
    max_batch_alerts: int = attrs.field(
        default=500, validator=_positive, metadata=_doc("Alerts per request at most."),
    )
    max_batch_kb: int = attrs.field(
        default=1024, validator=_positive,
        metadata=_doc("KiB of documents per request at most (one larger alert is sent alone)."),
    )
    retry_initial_secs: float = attrs.field(
        default=0.5, validator=_seconds(zero_ok=False),
        metadata=_doc("First wait before a failed request is retried; doubles (with jitter) up to retry_max_secs."),
    )
    retry_max_secs: float = attrs.field(
        default=60.0, validator=_seconds(zero_ok=False),
        metadata=_doc("Longest wait between two attempts, unless Retry-After asks."),
    )
    retry_after_max_secs: float = attrs.field(
        default=600.0, validator=_seconds(zero_ok=False),
        metadata=_doc("Longest wait a receiver's Retry-After (seconds or an HTTP date) may impose."),
    )
    drain_secs: float = attrs.field(
        default=5.0, validator=_seconds(zero_ok=False),
        metadata=_doc("At a stop (or the end of a replay), how long to go on delivering what is spooled; the rest "
                      "is delivered at the next start."),
    )
    spool_directory: str = attrs.field(
        default=f"{_STATE}/spool", metadata=_path("Where each destination's spool is (created 0700)."),
    )
    spool_max_mb: int = attrs.field(
        default=256, validator=_positive,
        metadata=_doc("MiB of undelivered alerts each destination's spool may hold; beyond, new ones are counted "
                      "as lost (the alert file still has them)."),
    )


SECTION_CLASSES = (SyslogConfig, WebhookConfig)
for _cls in SECTION_CLASSES:
    attrs.resolve_types(_cls)


@attrs.define
class Config:
    """The whole effective configuration."""

    agent: AgentConfig = attrs.field(factory=AgentConfig)
    scanner: ScannerConfig = attrs.field(factory=ScannerConfig)
    allowlist: AllowlistConfig = attrs.field(factory=AllowlistConfig)
    logging: LoggingConfig = attrs.field(factory=LoggingConfig)
    alerts: AlertsConfig = attrs.field(factory=AlertsConfig)
    response: ResponseConfig = attrs.field(factory=ResponseConfig)
    process: ProcessConfig = attrs.field(factory=ProcessConfig)
    network: NetworkConfig = attrs.field(factory=NetworkConfig)
    ioc: IocConfig = attrs.field(factory=IocConfig)
    sigma: SigmaConfig = attrs.field(factory=SigmaConfig)
    scan: ScanConfig = attrs.field(factory=ScanConfig)
    simple: SimpleConfig = attrs.field(factory=SimpleConfig)
    events: EventsConfig = attrs.field(factory=EventsConfig)
    pipeline: PipelineConfig = attrs.field(factory=PipelineConfig)
    health: HealthConfig = attrs.field(factory=HealthConfig)
    metrics: MetricsConfig = attrs.field(factory=MetricsConfig)
    coverage: CoverageConfig = attrs.field(factory=CoverageConfig)
    sensor: SensorConfig = attrs.field(factory=SensorConfig)
    rules: RulesConfig = attrs.field(factory=RulesConfig)
    retention: RetentionConfig = attrs.field(factory=RetentionConfig)
    etw: EtwConfig = attrs.field(factory=EtwConfig)
    syslog: SyslogConfig = attrs.field(factory=SyslogConfig)
    webhook: WebhookConfig = attrs.field(factory=WebhookConfig)
    eventlog: EventLogConfig = attrs.field(factory=EventLogConfig)

    def trusted_paths(self, override: list[str] | None) -> list[str]:
        """A module's allowlist: its own list if set, else ``allowlist.paths``, else platform defaults."""
        if override is not None:
            return list(override)
        if self.allowlist.paths is not None:
            return list(self.allowlist.paths)
        return platform_trusted_paths()

    def sigma_paths(self) -> list[str]:
        """``scanner.sigma_rules_path`` as a list."""
        p = self.scanner.sigma_rules_path
        return [p] if isinstance(p, str) else list(p)


@attrs.define
class LoadedConfig:
    """The effective configuration and where each value came from."""

    config: Config
    sources: dict[str, str]
    file: Path | None


_converter = cattrs.Converter(forbid_extra_keys=True)


def _structure_value(value: Any, typ: Any, key: str, source: str) -> Any:
    # Reject the lossy coercions cattrs would otherwise make (1 -> True, "3" -> 3).
    def check(v: Any, t: Any) -> Any:
        """Raise ConfigError unless ``v`` fits ``t``; returns the type to structure ``v`` as."""
        args: tuple[Any, ...] = getattr(t, "__args__", ())
        origin = getattr(t, "__origin__", None)
        if t is bool and not isinstance(v, bool):
            raise ConfigError(key, source, f"expected true or false, got {v!r}")
        if t is int and (not isinstance(v, int) or isinstance(v, bool)):
            raise ConfigError(key, source, f"expected an integer, got {v!r}")
        if t is float and (not isinstance(v, (int, float)) or isinstance(v, bool)):
            raise ConfigError(key, source, f"expected a number, got {v!r}")
        if t is float and isinstance(v, float) and not math.isfinite(v):
            # TOML has inf and nan; no setting means "forever" or "undefined" by them.
            raise ConfigError(key, source, f"must be a finite number, not {v!r}")
        if t is str and not isinstance(v, str):
            raise ConfigError(key, source, f"expected a string, got {v!r}")
        if origin is list:
            if not isinstance(v, list):
                raise ConfigError(key, source, f"expected a list, got {v!r}")
            for item in v:
                check(item, args[0])
        if origin is dict:
            if not isinstance(v, dict):
                raise ConfigError(key, source, f"expected a table, got {v!r}")
            for item in v.values():
                check(item, args[1])
        if args and origin not in (list, dict):  # a union
            errors = []
            for alt in args:
                if alt is type(None):
                    continue
                try:
                    check(v, alt)
                    # cattrs cannot structure a union such as str | list[str]: use the alternative that fits.
                    return alt
                except ConfigError as exc:
                    errors.append(exc.reason)
            raise ConfigError(key, source, " or ".join(errors))
        return t

    return _converter.structure(value, check(value, typ))


def _build(cls: type[Any], data: Mapping[str, Any], sources: Mapping[str, str], prefix: str) -> Any:
    fields = {f.name: f for f in attrs.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in fields:
            src = sources.get(path)
            if not src:  # a whole unknown section: where its first key came from
                src = next((origin for k, origin in sources.items() if k.startswith(path)), "?")
            raise ConfigError(path, src, "unknown key")
        field = fields[key]
        if attrs.has(field.type) if isinstance(field.type, type) else False:
            if not isinstance(value, dict):
                raise ConfigError(path, sources.get(path, "?"), "expected a table")
            kwargs[key] = _build(field.type, value, sources, path + ".")
            continue
        src = sources.get(path, "default")
        structured = _structure_value(value, field.type, path, src)
        if field.validator is not None:
            try:
                field.validator(None, field, structured)
            except ValueError as exc:
                raise ConfigError(path, src, str(exc)) from None
        kwargs[key] = structured
    return cls(**kwargs)


def _resolve_types() -> None:
    for cls in (Config, *_SECTION_CLASSES):
        attrs.resolve_types(cls)


_SECTION_CLASSES = (
    AgentConfig, ScannerConfig, AllowlistConfig, LoggingConfig, AlertsConfig, ResponseConfig, ProcessConfig,
    NetworkConfig, IocConfig, SigmaConfig, ScanConfig, SimpleConfig, EventsConfig, PipelineConfig,
    HealthConfig, MetricsConfig, CoverageConfig, SensorConfig, RulesConfig, RetentionConfig, EtwConfig,
    SyslogConfig, WebhookConfig, EventLogConfig,
)
_resolve_types()


def _merge(target: dict[str, Any], layer: Mapping[str, Any], sources: dict[str, str], origin: str,
           prefix: str = "") -> None:
    for key, value in layer.items():
        path = f"{prefix}{key}"
        # Only sections nest; a table-valued key (pipeline.capacities) is replaced whole.
        if isinstance(value, dict) and not prefix:
            sub = target.setdefault(key, {})
            if not isinstance(sub, dict):
                raise ConfigError(path, origin, "expected a table")
            _merge(sub, value, sources, origin, path + ".")
        else:
            target[key] = value
            sources[path] = origin


def env_layer(environ: Mapping[str, str]) -> list[tuple[dict[str, Any], str]]:
    """``EDR__SECTION__KEY=value`` variables as layers; values are parsed as TOML."""
    layers = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX):].lower().split("__")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(name, f"environment variable {name}", "expected EDR__SECTION__KEY")
        raw = environ[name]
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            # A bare word such as debug or /var/log is a string, as an operator means it.
            value = raw
        layers.append(({parts[0]: {parts[1]: value}}, f"environment variable {name}"))
    return layers


def find_config_file(explicit: str | None, environ: Mapping[str, str],
                     installed: str | None = None) -> Path | None:
    """``--config``, else ``EDR_CONFIG``, else the installed file (``installed``, default this
    platform's :attr:`Layout.config_file`) if anything is there; None: built-in defaults only.

    Anything at the installed path counts (a directory, a FIFO, a dangling
    link): it is then reported by :func:`read_config_file`, not silently passed over.
    """
    if explicit:
        return Path(explicit)
    if environ.get("EDR_CONFIG"):
        return Path(environ["EDR_CONFIG"])
    default = Path(installed if installed is not None else _LAYOUT.config_file)
    return default if os.path.lexists(default) else None


def _resolve(value: str, key: str, source: str, base: str, bundled: str | None) -> str:
    """One path value made absolute (see the module's notes); "" stays "" (off)."""
    if value == "" or (value == PACK and key == "scanner.sigma_rules_path"):
        return value
    if value == BUNDLED:
        if bundled is None:
            raise ConfigError(key, source, f'"{BUNDLED}" names shipped rules; this key is not a rule path')
        from edr.resources import shipped

        try:
            return str(shipped("rules") / bundled)
        except FileNotFoundError as exc:
            raise ConfigError(key, source, str(exc)) from None
    return os.path.normpath(os.path.join(base, os.path.expanduser(value)))


def resolve_paths(config: Config, sources: Mapping[str, str], file: Path | None, cwd: str | None = None) -> None:
    """Make every path-valued key of ``config`` absolute, in place (see the module's notes)."""
    here = os.path.abspath(cwd if cwd is not None else os.getcwd())
    file_dir = os.path.dirname(os.path.abspath(file)) if file is not None else here
    for section in attrs.fields(Config):
        obj = getattr(config, section.name)
        for f in attrs.fields(type(obj)):
            if not f.metadata.get("path"):
                continue
            key = f"{section.name}.{f.name}"
            source = sources.get(key, "default")
            base = file_dir if file is not None and source == str(file) else here
            value = getattr(obj, f.name)
            bundled = f.metadata.get("bundled")
            if isinstance(value, list):
                setattr(obj, f.name, [_resolve(v, key, source, base, bundled) for v in value])
            elif isinstance(value, str):
                setattr(obj, f.name, _resolve(value, key, source, base, bundled))


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def read_config_file(path: Path) -> dict[str, Any]:
    """The TOML document in ``path``; a :class:`ConfigError` naming the path for anything else.

    The file is checked before it is read: opening a FIFO would wait for a
    writer, and a device may never end. It is opened non-blocking and checked
    again through the descriptor, so a file swapped for a FIFO in between is
    refused too, never waited on.
    """
    source = str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(FILE_KEY, source, "file not found") from None
    except OSError as exc:
        raise ConfigError(FILE_KEY, source, f"cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(FILE_KEY, source, f"is {_kind(st.st_mode)}, not a regular file")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ConfigError(FILE_KEY, source, f"cannot be read ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(FILE_KEY, source, f"is {_kind(st.st_mode)}, not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(FILE_KEY, source, f"cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(FILE_KEY, source, f"is larger than {MAX_CONFIG_BYTES >> 20} MiB: not a configuration file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(FILE_KEY, source, f"is not UTF-8 text (line {line}, byte offset {exc.start}: "
                          f"{data[exc.start:exc.start + 1]!r})", line) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(FILE_KEY, source, f"invalid TOML: {exc}", toml_error_line(exc)) from None


def load_config(
    path: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    installed: str | None = None,
) -> LoadedConfig:
    """Build the effective configuration from all layers.

    ``overrides`` are the CLI flags as ``{"section.key": value}``;
    ``installed`` replaces this platform's installed config file (tests).
    Raises :class:`ConfigError` naming the key and its source on any problem.
    """
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    file = find_config_file(path, environ, installed)
    if file is not None:
        data = read_config_file(file)
        for key, value in data.items():
            if not isinstance(value, dict):
                raise ConfigError(key, str(file), "expected a [section] table")
        _merge(merged, data, sources, str(file))
    for layer, origin in env_layer(environ):
        _merge(merged, layer, sources, origin)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        _merge(merged, {section: {key: value}}, sources, "command line")
    config = _build(Config, merged, sources, "")
    resolve_paths(config, sources, file)
    return LoadedConfig(config=config, sources=sources, file=file)


def default_config() -> Config:
    """The built-in defaults with their paths resolved, as :func:`load_config` gives them with no file."""
    config = Config()
    resolve_paths(config, {}, None)
    return config


def unstructure(config: Config) -> dict[str, Any]:
    """The configuration as plain TOML-able data (unset optional keys omitted)."""

    def strip(d: Any) -> Any:
        if isinstance(d, dict):
            return {k: strip(v) for k, v in d.items() if v is not None}
        return d

    data: dict[str, Any] = strip(_converter.unstructure(config))
    return data


def field_docs() -> dict[str, tuple[str, Any]]:
    """``{"section.key": (doc, default)}`` for every key, in declaration order."""
    out: dict[str, tuple[str, Any]] = {}
    for section in attrs.fields(Config):
        section_type: Any = section.type
        for f in attrs.fields(section_type):
            default = f.default
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                default = default.factory()
            out[f"{section.name}.{f.name}"] = (f.metadata.get("doc", ""), default)
    return out
