"""The responder actor: alerts in, process terminations (or dry-run log lines) out.

Alerts that pass the severity gate become requests in a bounded queue of
``response.channel_capacity``; beyond it they are dropped, counted and
logged, rate-limited (intake never waits: the alert writer upstream must not
be slowed by response). One worker takes requests in order, applies the
safety checks and, in prevention mode, kills in a thread through the
platform layer, which re-checks the identity of the process first.

The request queue is a :class:`~edr.runtime.workqueue.WorkQueue`, not a
graph edge: it holds only the requests the policy admitted (an edge to a
worker actor would carry, and shed, batches of every alert, most of which
are not for response), and its capacity counts requests, not batches (see
:mod:`edr.runtime.workqueue`). It is reported like an edge, under ``queue``
in the statistics, so the health record shows its sent, received, dropped,
depth, high-water and capacity.

Every decision that passed the safety checks then goes through the
:class:`~edr.response.budget.ResponseGovernor`: one decision per process
identity (a repeated alert is ``suppressed``: no second kill, no second
line), per-rule and global budgets of kills per minute, and a circuit
breaker. When a budget is exceeded the breaker opens: from then on every
decision is logged as ``would terminate ... dry_run=true breaker=open`` and
nothing is killed, and one critical alert (``EDR-RESPONSE-BREAKER``, see
:mod:`edr.response.breaker_alert`) is sent on the ``alerts`` output, which
the graph connects to the alert writer. Sending it waits for room on that
edge (alerts are never dropped); without the output (a test harness) the
alert is only logged. The accounting is the same in dry-run.

The agent, its parent chain, its service manager and PID 1 are never
killed (:mod:`edr.platform.protected`). The set is logged at start and
gathered again, in a thread, before every decision, so that it follows the
agent when it is reparented and never protects a dead ancestor's PID that a
new process has taken; a change is logged.

Everything is logged through ``logging.getLogger("edr.response")``: with the
operational log format (``%(asctime)s %(levelname)s %(name)s: %(message)s``)
a line reads ``... INFO edr.response: Active response would terminate process
pid=4242 image="/tmp/evil" dry_run=true``, i.e. it contains the seed's
``response: Active response ...`` text verbatim.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar

import attrs
import trio

from edr.detect.alert import Alert
from edr.platform.kill import GONE, MISMATCH, TERMINATED, KillResult
from edr.platform.protected import ProtectedProcess, describe, gather_protected, roles_by_pid
from edr.response.breaker_alert import breaker_alert
from edr.response.budget import ACT, SUPPRESSED, ResponseGovernor, Trip
from edr.response.decision import DRY_RUN, KILL, ResponsePolicy, ResponseTarget, quote, target_of, would_terminate
from edr.response.kill import terminate_target
from edr.runtime.actor import ActorBase, Ports
from edr.runtime.channel import OutPort
from edr.runtime.errlog import ErrorLog
from edr.runtime.workqueue import WorkQueue

log = logging.getLogger("edr.response")

Terminator = Callable[[ResponseTarget], KillResult]
Gatherer = Callable[[], tuple[ProtectedProcess, ...]]


class Responder(ActorBase):
    """Active response per ``[response]``: disabled, dry-run or prevention."""

    inputs: ClassVar = ("in",)
    #: the breaker's critical alert, for the alert writer
    outputs: ClassVar = ("alerts",)

    def __init__(self, name: str, policy: ResponsePolicy, capacity: int,
                 terminator: Terminator = terminate_target, gatherer: Gatherer = gather_protected, *,
                 governor: ResponseGovernor, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name)
        self.policy = policy
        #: budgets, identity suppression and the breaker, judged at ``clock()`` (monotonic seconds)
        self.governor = governor
        self.clock = clock
        self._alerts: OutPort | None = None
        #: breaker alerts sent to the alert writer
        self.breaker_alerts = 0
        self.terminator = terminator
        self.gatherer = gatherer
        #: the protected processes the policy was last given (empty until the worker starts)
        self.protected: tuple[ProtectedProcess, ...] = ()
        self.protected_changes = 0
        self.received = 0
        self.below_severity = 0
        self.skipped: dict[str, int] = {}
        self.dry_run = 0
        self.terminated = 0
        self.mismatched = 0
        self.gone = 0
        self.failed = 0
        self.requests: WorkQueue[ResponseTarget] = WorkQueue(f"{name}.requests", capacity)
        self._overflow = ErrorLog(log, "response requests dropped")

    @property
    def capacity(self) -> int:
        """Requests queued at most."""
        return self.requests.capacity

    @property
    def queued(self) -> int:
        """Requests accepted into the queue."""
        stats = self.requests.statistics()
        return stats.sent - stats.dropped

    @property
    def dropped(self) -> int:
        """Requests dropped because the queue was full."""
        return self.requests.statistics().dropped

    def _offer(self, requests: WorkQueue[ResponseTarget], alert: Alert) -> None:
        self.received += 1
        if not self.policy.enabled:
            return
        if not self.policy.admits(alert):
            self.below_severity += 1
            return
        target = target_of(alert)
        if not requests.put_nowait(target):
            self._overflow.report("Active response queue full, dropping request pid=%s image=%s rule=%s dropped=%d",
                                  target.pid, quote(target.image), quote(target.rule_name), self.dropped,
                                  level=logging.WARNING)

    async def _worker(self, requests: WorkQueue[ResponseTarget]) -> None:
        async for target in requests:
            await self.handle(target)

    @property
    def suppressed(self) -> int:
        """Decisions suppressed because their process was already decided."""
        return self.governor.suppressed

    @property
    def budget_denied(self) -> int:
        """Decisions the budgets refused (the one that opened the breaker and all while it was open)."""
        return self.governor.denied

    async def _tripped(self, trip: Trip) -> None:
        mode = "prevention" if self.policy.prevention else "dry-run"
        until = "until restart" if trip.cooldown <= 0 else f"for {trip.cooldown:g}s"
        log.critical("Active response circuit breaker opened: rule=%s rule_id=%s budget=%s limit_per_minute=%d "
                     "rule_granted=%d total_granted=%d mode=%s; nothing is killed %s",
                     quote(trip.rule_name), quote(trip.rule_id), trip.budget, trip.limit_per_minute,
                     trip.rule_granted, trip.total_granted, mode, until)
        if self._alerts is None:
            return
        await self._alerts.send([breaker_alert(trip, prevention=self.policy.prevention, when=time.time())])
        self.breaker_alerts += 1

    async def _govern(self, target: ResponseTarget) -> bool:
        """Whether the decision on ``target`` may go ahead; if not, it was suppressed or logged as diverted."""
        verdict = self.governor.judge(target, self.clock())
        if verdict.closed:
            log.warning("Active response circuit breaker closed after its cool-down: responses resume")
        if verdict.action == SUPPRESSED:
            log.debug("Active response suppressed: process already decided pid=%s image=%s rule=%s",
                      target.pid, quote(target.image), quote(target.rule_name))
            return False
        if verdict.trip is not None:
            await self._tripped(verdict.trip)
        if verdict.action != ACT:
            self.dry_run += 1
            log.info(would_terminate(target, breaker_open=True))
            return False
        return True

    async def refresh_protected(self) -> None:
        """Gather the protected processes again (in a thread) and hand them to the policy.

        A change after the first gathering (the agent reparented, an
        ancestor gone) is logged and counted. If gathering fails, the last
        set stays in force. The thread is not abandoned on cancellation: a
        stop waits for it (about a millisecond of /proc reads).
        """
        try:
            protected = await trio.to_thread.run_sync(self.gatherer)
        except Exception as exc:  # gather_protected never raises; an injected gatherer might
            log.warning("Active response could not gather protected processes, keeping the last set: %s", exc)
            return
        if protected == self.protected:
            return
        if self.protected:
            self.protected_changes += 1
            log.info("Active response protected processes changed: %s", describe(protected))
        self.protected = protected
        self.policy.protect(roles_by_pid(protected))

    async def handle(self, target: ResponseTarget) -> None:
        """Apply the policy to one request: skip, log a dry run, or kill and log the outcome."""
        await self.refresh_protected()
        decision = self.policy.decide(target)
        if decision.action in (DRY_RUN, KILL) and not await self._govern(target):
            return
        if decision.action == DRY_RUN:
            self.dry_run += 1
            log.info(decision.message)
            return
        if decision.action != KILL:
            self.skipped[decision.reason] = self.skipped.get(decision.reason, 0) + 1
            level = logging.WARNING if decision.reason.startswith("missing") else logging.INFO
            log.log(level, decision.message)
            return
        result = await trio.to_thread.run_sync(self.terminator, target)
        where = f"pid={target.pid} image={quote(target.image)}"
        if result.outcome == TERMINATED:
            self.terminated += 1
            log.info("Active response terminated process %s", where)
        elif result.outcome == MISMATCH:
            self.mismatched += 1
            log.warning("Active response skipped: identity mismatch %s reason=%s", where,
                        quote(result.detail))
        elif result.outcome == GONE:
            self.gone += 1
            log.info("Active response skipped: process already exited %s", where)
        else:
            self.failed += 1
            log.error("Active response failed to terminate process %s error=%s", where, quote(result.detail))

    async def run(self, ports: Ports) -> None:
        """Queue admitted alerts without waiting; one worker handles them in order."""
        mode = ("prevention" if self.policy.prevention else "dry-run") if self.policy.enabled else "disabled"
        log.info("Active response worker started mode=%s min_severity=%s", mode, self.policy.min_severity)
        if self.policy.enabled:
            await self.refresh_protected()
            log.info("Active response protected processes: %s", describe(self.protected))
        if self.requests.closed:  # run again after a crash: a new queue (its counters start again)
            self.requests = WorkQueue(self.requests.name, self.requests.capacity)
        requests = self.requests
        self._alerts = ports.outputs.get("alerts")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._worker, requests)
            try:
                async for batch in ports.input("in"):
                    for alert in batch:
                        self._offer(requests, alert)
            finally:
                requests.close()  # the worker handles what is queued, then ends
        log.info("Active response worker shutting down")

    def statistics(self) -> dict[str, Any]:
        """Alerts received, requests queued/dropped and the queue as an edge, and what became of them."""
        queue = self.requests.statistics()
        return {
            "received": self.received, "below_severity": self.below_severity,
            "queued": queue.sent - queue.dropped, "dropped": queue.dropped, "queue": attrs.asdict(queue),
            "dry_run": self.dry_run, "terminated": self.terminated,
            "identity_mismatch": self.mismatched, "already_exited": self.gone, "failed": self.failed,
            "skipped": dict(self.skipped), "protected": len(self.protected),
            "protected_changes": self.protected_changes,
            # dry_run counts every would-terminate line: dry-run mode, or the breaker open
            "would_kill": self.dry_run, "suppressed": self.suppressed, "budget_denied": self.budget_denied,
            "breaker_alerts": self.breaker_alerts, "budget": self.governor.statistics(self.clock()),
        }
