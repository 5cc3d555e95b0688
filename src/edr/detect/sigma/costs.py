"""Per-rule cost accounting for the Sigma engine, sampled (sans-IO).

Timing every candidate evaluation would cost more than many evaluations
themselves (two ``perf_counter_ns`` calls per rule per event), so the engine
times the candidates of one event in ``every`` (:attr:`RuleCosts.every`) and
this module scales the samples back up: a rule's estimated CPU time is its
sampled nanoseconds times ``every``. Which events are sampled depends only on
their position in the stream, not on their content, so the estimate is
unbiased over a long run. Match counts are exact: matches are rare, and the
engine counts each one where it already handles the match.

A rule whose mean sampled evaluation costs more than ``budget_ns`` (after at
least :data:`MIN_SAMPLES` samples) is *over budget*: :meth:`RuleCosts.add`
reports it once, the caller logs it (rate-limited by :meth:`RuleCosts.due_warnings`),
and :meth:`RuleCosts.over_budget` lists it in statistics. Nothing is demoted:
which alerts fire, and when, is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import attrs

#: Samples a rule needs before its mean is compared with the budget (one slow first evaluation,
#: a cold cache or a page fault, is no verdict).
MIN_SAMPLES: Final = 16
#: Seconds between two warnings about the same over-budget rule.
WARN_EVERY_SECS: Final = 600.0


@attrs.frozen
class RuleCost:
    """One rule's accounting: estimated CPU seconds and evaluations (sampled x ``every``), exact matches."""

    number: int
    rule_id: str
    title: str
    cpu_seconds: float
    evaluations: int
    matches: int
    sampled: int
    mean_us: float
    over_budget: bool


class RuleCosts:
    """Sampled CPU time and exact match counts per rule, indexed by the rule's number.

    ``names(number) -> (rule_id, title)`` names a rule for reports. ``every``
    is the sampling period (1 times every event); ``budget_ns`` the mean
    evaluation cost above which a rule is reported (0: never).
    """

    def __init__(self, size: int, names: Callable[[int], tuple[str, str]], *, every: int = 64,
                 budget_ns: int = 0) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1, not {every!r}")
        self.every = every
        self.budget_ns = budget_ns
        self.names = names
        self.ns = [0] * size
        self.samples = [0] * size
        self.matches = [0] * size
        self.sampled_events = 0
        self._over: dict[int, float] = {}  # rule number -> when it was last warned about (-inf: not yet)

    def add(self, timings: Sequence[tuple[int, int]]) -> list[int]:
        """Record the ``(rule number, nanoseconds)`` evaluations of one sampled event; the rules that
        have just gone over budget (each reported once)."""
        self.sampled_events += 1
        ns, samples = self.ns, self.samples
        newly: list[int] = []
        budget = self.budget_ns
        for number, took in timings:
            ns[number] += took
            n = samples[number] = samples[number] + 1
            if budget and n >= MIN_SAMPLES and number not in self._over and ns[number] > budget * n:
                self._over[number] = float("-inf")
                newly.append(number)
        return newly

    def due_warnings(self, now: float) -> list[RuleCost]:
        """The over-budget rules not warned about in the last :data:`WARN_EVERY_SECS` (marked warned at ``now``)."""
        due = [n for n, last in self._over.items() if now - last >= WARN_EVERY_SECS]
        for n in due:
            self._over[n] = now
        return [self.cost(n) for n in due]

    def over_budget(self) -> list[int]:
        """Numbers of the rules found over budget so far."""
        return sorted(self._over)

    def cost(self, number: int) -> RuleCost:
        """The accounting of rule ``number``."""
        rule_id, title = self.names(number)
        sampled = self.samples[number]
        ns = self.ns[number]
        return RuleCost(number=number, rule_id=rule_id, title=title, cpu_seconds=ns * self.every / 1e9,
                        evaluations=sampled * self.every, matches=self.matches[number], sampled=sampled,
                        mean_us=(ns / sampled / 1000) if sampled else 0.0, over_budget=number in self._over)

    def top(self, n: int) -> list[RuleCost]:
        """The ``n`` rules with the most estimated CPU time (ties: most matches, then rule order);
        rules never sampled nor matched are left out."""
        ns, matches = self.ns, self.matches
        seen = [i for i in range(len(ns)) if ns[i] or matches[i]]
        seen.sort(key=lambda i: (-ns[i], -matches[i], i))
        return [self.cost(i) for i in seen[:max(n, 0)]]

    def statistics(self, n: int = 5) -> dict[str, object]:
        """For the health record: the sampling, the top ``n`` rules by CPU, the over-budget rules."""
        return {
            "sample_every": self.every,
            "sampled_events": self.sampled_events,
            "top": [{"rule": c.title, "id": c.rule_id, "cpu_seconds": round(c.cpu_seconds, 6),
                     "mean_us": round(c.mean_us, 2), "matches": c.matches} for c in self.top(n)],
            "over_budget": [self.names(i)[1] for i in self.over_budget()],
        }
