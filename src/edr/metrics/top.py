"""``edr rules top``: the costliest Sigma rules of the running agent, read from its metrics endpoint.

Why the endpoint and not a replay of a recording: the cost that matters is
the one on this host's own event mix, which only the running agent sees (a
recording is another mix, and replaying it would load every rule again).
The agent samples its rules all the time (:mod:`edr.detect.sigma.costs`),
so asking it costs one scrape. The endpoint exports the ``metrics.top_rules``
costliest rules; ``--limit`` shows at most that many.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable

import attrs
from prometheus_client.parser import text_string_to_metric_families

from edr.metrics.listen import parse_listen


class TopUnavailable(Exception):
    """The agent's metrics cannot be read; the message says where it looked and why."""


@attrs.frozen
class TopRule:
    """One rule as the endpoint reports it."""

    rule_id: str
    rule: str
    cpu_seconds: float
    evaluations: float
    matches: float
    over_budget: bool

    @property
    def mean_us(self) -> float:
        """Mean CPU time of one evaluation, microseconds (0 when never sampled)."""
        return self.cpu_seconds / self.evaluations * 1e6 if self.evaluations else 0.0


def parse_top(text: str) -> list[TopRule]:
    """The per-rule series of a metrics exposition, costliest first."""
    values: dict[tuple[str, str], dict[str, float]] = {}
    names = {"edr_rule_cpu_seconds_total": "cpu", "edr_rule_evaluations_total": "evals",
             "edr_rule_matches_total": "matches", "edr_rule_over_budget": "over"}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = names.get(sample.name)
            if key is None:
                continue
            rule = (sample.labels.get("rule_id", ""), sample.labels.get("rule", ""))
            values.setdefault(rule, {})[key] = sample.value
    rules = [TopRule(rule_id=rid, rule=title, cpu_seconds=v.get("cpu", 0.0), evaluations=v.get("evals", 0.0),
                     matches=v.get("matches", 0.0), over_budget=v.get("over", 0.0) > 0)
             for (rid, title), v in values.items()]
    rules.sort(key=lambda r: (-r.cpu_seconds, -r.matches, r.rule))
    return rules


def fetch_top(listen: str, timeout: float = 5.0) -> list[TopRule]:
    """Scrape the agent at ``listen`` (``metrics.listen``); TopUnavailable with the fix when it cannot."""
    host, port = parse_listen(listen)
    host = f"[{host}]" if ":" in host else host
    url = f"http://{host}:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            text = resp.read().decode("utf-8")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TopUnavailable(f"cannot read the agent's metrics at {url}: {reason} (is `edr run` running with "
                             f"[metrics] enabled = true and listen = {listen!r}?)") from None
    return parse_top(text)


def format_top(rules: Iterable[TopRule], limit: int = 20) -> str:
    """A table: CPU seconds, evaluations, mean microseconds, matches, rule (``!`` marks over budget)."""
    rows = list(rules)[:limit]
    if not rows:
        return "no rule has been evaluated yet"
    lines = [f"{'cpu s':>9} {'evals':>10} {'mean us':>8} {'matches':>8}  rule"]
    for r in rows:
        mark = " !" if r.over_budget else ""
        lines.append(f"{r.cpu_seconds:9.3f} {r.evaluations:10.0f} {r.mean_us:8.1f} {r.matches:8.0f}  "
                     f"{r.rule} ({r.rule_id}){mark}")
    return "\n".join(lines)
