"""Logsource routing: which rules see which events, and which logsources are fed.

An event's route is its ``(product, category, service)``. A rule's logsource
applies to a route when each of the rule's product, category and service is
either unset or equal to the route's; ``category: registry_event`` also covers
the specific registry categories Sysmon events are split into. Windows channel
events have category ``winlog`` and their channel's service, so
``service: security`` rules route by channel. A Security audit event with a
Sysmon counterpart (4688 process creation...) has that category *and* service
``security`` (:mod:`edr.sources.replay.winlog_audit`): its one route reaches
the category's rules and the ``service: security`` rules alike, each once.

``fed`` is the set of routes the running collectors produce (see
:data:`WINDOWS_EVENTLOG_FED`, :data:`LINUX_EBPF_FED`, :data:`ALL_FED`).
Rules that apply to no fed route load as *inert*: compiled and counted, but
expected to see no events.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from edr import event as ev
from edr.sources.replay.winlog_audit import SECURITY_CATEGORIES, SECURITY_SERVICE
from edr.sources.replay.winlog_channels import (
    CHANNEL_SERVICES,
    POWERSHELL_CATEGORIES,
    POWERSHELL_CLASSIC_CATEGORIES,
    SYSMON_CATEGORIES,
    SYSMON_SERVICE,
)

#: (product, category, service); None in a rule's logsource means "any".
Route = tuple[str | None, str | None, str | None]

#: Rule categories that cover several event categories.
CATEGORY_COVERS: Final[dict[str, frozenset[str]]] = {
    "registry_event": frozenset(
        {ev.REGISTRY_ADD, ev.REGISTRY_DELETE, ev.REGISTRY_SET, ev.REGISTRY_RENAME}
    ),
}


def _windows_routes() -> frozenset[Route]:
    routes: set[Route] = set()
    for category in (*SYSMON_CATEGORIES.values(), ev.REGISTRY_DELETE, ev.WINLOG):
        routes.add((ev.WINDOWS, category, SYSMON_SERVICE))
    for category in (*POWERSHELL_CATEGORIES.values(), ev.WINLOG):
        routes.add((ev.WINDOWS, category, "powershell"))
    for category in (*POWERSHELL_CLASSIC_CATEGORIES.values(), ev.WINLOG):
        routes.add((ev.WINDOWS, category, "powershell-classic"))
    for service in set(CHANNEL_SERVICES.values()) - {SYSMON_SERVICE, "powershell",
                                                      "powershell-classic"}:
        routes.add((ev.WINDOWS, ev.WINLOG, service))
    for category in SECURITY_CATEGORIES:
        routes.add((ev.WINDOWS, category, SECURITY_SERVICE))
    return frozenset(routes)


#: What Windows event log replay (and an ETW collector producing Sysmon-shaped
#: events and channel events) feeds, Security audit events routed to Sysmon
#: categories included.
WINDOWS_EVENTLOG_FED: Final[frozenset[Route]] = _windows_routes()

#: What the Linux eBPF collectors feed (Sysmon for Linux categories).
LINUX_EBPF_FED: Final[frozenset[Route]] = frozenset(
    (ev.LINUX, category, None)
    for category in (
        ev.PROCESS_CREATION, ev.PROCESS_TERMINATION, ev.NETWORK_CONNECTION, ev.FILE_EVENT,
        ev.FILE_DELETE, ev.FILE_RENAME, ev.FILE_CHANGE, ev.DNS_QUERY,
    )
)

#: Both platforms: the default, so that one rule set loads the same everywhere.
ALL_FED: Final[frozenset[Route]] = WINDOWS_EVENTLOG_FED | LINUX_EBPF_FED


def applies(rule: Route, route: Route) -> bool:
    """Whether a rule with logsource ``rule`` sees events of ``route``."""
    product, category, service = rule
    if product is not None and product != route[0]:
        return False
    if service is not None and service != route[2]:
        return False
    if category is not None and category != route[1]:
        covered = CATEGORY_COVERS.get(category)
        if covered is None or route[1] not in covered:
            return False
    return True


def is_fed(rule: Route, fed: Iterable[Route]) -> bool:
    """Whether any fed route reaches a rule with logsource ``rule``."""
    return any(applies(rule, route) for route in fed)


def route_label(route: Route) -> str:
    """``product/category/service`` with ``-`` for unset parts, for reports."""
    return "/".join(part or "-" for part in route)
