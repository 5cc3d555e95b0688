"""What the per-rule cost accounting costs the Sigma engine: A/B passes in one process (prints figures; not a test).

The engine with its accounting (one event in ``--every`` timed rule by rule,
per-category and per-rule match counts) against the same engine matching as
it did before the accounting existed (:func:`unaccounted_match`, the former
loop), over the same rule set (../shared/sigma) and the same events
(../shared/evtx-attack-samples, repeated), alternating passes so that this
VM's drift from minute to minute hits both alike. ``scripts/bench_sigma.py``
runs in separate processes minutes apart, where that drift is larger than
the difference measured here.

Usage: .venv/bin/python scripts/bench_rule_costs.py [--events N] [--rounds N] [--every N] [--shared DIR]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edr.detect.alert import Alert
from edr.detect.sigma import SigmaEngine, load_sigma
from edr.detect.sigma.correlation import Fired
from edr.detect.sigma.matchers import MatchContext
from edr.runtime.supervisor import GC_GEN0_THRESHOLD
from edr.severity import severity_rank
from edr.sources.replay.winlog import iter_winlog_events


def unaccounted_match(self: SigmaEngine, event: Any) -> list[Alert]:
    """``SigmaEngine._match`` as it was before the cost accounting (the reference of the comparison)."""
    self.events += 1
    index = self.ruleset.route_index((event.product, event.category, event.service))
    fields = event.fields if isinstance(event.fields, dict) else {}
    ctx = MatchContext(fields)
    candidates = index.candidates(ctx)
    if not candidates:
        return []
    self.candidates += len(candidates)
    rules = self.rules
    alerts: list[Alert] = []
    fired: list[Fired] = []
    for number in sorted(candidates):
        rule = rules[number]
        if not rule.condition.ev(ctx):
            continue
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


def one_pass(engine: SigmaEngine, events: list[Any]) -> tuple[float, int]:
    """CPU seconds to match ``events``, and the alerts raised."""
    alerts = 0
    cpu = time.process_time()
    for event in events:
        alerts += len(engine.match(event))
    return time.process_time() - cpu, alerts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=6, help="A/B rounds (default 6)")
    parser.add_argument("--every", type=int, default=64, help="sampling period (default 64, metrics.rule_sample_every)")
    parser.add_argument("--quiet", action="store_true", help="print the summary only")
    parser.add_argument("--cache", help="rule cache directory to reuse between runs (default: a temporary one)")
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[1] / ".." / "shared"))
    args = parser.parse_args()
    shared = Path(args.shared).resolve()
    rules, samples = shared / "sigma", shared / "evtx-attack-samples"
    if not rules.is_dir() or not samples.is_dir():
        print(f"reference data not found under {shared}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        engine, report = load_sigma([str(rules)], cache_dir=args.cache or tmp)
    engine.configure_costs(args.every, 0)
    decoded = [e for path in sorted(samples.rglob("*.evtx")) for e in iter_winlog_events(path)]
    events = decoded * -(-args.events // len(decoded))
    print(f"rules: {report.loaded} loaded; events: {len(events):,}; sampling one event in {args.every}")
    gc.collect()
    gc.freeze()
    if GC_GEN0_THRESHOLD is not None:
        gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    accounted = engine._match
    rates: dict[str, list[float]] = {"without accounting": [], "with accounting": []}
    alerts: dict[str, int] = {}
    for rnd in range(args.rounds):
        # alternate which goes first, so neither always gets the warmer (or colder) half
        order = ["without accounting", "with accounting"] if rnd % 2 == 0 else ["with accounting",
                                                                                  "without accounting"]
        for label in order:
            engine._match = accounted if label == "with accounting" else unaccounted_match.__get__(engine)  # type: ignore[method-assign]
            cpu, n = one_pass(engine, events)
            rates[label].append(len(events) / cpu)
            alerts[label] = n
        if not args.quiet:
            print(f"round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in rates.items()) + " events/s CPU")
    assert alerts["with accounting"] == alerts["without accounting"], alerts
    without, with_ = (statistics.median(rates[k]) for k in ("without accounting", "with accounting"))
    ratios = [w / wo for w, wo in zip(rates["with accounting"], rates["without accounting"], strict=True)]
    best_without, best_with = (max(rates[k]) for k in ("without accounting", "with accounting"))
    print(f"best events/s CPU (least disturbed pass): without {best_without:,.0f}, with {best_with:,.0f} "
          f"({(best_with / best_without - 1) * 100:+.1f}%)")
    print(f"median events/s CPU: without {without:,.0f}, with {with_:,.0f} ({(with_ / without - 1) * 100:+.1f}%); "
          f"per-round ratio median {statistics.median(ratios):.3f} (target >= 0.97); {alerts['with accounting']} "
          f"alerts per pass either way")
    return 0


if __name__ == "__main__":
    sys.exit(main())
