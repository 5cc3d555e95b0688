"""Microsoft-Windows-DNS-Client: 3006 (query started) and 3008 (query completed).

One ``dns_query`` per completed query, as Sysmon's event 22: ``QueryName``,
``QueryStatus`` (the Win32 status, as text: ``0``, ``87``, ``9003``...),
``QueryResults`` as the provider wrote it (already Sysmon's format). The
answers are parsed and each address goes into the DNS cache under the
queried name, so that a later connection to it gets ``DestinationHostname``.
A 3006 only counts: the same query's 3008 carries everything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from edr import event as ev
from edr.event import Event, F
from edr.sources.etw.dns_results import parse_query_results
from edr.sources.etw.record import Header, as_int, as_str

if TYPE_CHECKING:
    from edr.sources.etw.normalize import EtwNormalizer

QUERY_STARTED: Final = 3006
QUERY_COMPLETED: Final = 3008
#: how long an answer names its addresses when the provider gives no TTL (it never does)
ANSWER_TTL: Final = 300.0


def handle(n: EtwNormalizer, h: Header, d: dict[str, Any]) -> list[Event] | None:
    """DNS-Client record -> dns_query (3008); 3006 is counted."""
    if h.event_id == QUERY_STARTED:
        n.counts["dns_queries_started"] += 1
        return None
    if h.event_id != QUERY_COMPLETED:
        return None
    name = as_str(d.get("QueryName"))
    if not name:
        n.counts["dns_malformed"] += 1
        return None
    results = as_str(d.get("QueryResults"))
    status = as_int(d.get("QueryStatus"))
    fields: dict[str, Any] = {F.QUERY_NAME: name, F.QUERY_STATUS: str(status if status is not None else 0),
                              F.QUERY_RESULTS: results}
    qtype = as_int(d.get("QueryType"))
    if qtype is not None:
        fields[F.QUERY_TYPE] = qtype
    if results:
        for address in parse_query_results(results).addresses:
            n.dns.add(address, name, ANSWER_TTL, h.timestamp)
    n.subject(h.pid, h, d, fields)
    return [n.event(ev.DNS_QUERY, fields, h)]
