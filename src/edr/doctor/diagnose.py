"""Run every probe for one configuration and judge what they found: the doctor's one entry point.

:func:`diagnose` loads the configuration as ``edr run`` would (a file that
does not load is itself a failed check: the host is still examined), runs
the :class:`~edr.doctor.probes.Probes` in the order the agent meets their
subjects at start, and hands the facts to :func:`edr.doctor.assess.build_report`.
:func:`explain_rule` does the rule part only, for ``--rule ID``.

Blocking (file system, bcc, systemctl; compiling the rules when the
agent's compiled-rule cache is not current takes seconds for SigmaHQ's).
Warnings that the checked code logs meanwhile are kept in the report's
``messages`` instead of going to standard error.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import attrs

from edr.config import PACK, Config, ConfigError, LoadedConfig, load_config
from edr.detect.sigma.rules import CompiledRule
from edr.doctor.assess import build_report
from edr.doctor.facts import (
    ConfigFacts,
    DirectoryFacts,
    DoctorFacts,
    Finding,
    PackFacts,
    RulePathFacts,
    SigmaFacts,
    TrustFacts,
)
from edr.doctor.probes import Probes, configured_rule_paths, etw_settings
from edr.doctor.profiles import linux_profile, windows_profile
from edr.doctor.report import Report
from edr.doctor.rule_verdicts import SensorProfile
from edr.platform import current


@attrs.frozen
class Diagnosis:
    """The report, and what ``--rule`` needs: the rules the agent would load and this platform's profile."""

    report: Report
    rules: tuple[CompiledRule, ...] = ()
    profile: SensorProfile | None = None


class _Collect(logging.Handler):
    """Keeps the warnings edr's code logs while the doctor runs it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname.lower()}: {record.name}: {record.getMessage()}")


@contextlib.contextmanager
def _collected() -> Iterator[list[str]]:
    handler = _Collect()
    logger = logging.getLogger("edr")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def config_facts(path: str | None, environ: dict[str, str] | None = None) -> tuple[ConfigFacts, LoadedConfig | None]:
    """Load the configuration as ``edr run`` does; a ConfigError becomes the facts' ``error``."""
    from edr.rule_trust import check_config_file, running_as_root

    try:
        loaded = load_config(path, environ=environ)
    except ConfigError as exc:
        return ConfigFacts(file=path, error=str(exc)), None
    file = os.path.abspath(loaded.file) if loaded.file is not None else None
    if file is None or not running_as_root():
        return ConfigFacts(file=file), loaded
    try:
        warning = check_config_file(loaded)
    except ConfigError as exc:
        return ConfigFacts(file, trust=Finding(False, file, exc.reason.split("; refusing")[0],
                                                "chown root and chmod go-w the file and every directory "
                                                "above it")), loaded
    if warning is not None:
        return ConfigFacts(file, trust=Finding(False, file, warning, "chown root and chmod go-w it"),
                           tolerated=True), loaded
    return ConfigFacts(file, trust=Finding(True, f"{file}: only root (or the agent's user) can change it")), loaded


def _directories(config: Config, probes: Probes, create: bool) -> tuple[DirectoryFacts, ...]:
    wanted = [
        ("agent.state_directory", config.agent.state_directory, "its state (the instance lock)", True, ""),
        ("logging.directory", config.logging.directory, "the operational log", True, ""),
        ("alerts.directory", config.alerts.directory, "alerts", True, ""),
        ("events.directory", config.events.directory, "the event stream", config.events.enabled,
         "events.enabled is off"),
        ("sigma.cache_dir", config.sigma.cache_dir, "the compiled-rule cache",
         bool(config.sigma.cache_dir) and config.scanner.sigma_enabled,
         "the compiled-rule cache is off (sigma.cache_dir is empty)" if config.scanner.sigma_enabled
         else "scanner.sigma_enabled is off"),
    ]
    out = []
    for key, path, role, used, why in wanted:
        if used:
            out.append(probes.directory(key, path, role, create=create))
        else:
            out.append(DirectoryFacts(key, path, role, used=False, why_unused=why))
    return tuple(out)


def _with_pack(config: Config, pack_paths: list[str]) -> Config:
    """``config`` with ``pack`` replaced by the active pack's rule directories (none: dropped), as the agent does."""
    paths = config.sigma_paths()
    if PACK not in paths:
        return config
    expanded: list[str] = []
    for path in paths:
        expanded.extend(pack_paths if path == PACK else [path])
    return attrs.evolve(config, scanner=attrs.evolve(config.scanner, sigma_rules_path=expanded))


def profile_of(config: Config, platform: str, probes: Probes) -> SensorProfile:
    """The live sensor's profile on ``platform`` under ``config``."""
    if platform == "windows":
        return windows_profile(etw_settings(config).providers, pe_info=probes.pe_info(config))
    return linux_profile(config.sensor.families)


@attrs.frozen
class _RuleFacts:
    pack: PackFacts
    paths: tuple[RulePathFacts, ...]
    trust: TrustFacts
    sigma: SigmaFacts


def _rules(config: Config, probes: Probes) -> _RuleFacts:
    """The rule pack, then the rule paths as ``edr run`` expands (pack) and narrows (trust) them, then Sigma."""
    pack, pack_paths = probes.pack(config)
    expanded = _with_pack(config, pack_paths)
    trust, narrowed = probes.trust(expanded)
    paths = tuple(probes.rule_path(*p) for p in configured_rule_paths(expanded))
    return _RuleFacts(pack, paths, trust, probes.sigma(narrowed))


def diagnose(config_path: str | None = None, *, probes: Probes | None = None, create: bool = False,
             platform: str | None = None, environ: dict[str, str] | None = None) -> Diagnosis:
    """Every check for the configuration at ``config_path`` (None: where ``edr run`` would look).

    ``create``: create missing directories (0700) as the agent would at start;
    by default nothing is created or written. ``platform`` defaults to this one.
    """
    probes = probes or Probes()
    platform = platform or current().name
    with _collected() as messages:
        linux = probes.linux_host() if platform == "linux" else None
        windows = probes.windows_host() if platform == "windows" else None
        config_state, loaded = config_facts(config_path, environ)
        context = {"config": config_state.file or "built-in defaults",
                   "user": f"uid {os.geteuid()}" if hasattr(os, "geteuid") else "",
                   "mode": "create missing directories" if create else "dry run (nothing created)"}
        if loaded is None:
            facts = DoctorFacts(platform, config_state, linux, windows)
            report = build_report(facts, None, context)
            report.messages.extend(messages)
            return Diagnosis(report)
        config = loaded.config
        if linux is not None:
            linux = attrs.evolve(linux, sensor=(*linux.sensor, ("compiled sensor", (probes.compiled_sensor(config),))))
        directories = _directories(config, probes, create)
        lock = probes.lock(config.agent.state_directory)
        rules = _rules(config, probes)
        profile = profile_of(config, platform, probes)
        service = probes.service(loaded, platform)
        sinks = tuple(probes.sinks(config))
        facts = DoctorFacts(platform, config_state, linux, windows, directories, lock, rules.paths, rules.trust,
                            rules.pack, rules.sigma, service, sinks,
                            prevention=config.response.enabled and config.response.prevention_enabled)
        report = build_report(facts, profile, context)
    report.messages.extend(messages)
    return Diagnosis(report, rules.sigma.rules, profile)


def load_for_rules(config_path: str | None = None, *, probes: Probes | None = None, platform: str | None = None,
                   environ: dict[str, str] | None = None) -> tuple[str | None, tuple[CompiledRule, ...],
                                                                  SensorProfile | None]:
    """For ``--rule``: (why the configuration did not load, or None; the rules the agent would load; the profile)."""
    probes = probes or Probes()
    platform = platform or current().name
    with _collected():
        config_state, loaded = config_facts(config_path, environ)
        if loaded is None:
            return config_state.error, (), None
        sigma = _rules(loaded.config, probes).sigma
        return sigma.error or None, sigma.rules, profile_of(loaded.config, platform, probes)
