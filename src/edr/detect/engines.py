"""Build the configured detection engines once per run, shared by the actors that need them."""

from __future__ import annotations

import logging
from typing import Any

from edr.detect.alert import Detector
from edr.detect.simple import SimpleEngine, load_rules
from edr.runtime.actor import ActorContext

log = logging.getLogger("edr.detect")


def load_engines(ctx: ActorContext) -> list[Detector]:
    """Sigma, IOC and simple engines per configuration; built once, cached in ``ctx.shared``.

    Rule errors are logged with file and reason and the rule is skipped; a
    missing rules path is a warning, not a failure.
    """
    if "engines" in ctx.shared:
        return ctx.shared["engines"]
    cfg = ctx.config
    engines: list[Detector] = []
    if cfg.scanner.sigma_enabled:
        from edr.detect.sigma import load_sigma

        engine, report = load_sigma(
            cfg.sigma_paths(),
            placeholders=cfg.sigma.placeholders,
            cache_dir=cfg.sigma.cache_dir or None,
            match_mode=cfg.scanner.sigma_match_mode,
            match_debug=cfg.alerts.match_debug,
            max_groups=cfg.sigma.correlation_max_groups,
            max_bytes=cfg.sigma.correlation_max_bytes,
        )
        for rej in report.rejections:
            log.warning("sigma: %s: rule %s rejected (%s): %s", rej.path, rej.title or rej.rule_id or "?",
                        rej.stage, rej.reason)
        log.info("sigma: %d rules loaded, %d inert, %d rejected, %d correlations from %d files in %.2fs%s",
                 report.loaded, report.inert, report.rejected, report.correlations, report.files,
                 report.seconds, " (cached)" if report.cached else "")
        engines.append(engine)
    if cfg.ioc.enabled:
        from edr.detect.ioc import load_iocs

        iocs = load_iocs(cfg.ioc)
        for err in iocs.errors:
            log.warning("ioc: %s", err)
        log.info("ioc: %s", iocs.summary())
        engines.append(iocs)
    if cfg.simple.enabled:
        result = load_rules(cfg.simple.rules_path, builtin=cfg.simple.builtin_enabled)
        for err in result.errors:
            log.warning("simple rules: %s", err)
        log.info("simple rules: %d loaded", len(result.rules))
        engines.append(SimpleEngine(result.rules))
    ctx.shared["engines"] = engines
    return engines


def fields_read(engines: list[Any], category: str) -> frozenset[str] | None:
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
