"""The Sigma detector: routes an event, evaluates candidate rules, feeds correlations.

Per event: find the route's literal index (:class:`RouteIndex`), collect the
candidate rules whose necessary literals the event contains, evaluate only
those, turn matches into alerts and feed them to the correlation engine.
The work per event depends on the event and the matches, not on how many
rules are loaded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final

from edr.detect.alert import Alert
from edr.detect.sigma import cache as rule_cache
from edr.detect.sigma.correlation import CorrelationEngine, Fired
from edr.detect.sigma.costs import RuleCosts
from edr.detect.sigma.logsources import ALL_FED, Route, applies
from edr.detect.sigma.matchers import MatchContext
from edr.detect.sigma.nodes import explain
from edr.detect.sigma.report import LoadReport
from edr.detect.sigma.rules import CompiledRule
from edr.detect.sigma.ruleset import ON_TERMINAL, CompileProgress, RuleSet, built
from edr.severity import severity_rank

MATCH_MODES: Final = ("all", "best")
DEBUG_MODES: Final = ("off", "summary", "full")
#: Default sampling period of the per-rule cost accounting (see :mod:`edr.detect.sigma.costs`).
COST_SAMPLE_EVERY: Final = 64

log = logging.getLogger("edr.detect.sigma")


class SigmaEngine:
    """Sigma detection engine implementing :class:`edr.detect.alert.Detector`.

    Build it with :func:`load_sigma`. ``match`` never raises on odd events.
    """

    name = "sigma"

    def __init__(self, ruleset: RuleSet, *, match_mode: str = "all", match_debug: str = "off",
                 max_groups: int = 10_000, max_bytes: int = 64 << 20) -> None:
        if match_mode not in MATCH_MODES:
            raise ValueError(f"match_mode must be one of {MATCH_MODES}, not {match_mode!r}")
        if match_debug not in DEBUG_MODES:
            raise ValueError(f"match_debug must be one of {DEBUG_MODES}, not {match_debug!r}")
        self.ruleset = ruleset
        self.rules = ruleset.rules
        self.match_mode = match_mode
        self.match_debug = match_debug
        self.correlation = CorrelationEngine(ruleset.correlations, max_groups, max_bytes)
        self._correlated = frozenset(
            number for kind, number in self.correlation.by_ref if kind == "r")
        #: rules from the rule cache whose condition tree is not built yet: built when first a candidate
        self._unbuilt = {rule.number for rule in self.rules if rule.pending}
        #: rules whose tree could not be built (logged once): never evaluated
        self._broken: set[int] = set()
        self._fields_read: dict[tuple[str, str | None], frozenset[str]] = {}
        self.events = 0
        self.candidates = 0
        self.matches = 0
        self.errors = 0
        #: events evaluated per logsource category (what reached the engine, by kind)
        self.categories: dict[str, int] = {}
        self.costs = RuleCosts(len(self.rules), self._rule_names, every=COST_SAMPLE_EVERY)
        self._countdown = COST_SAMPLE_EVERY

    # --- Detector ----------------------------------------------------------------
    def match(self, event: Any) -> list[Alert]:
        """Alerts for one event (rules in load order, then correlations)."""
        try:
            return self._match(event)
        except Exception:  # a detector must not take the pipeline down on one odd event
            self.errors += 1
            return []

    def match_batch(self, events: Sequence[Any]) -> list[Alert]:
        """The alerts of :meth:`match` over ``events``, in event order, in one call (the detect actor's).

        Never raises either: an event the engine fails on is counted in
        ``errors`` and skipped, the others are matched.
        """
        alerts: list[Alert] = []
        match = self._match
        for event in events:
            try:
                found = match(event)
            except Exception:  # as in match: one odd event must not cost the batch
                self.errors += 1
                continue
            if found:
                alerts.extend(found)
        return alerts

    def _match(self, event: Any) -> list[Alert]:
        self.events += 1
        category = event.category
        categories = self.categories
        categories[category] = categories.get(category, 0) + 1
        route = (event.product, category, event.service)
        index = self.ruleset.routes.get(route) or self.ruleset.route_index(route)
        fields = event.fields if isinstance(event.fields, dict) else {}
        ctx = MatchContext(fields)
        candidates = index.candidates(ctx)
        if not candidates:
            return []
        if self._unbuilt and not self._unbuilt.isdisjoint(candidates):
            self._build(candidates)
        if self._broken:
            candidates -= self._broken
            if not candidates:
                return []
        self.candidates += len(candidates)
        rules = self.rules
        alerts: list[Alert] = []
        fired: list[Fired] = []
        # One event with candidates in costs.every has its candidates timed rule by rule
        # (conditions read only the event, so evaluating them all first changes nothing that
        # fires); the others pay one decrement, and each match one increment.
        self._countdown -= 1
        ordered = sorted(candidates) if self._countdown else self._timed(sorted(candidates), ctx)
        for number in ordered:
            rule = rules[number]
            if not rule.condition.ev(ctx):
                continue
            self.costs.matches[number] += 1
            self.matches += 1
            if rule.emits:
                alerts.append(self._alert(rule, event, ctx))
            if number in self._correlated:
                fired.extend(self.correlation.feed(("r", number), fields, float(event.timestamp),
                                                   int(getattr(event, "count", 1) or 1)))
        for result in fired:
            if result.correlation.emits:
                alerts.append(self._correlation_alert(result, event))
        if self.match_mode == "best" and len(alerts) > 1:
            best = max(alerts, key=lambda a: severity_rank(a.severity))
            return [best]
        return alerts

    def _build(self, candidates: set[int]) -> None:
        """Build the trees of the deferred rules among ``candidates``; one that fails joins ``_broken``."""
        for number in candidates & self._unbuilt:
            self._unbuilt.discard(number)
            if not built(self.rules[number]):
                self._broken.add(number)

    def _timed(self, numbers: list[int], ctx: MatchContext) -> list[int]:
        """Evaluate ``numbers`` timing each (a sampled event); the rules that matched, which the caller
        evaluates again (a condition is a pure function of the event) to handle their matches."""
        costs = self.costs
        self._countdown = costs.every
        rules = self.rules
        clock = time.perf_counter_ns
        hits: list[int] = []
        timings: list[tuple[int, int]] = []
        for number in numbers:
            started = clock()
            hit = rules[number].condition.ev(ctx)
            timings.append((number, clock() - started))
            if hit:
                hits.append(number)
        if costs.add(timings) or costs.over_budget():
            for cost in costs.due_warnings(time.monotonic()):
                log.warning("sigma rule %r (%s) costs %.0f us per evaluation on average, over the budget of "
                            "%.0f us (metrics.rule_budget_us): it slows every event of its logsource",
                            cost.title, cost.rule_id, cost.mean_us, costs.budget_ns / 1000)
        return hits

    def configure_costs(self, every: int, budget_us: float) -> None:
        """Sample one event in ``every`` and report rules whose mean evaluation exceeds ``budget_us`` (0: never).

        Resets the accounting (call it before matching)."""
        self.costs = RuleCosts(len(self.rules), self._rule_names, every=every, budget_ns=int(budget_us * 1000))
        self._countdown = every

    def _rule_names(self, number: int) -> tuple[str, str]:
        meta = self.rules[number].meta
        return str(meta.rule_id), str(meta.title)

    # --- alerts ------------------------------------------------------------------
    def _alert(self, rule: CompiledRule, event: Any, ctx: MatchContext) -> Alert:
        meta = rule.meta
        debug = None
        if self.match_debug != "off":
            debug = explain(rule.condition, ctx, self.match_debug == "full")
        return Alert(
            rule_id=meta.rule_id,
            rule_name=meta.title,
            severity=meta.level,
            engine="sigma",
            event=event,
            tags=meta.tags,
            description=meta.description,
            ecs=dict(meta.ecs),
            debug=debug,
        )

    def _correlation_alert(self, fired: Fired, event: Any) -> Alert:
        corr = fired.correlation
        meta = corr.meta
        ecs = dict(meta.ecs)
        ecs["edr.correlation.type"] = corr.kind
        ecs["edr.correlation.rules"] = list(fired.contributing or corr.ref_labels)
        ecs["edr.correlation.timespan"] = corr.timespan
        ecs["edr.correlation.value"] = fired.value
        for name, value in fired.group.items():
            ecs[f"edr.correlation.group.{name}"] = value
        debug = None
        if self.match_debug != "off":
            debug = {"correlation": corr.kind, "group": dict(fired.group), "value": fired.value,
                     "rules": list(fired.contributing)}
        return Alert(
            rule_id=meta.rule_id,
            rule_name=meta.title,
            severity=meta.level,
            engine="sigma",
            event=event,
            tags=meta.tags,
            description=meta.description,
            ecs=ecs,
            debug=debug,
            timestamp=float(event.timestamp),
        )

    # --- introspection -------------------------------------------------------------
    def statistics(self) -> dict[str, Any]:
        """Rules loaded/inert/rejected, events, candidates evaluated, matches, correlation state."""
        report = self.ruleset.report
        stats: dict[str, Any] = {
            "rules_loaded": report.loaded,
            "rules_inert": report.inert,
            "rules_rejected": report.rejected,
            "correlations": len(self.ruleset.correlations),
            "events": self.events,
            "candidates_evaluated": self.candidates,
            "matches": self.matches,
            "errors": self.errors,
            "categories": dict(self.categories),
            "rule_costs": self.costs.statistics(),
        }
        stats.update(self.correlation.statistics())
        return stats

    def fields_read(self, category: str, service: str | None = None) -> frozenset[str]:
        """Every field a loaded rule reads for events of ``category`` (any product).

        Includes correlation group-by/value fields of rules routed there.
        ``"*"`` in the result means a keyword rule reads every field.
        """
        key = (category, service)
        cached = self._fields_read.get(key)
        if cached is not None:
            return cached
        routes: list[Route] = [r for r in self.ruleset.fed if r[1] == category
                               and (service is None or r[2] == service)]
        if not routes:
            routes = [(None, category, service)]
        out: set[str] = set()
        numbers: set[int] = set()
        for rule in self.rules:
            if any(_reaches(rule.meta.logsource, route) for route in routes):
                numbers.add(rule.number)
                out |= rule.fields
                if rule.keywords:
                    out.add("*")
        for corr in self.ruleset.correlations:
            for ref in corr.refs:
                if ref[0] == "r" and ref[1] in numbers:
                    out.update(corr.field_for(f, ref) for f in corr.group_by)
                    out.update(corr.field_for(f, ref) for f in corr.fieldref)
        result = frozenset(out)
        self._fields_read[key] = result
        return result


def _reaches(rule: Route, route: Route) -> bool:
    """Like ``applies``, but a route with unknown product/service matches any."""
    if route[0] is None or route[2] is None:
        loose: Route = (rule[0] if route[0] is None else route[0], route[1],
                        rule[2] if route[2] is None else route[2])
        return applies(rule, loose)
    return applies(rule, route)


def load_sigma(
    paths: list[str],
    *,
    placeholders: dict[str, list[str]] | None = None,
    cache_dir: str | None = None,
    match_mode: str = "all",
    match_debug: str = "off",
    max_groups: int = 10_000,
    max_bytes: int = 64 << 20,
    fed: Iterable[Route] | None = None,
    workers: int | None = None,
    progress: CompileProgress | str | None = ON_TERMINAL,
) -> tuple[SigmaEngine, LoadReport]:
    """Load every Sigma rule under ``paths`` into a :class:`SigmaEngine`.

    ``placeholders`` resolves ``|expand`` placeholders (name without ``%``
    -> values). ``cache_dir`` enables the compiled-set cache. ``max_groups``
    and ``max_bytes`` bound the correlation state (groups kept, estimated
    bytes; see :mod:`edr.detect.sigma.correlation`). ``fed`` is the
    set of (product, category, service) routes the collectors produce (default
    :data:`~edr.detect.sigma.logsources.ALL_FED`); rules reaching none of them
    are counted inert. Rules to compile are compiled by ``workers``
    processes when there are many (default: the processors this process may
    use; 1: in this process only), with the same result; ``progress``
    hears how many are compiled (default: a progress bar on standard error
    when it is a terminal, not a service's journal; None: nothing). Bad
    rules are reported in the returned :class:`LoadReport`, never raised.
    """
    from edr.detect.sigma.ruleset import build_ruleset

    started = time.perf_counter()
    fed_set = frozenset(ALL_FED if fed is None else fed)
    if cache_dir:
        ruleset = rule_cache.load_ruleset(paths, placeholders=placeholders, fed=fed_set, cache_dir=cache_dir,
                                          workers=workers, progress=progress)
    else:
        ruleset = build_ruleset(paths, placeholders=placeholders, fed=fed_set, workers=workers, progress=progress)
    ruleset.report.seconds = time.perf_counter() - started
    engine = SigmaEngine(ruleset, match_mode=match_mode, match_debug=match_debug,
                         max_groups=max_groups, max_bytes=max_bytes)
    return engine, ruleset.report
