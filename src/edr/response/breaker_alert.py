"""The critical alert raised when the response circuit breaker opens (sans-IO).

It is an alert like any other (the alert writer maps and writes it, the
SIEM sees it): ``rule.id`` :data:`BREAKER_RULE_ID`, severity ``critical``,
``rule.engine`` ``response``, no event. Its ``edr.response.breaker.*`` keys
(declared in :mod:`edr.alerts.ecs_schema`) name the rule and the counts;
``process.pid`` and ``process.executable`` are the target the budget
refused.
"""

from __future__ import annotations

from typing import Final

from edr.detect.alert import Alert
from edr.response.budget import Trip

BREAKER_RULE_ID: Final = "EDR-RESPONSE-BREAKER"
BREAKER_RULE_NAME: Final = "Active response circuit breaker opened"
BREAKER_ENGINE: Final = "response"


def breaker_alert(trip: Trip, *, prevention: bool, when: float) -> Alert:
    """The alert for ``trip``; ``prevention``: the configured mode; ``when``: wall-clock seconds."""
    until = "until the agent restarts" if trip.cooldown <= 0 else f"for {trip.cooldown:g} s"
    effect = ("prevention switched to dry-run" if prevention
              else "dry-run mode: in prevention, killing would have stopped")
    description = (f"Rule {trip.rule_id!r} ({trip.rule_name}) exceeded the {trip.budget} response budget of "
                   f"{trip.limit_per_minute} kills per minute (granted: {trip.rule_granted} to this rule, "
                   f"{trip.total_granted} in all); {effect} {until}.")
    ecs: dict[str, object] = {
        "edr.response.mode": "prevention" if prevention else "dry_run",
        "edr.response.breaker.rule_id": trip.rule_id,
        "edr.response.breaker.rule_name": trip.rule_name,
        "edr.response.breaker.budget": trip.budget,
        "edr.response.breaker.limit_per_minute": trip.limit_per_minute,
        "edr.response.breaker.rule_granted": trip.rule_granted,
        "edr.response.breaker.total_granted": trip.total_granted,
        "edr.response.breaker.cooldown_secs": float(trip.cooldown),
        "edr.response.breaker.trips": trip.trips,
    }
    if trip.pid is not None:
        ecs["process.pid"] = trip.pid
    if trip.image is not None:
        ecs["process.executable"] = trip.image
    return Alert(rule_id=BREAKER_RULE_ID, rule_name=BREAKER_RULE_NAME, severity="critical",
                 engine=BREAKER_ENGINE, event=None, description=description, ecs=ecs, timestamp=when)
