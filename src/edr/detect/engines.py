"""The detection engines of one configuration, built together: :class:`Detection`.

Built once per run (and again on a rule reload) by the application's wiring,
and shared by the actors that need it: the detection actor matches with
every engine, the router asks which fields rules read, the scanner asks the
IOC engine about file hashes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs

from edr.config import Config
from edr.detect.alert import Detector
from edr.detect.simple import SimpleEngine, load_rules

if TYPE_CHECKING:
    from edr.detect.ioc import IocSet
    from edr.detect.sigma import SigmaEngine
    from edr.detect.yara_rules import YaraRuleSet

log = logging.getLogger("edr.detect")


@attrs.frozen
class Detection:
    """The configured engines, in the order the detection actor runs them.

    ``sigma``, ``iocs`` and ``simple`` are the same objects as in
    ``engines`` (None when that engine is off), for the actors that need one
    engine in particular. ``problems`` are the rule errors the load logged
    (each naming its file), which a reload compares with the running set's.
    """

    engines: tuple[Detector, ...]
    sigma: SigmaEngine | None = None
    iocs: IocSet | None = None
    simple: SimpleEngine | None = None
    problems: tuple[str, ...] = ()

    def fields_read(self, category: str) -> frozenset[str] | None:
        """Every field any engine reads for ``category``; None if some engine cannot say (read all)."""
        return fields_read(self.engines, category)


def load_detection(cfg: Config) -> Detection:
    """Sigma, IOC and simple engines per configuration.

    Rule errors are logged with file and reason and the rule is skipped; a
    missing rules path is a warning, not a failure.
    """
    engines: list[Detector] = []
    problems: list[str] = []
    sigma = iocs = simple = None
    if cfg.scanner.sigma_enabled:
        from edr.detect.sigma import load_sigma

        sigma, report = load_sigma(
            cfg.sigma_paths(),
            placeholders=cfg.sigma.placeholders,
            cache_dir=cfg.sigma.cache_dir or None,
            match_mode=cfg.scanner.sigma_match_mode,
            match_debug=cfg.alerts.match_debug,
            max_groups=cfg.sigma.correlation_max_groups,
            max_bytes=cfg.sigma.correlation_max_bytes,
        )
        for rej in report.rejections:
            problems.append(f"sigma: {rej.path}: rule {rej.title or rej.rule_id or '?'} rejected ({rej.stage}): "
                            f"{rej.reason}")
            log.warning("%s", problems[-1])
        log.info("sigma: %d rules loaded, %d inert, %d rejected, %d correlations from %d files in %.2fs%s",
                 report.loaded, report.inert, report.rejected, report.correlations, report.files,
                 report.seconds, " (cached)" if report.cached else "")
        engines.append(sigma)
    if cfg.ioc.enabled:
        from edr.detect.ioc import load_iocs

        iocs = load_iocs(cfg.ioc)
        for err in iocs.errors:
            problems.append(f"ioc: {err}")
            log.warning("%s", problems[-1])
        log.info("ioc: %s", iocs.summary())
        engines.append(iocs)
    if cfg.simple.enabled:
        result = load_rules(cfg.simple.rules_path, builtin=cfg.simple.builtin_enabled)
        for err in result.errors:
            problems.append(f"simple rules: {err}")
            log.warning("%s", problems[-1])
        log.info("simple rules: %d loaded", len(result.rules))
        simple = SimpleEngine(result.rules)
        engines.append(simple)
    return Detection(tuple(engines), sigma=sigma, iocs=iocs, simple=simple, problems=tuple(problems))


def load_yara(cfg: Config, files: Iterable[str] | None = None) -> YaraRuleSet | None:
    """The compiled YARA rules per ``[scanner]``; None when YARA is off.

    ``files``, when given, are the only rule files compiled (those the
    permission check found trustworthy, when it refused some).
    """
    if not cfg.scanner.yara_enabled:
        return None
    from pathlib import Path

    from edr.detect.yara_rules import compile_rules  # yara's own import: only where YARA is on

    rules = compile_rules(cfg.scanner.yara_rules_path, None if files is None else [Path(f) for f in files])
    for err in rules.errors:
        log.warning("yara: %s", err)
    log.info("yara: %s", rules.summary())
    return rules


def fields_read(engines: Iterable[Any], category: str) -> frozenset[str] | None:
    """Every field any engine reads for ``category``; None if some engine cannot say (read all)."""
    out: set[str] = set()
    for engine in engines:
        getter = getattr(engine, "fields_read", None)
        if getter is None:
            return None
        fields = getter(category)
        if fields is None:
            return None
        out |= fields
    return frozenset(out)
