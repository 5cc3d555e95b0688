"""Response budgets, one decision per process, and the circuit breaker (sans-IO).

A bad rule on a fleet must not become a fleet-wide ``kill -9``. Between the
policy's safety checks (:mod:`edr.response.decision`) and the kill, every
decision to terminate (or, in dry-run, to log ``would terminate``) goes
through a :class:`ResponseGovernor`, which answers, in this order:

1. **One decision per process identity.** The identity is the pid and the
   process's start time (``start_ticks``, else ``start_epoch``), which no
   other process shares; without a start time the pid and the image stand
   in, and the memory's time-to-live bounds how long a reused pid could be
   mistaken for the old process. A second alert on a process already
   decided (killed, or logged as would-terminate) is ``suppressed``: no
   second kill, no second log line, and it takes nothing from the budget.
   The memory holds at most ``max_identities`` entries, oldest forgotten
   first, each for ``identity_ttl`` seconds.
2. **The breaker.** While it is open, nothing is killed: the decision is
   ``diverted`` (logged as would-terminate by the caller).
3. **Budgets.** Two token buckets must both have a token: the rule's
   (``per_rule_per_minute``) and the global one (``global_per_minute``).
   Each holds one minute's worth (the burst) and refills continuously. A
   decision that finds either empty **trips** the breaker: it is diverted
   and the verdict carries a :class:`Trip` (for the one critical alert).

The breaker stays open for ``cooldown`` seconds, then closes by itself
(the next decision finds it closed, with budgets refilled by then); a
cool-down of 0 keeps it open until the agent restarts (there is no
configuration reload: a restart builds a new governor). It is one breaker
for the whole agent, not one per rule: a rule running wild is usually a
symptom of something (a rule pack, a deployment) that makes other rules
unsafe too, and the issue asks that *prevention* switch to dry-run.

The accounting is the same in dry-run and prevention (the caller asks
whether to act, not whether it will really kill), so a dry-run deployment
shows exactly what the budget and the breaker would do in prevention.

Time is injected (``now``, a monotonic clock in seconds): no I/O, no trio.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Final

import attrs

from edr.rate import TokenBucket
from edr.response.decision import ResponseTarget

#: The decision may go ahead (kill, or log would-terminate in dry-run).
ACT: Final = "act"
#: The process was already decided: nothing to do, nothing to log.
SUPPRESSED: Final = "suppressed"
#: The breaker is open (or has just tripped): log would-terminate, kill nothing.
DIVERTED: Final = "diverted"

CLOSED: Final = "closed"
OPEN: Final = "open"

#: Which budget tripped the breaker.
RULE_BUDGET: Final = "rule"
GLOBAL_BUDGET: Final = "global"

#: Per-rule buckets kept at most (rules are few; alerts may name any rule id). Beyond, the
#: least recently used rule's bucket is forgotten and starts full again when the rule returns.
MAX_RULE_BUCKETS: Final = 4096


Identity = tuple[int, str, object]


def identity_of(target: ResponseTarget) -> Identity | None:
    """What tells ``target``'s process apart from any other: pid and start time (else pid and image)."""
    if target.pid is None:
        return None
    if target.start_ticks is not None:
        return (target.pid, "ticks", target.start_ticks)
    if target.start_epoch is not None:
        return (target.pid, "epoch", target.start_epoch)
    return (target.pid, "image", target.image)


class DecidedProcesses:
    """The process identities already decided, at most ``max_entries``, each for ``ttl`` seconds."""

    def __init__(self, max_entries: int, ttl: float) -> None:
        if max_entries < 1 or ttl <= 0:
            raise ValueError(f"max_entries must be positive and ttl more than 0, not {max_entries!r}, {ttl!r}")
        self.max_entries = max_entries
        self.ttl = ttl
        self._when: OrderedDict[Identity, float] = OrderedDict()  # oldest decision first
        #: identities forgotten because the memory was full (not because they expired)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._when)

    def remember(self, identity: Identity, now: float) -> bool:
        """Record ``identity`` as decided at ``now``; False if it already was (within the TTL)."""
        while self._when:  # expired entries are at the front: decisions are recorded in time order
            oldest, when = next(iter(self._when.items()))
            if now - when < self.ttl:
                break
            del self._when[oldest]
        if identity in self._when:
            return False
        if len(self._when) >= self.max_entries:
            self._when.popitem(last=False)
            self.evicted += 1
        self._when[identity] = now
        return True


@attrs.frozen
class Trip:
    """Why the breaker opened: what the critical alert says."""

    rule_id: str
    rule_name: str
    #: :data:`RULE_BUDGET` or :data:`GLOBAL_BUDGET`
    budget: str
    limit_per_minute: int
    #: decisions the budgets granted to this rule, and to all rules, since start
    rule_granted: int
    total_granted: int
    #: the target whose decision found the budget empty
    pid: int | None
    image: str | None
    #: seconds the breaker stays open; 0: until restart
    cooldown: float
    #: how many times the breaker has opened, this one included
    trips: int


@attrs.frozen
class Verdict:
    """:data:`ACT`, :data:`SUPPRESSED` or :data:`DIVERTED`; ``trip`` when this decision opened the
    breaker; ``closed`` when this decision found the cool-down over and closed it."""

    action: str
    trip: Trip | None = None
    closed: bool = False


@attrs.define
class _RuleAccount:
    bucket: TokenBucket
    granted: int = 0
    denied: int = 0


class ResponseGovernor:
    """Identity suppression, per-rule and global budgets, and the breaker (see the module)."""

    def __init__(self, *, per_rule_per_minute: int, global_per_minute: int, cooldown: float,
                 max_identities: int = 8192, identity_ttl: float = 3600.0) -> None:
        if per_rule_per_minute < 1 or global_per_minute < 1 or cooldown < 0:
            raise ValueError("budgets must be positive and the cool-down 0 or more")
        self.per_rule_per_minute = per_rule_per_minute
        self.global_per_minute = global_per_minute
        self.cooldown = cooldown
        self.decided = DecidedProcesses(max_identities, identity_ttl)
        self.global_bucket = TokenBucket(global_per_minute)
        self._rules: OrderedDict[str, _RuleAccount] = OrderedDict()
        self.state = CLOSED
        self.opened_at: float | None = None
        self.trips = 0
        self.granted = 0
        self.denied = 0
        self.suppressed = 0

    def _account(self, rule_id: str) -> _RuleAccount:
        account = self._rules.get(rule_id)
        if account is None:
            if len(self._rules) >= MAX_RULE_BUCKETS:
                self._rules.popitem(last=False)
            account = self._rules[rule_id] = _RuleAccount(TokenBucket(self.per_rule_per_minute))
        else:
            self._rules.move_to_end(rule_id)
        return account

    def judge(self, target: ResponseTarget, now: float) -> Verdict:
        """Whether the decision on ``target`` (which passed the safety checks) may act, at ``now``."""
        identity = identity_of(target)
        if identity is not None and not self.decided.remember(identity, now):
            self.suppressed += 1
            return Verdict(SUPPRESSED)
        closed = False
        if self.state == OPEN:
            assert self.opened_at is not None
            if self.cooldown > 0 and now - self.opened_at >= self.cooldown:
                self.state, self.opened_at, closed = CLOSED, None, True
            else:
                self.denied += 1
                self._account(target.rule_id).denied += 1
                return Verdict(DIVERTED)
        account = self._account(target.rule_id)
        # Ask both before taking from either: a decision refused by one takes nothing from the other.
        rule_ready, global_ready = account.bucket.ready(now), self.global_bucket.ready(now)
        if rule_ready and global_ready:
            account.bucket.take(now)
            self.global_bucket.take(now)
            account.granted += 1
            self.granted += 1
            return Verdict(ACT, closed=closed)
        self.state, self.opened_at = OPEN, now
        self.trips += 1
        self.denied += 1
        account.denied += 1
        budget, limit = ((RULE_BUDGET, self.per_rule_per_minute) if not rule_ready
                         else (GLOBAL_BUDGET, self.global_per_minute))
        trip = Trip(rule_id=target.rule_id, rule_name=target.rule_name, budget=budget, limit_per_minute=limit,
                    rule_granted=account.granted, total_granted=self.granted, pid=target.pid, image=target.image,
                    cooldown=self.cooldown, trips=self.trips)
        return Verdict(DIVERTED, trip=trip, closed=closed)

    def open_for(self, now: float) -> float | None:
        """Seconds the breaker has been open at ``now``, or None when closed."""
        return None if self.opened_at is None else max(0.0, now - self.opened_at)

    def statistics(self, now: float) -> dict[str, Any]:
        """Budgets, what they granted and denied, suppressions and the breaker's state."""
        return {
            "granted": self.granted, "denied": self.denied, "suppressed": self.suppressed,
            "rule_per_minute": self.per_rule_per_minute, "global_per_minute": self.global_per_minute,
            "identities": len(self.decided), "identities_evicted": self.decided.evicted,
            "breaker": {"state": self.state, "trips": self.trips, "open_for_secs": self.open_for(now),
                        "cooldown_secs": self.cooldown},
        }
