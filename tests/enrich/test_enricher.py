"""Enricher: parents, users, DNS names and containers on events, from the caches."""

from __future__ import annotations

from edr.enrich.dns_cache import DnsCache
from edr.enrich.enricher import Enricher, addresses_from_query_results
from edr.enrich.process_cache import ProcessCache, ProcessInfo
from edr.enrich.users import UserCache
from edr.event import (
    DNS_QUERY,
    FILE_EVENT,
    NETWORK_CONNECTION,
    PROCESS_CREATION,
    PROCESS_FORK,
    PROCESS_TERMINATION,
    Event,
    F,
)


def ev(category: str, ts: float = 100.0, origin: dict | None = None, **fields: object) -> Event:
    return Event(category=category, product="linux", fields=dict(fields), timestamp=ts, origin=origin)


def _enricher() -> Enricher:
    users = UserCache(lookup={0: "root", 1000: "alice"}.get)
    e = Enricher(users=users, processes=ProcessCache(exit_linger=2.0))
    e.processes.put(ProcessInfo(50, 1, "/usr/bin/bash", "bash -i", 1000, "alice", "/home/alice"))
    return e


def test_short_lived_process_keeps_parent_and_command_line() -> None:
    e = _enricher()
    e.process(ev(PROCESS_FORK, ProcessId=51, ParentProcessId=50))
    created = e.process(ev(PROCESS_CREATION, ProcessId=51, Image="/usr/bin/curl", CommandLine="curl x",
                           Uid=1000))
    f = created.fields
    assert (f[F.PARENT_PROCESS_ID], f[F.PARENT_IMAGE], f[F.PARENT_COMMAND_LINE]) == (50, "/usr/bin/bash",
                                                                                      "bash -i")
    assert (f[F.USER], f[F.PARENT_USER]) == ("alice", "alice")
    # network event after the exit, within the linger: still the process's image
    e.process(ev(PROCESS_TERMINATION, ts=100.5, ProcessId=51, Uid=1000))
    net = e.process(ev(NETWORK_CONNECTION, ts=101.0, ProcessId=51, DestinationIp="1.2.3.4", Uid=1000))
    assert net.fields[F.IMAGE] == "/usr/bin/curl" and net.fields[F.PARENT_PROCESS_ID] == 50
    late = e.process(ev(FILE_EVENT, ts=103.0, ProcessId=51, TargetFilename="/tmp/x"))
    assert F.IMAGE not in late.fields  # removed after the linger


def test_termination_gets_image_and_command_line() -> None:
    e = _enricher()
    out = e.process(ev(PROCESS_TERMINATION, ProcessId=50, Uid=1000))
    assert (out.fields[F.IMAGE], out.fields[F.COMMAND_LINE], out.fields[F.USER]) == (
        "/usr/bin/bash", "bash -i", "alice")


def test_exec_of_unknown_parent_still_enriches_user() -> None:
    e = _enricher()
    out = e.process(ev(PROCESS_CREATION, ProcessId=77, Image="/x", CommandLine="x", Uid=4242))
    assert out.fields[F.USER] == "4242" and F.PARENT_IMAGE not in out.fields


def test_dns_answer_names_later_connections() -> None:
    e = _enricher()
    e.process(ev(DNS_QUERY, ts=10.0, origin={"dns.answers.ttl": 30}, ProcessId=50, QueryName="pool.minexmr.com",
                 QueryResults="type:  5 x.net;::ffff:5.6.7.8;2001:db8::5;"))
    a = e.process(ev(NETWORK_CONNECTION, ts=20.0, ProcessId=50, DestinationIp="5.6.7.8"))
    b = e.process(ev(NETWORK_CONNECTION, ts=20.0, ProcessId=50, DestinationIp="2001:db8::5"))
    c = e.process(ev(NETWORK_CONNECTION, ts=20.0, ProcessId=50, DestinationIp="9.9.9.9"))
    assert a.fields[F.DESTINATION_HOSTNAME] == b.fields[F.DESTINATION_HOSTNAME] == "pool.minexmr.com"
    assert F.DESTINATION_HOSTNAME not in c.fields
    assert e.statistics()["dns_cache_size"] == 2


def test_bad_events_pass_through() -> None:
    e = _enricher()
    weird = ev(PROCESS_CREATION, ProcessId="not-a-pid", Uid="x")
    assert e.process(weird) is weird
    e.process(ev(PROCESS_CREATION, ProcessId=5, ParentProcessId="?", Image=None, CgroupId="?"))
    e.process(ev(DNS_QUERY, ProcessId=5, QueryName="a", QueryResults=12))
    assert e.statistics()["events"] == 3


def test_a_batch_is_enriched_as_its_events_one_by_one() -> None:
    def batch() -> list[Event]:
        return [ev(PROCESS_FORK, ProcessId=51, ParentProcessId=50),
                ev(PROCESS_CREATION, ProcessId=51, Image="/usr/bin/curl", CommandLine="curl x", Uid=1000),
                ev(DNS_QUERY, ProcessId=5, QueryName="a", QueryResults=12),  # a mistyped field, passed through
                ev(PROCESS_TERMINATION, ts=100.5, ProcessId=51, Uid=1000)]
    one, whole = _enricher(), _enricher()
    events, batched = batch(), batch()
    assert [one.process(e) for e in events] == events
    out = whole.process_batch(batched)
    assert out == batched and out is not batched
    assert [e.fields for e in out] == [e.fields for e in events]
    assert whole.statistics() == one.statistics() and one.statistics()["events"] == 4


def test_query_results_parsing() -> None:
    assert addresses_from_query_results("type:  5 a.b;::ffff:1.1.1.1;fe80::1;junk;") == ["1.1.1.1", "fe80::1"]


def test_dns_cache_ttl_and_bounds() -> None:
    d = DnsCache(max_entries=2, min_ttl=60, max_ttl=600)
    d.add("1.1.1.1", "one", ttl=5, now=0.0)  # raised to the 60 s floor
    assert d.lookup("1.1.1.1", 59.0) == "one"
    assert d.lookup("1.1.1.1", 61.0) is None and d.expired == 1
    d.add("2.2.2.2", "two", ttl=10_000, now=0.0)  # capped at 600 s
    assert d.lookup("2.2.2.2", 601.0) is None
    for i in range(3):
        d.add(f"10.0.0.{i}", "n", ttl=60, now=0.0)
    assert len(d) == 2 and d.evictions == 1
