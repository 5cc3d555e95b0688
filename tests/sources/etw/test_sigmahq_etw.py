"""SigmaHQ fires on ETW-shaped input as it fires on Sysmon.

For every Sysmon process_creation, network_connection, file_event,
registry_set and dns_query event in ../shared/evtx-attack-samples: build the
ETW records Windows emits for the same activity (:mod:`tests.sources.etw.sysmon_to_etw`),
normalize them, and run both through the full SigmaHQ rule set. Every rule
that fires on the Sysmon event must fire on the ETW-derived one, except where
the rule reads a field the ETW path does not carry; those are listed (rule,
field, how many events) in the test's output, and any other miss fails.
"""

from __future__ import annotations

import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Final

import pytest

from edr.detect.sigma import SigmaEngine, load_sigma
from edr.event import Event
from edr.sources.etw.host import DeviceMap, LiveProcess, SidResolver
from edr.sources.etw.normalize import EtwNormalizer
from edr.sources.replay.winlog import iter_winlog_events
from tests.conftest import shared_path
from tests.sources.etw.sysmon_to_etw import DEVICES, SysmonToEtw

pytestmark = [pytest.mark.shared, pytest.mark.slow]

CATEGORIES: Final = ("process_creation", "network_connection", "file_event", "registry_set", "dns_query")
#: Fields of Sysmon's events that the ETW path cannot fill here: the image's hashes and version
#: resource need the file (absent on this machine; on Windows the PE cache reads them), and
#: Sysmon's own bookkeeping (GUIDs, logon session, rule names, port names, its reverse lookups,
#: the System block of its channel) has no ETW counterpart.
NOT_FROM_ETW: Final = frozenset({
    "Hashes", "OriginalFileName", "Description", "Product", "Company", "FileVersion",
    "ProcessGuid", "ParentProcessGuid", "LogonGuid", "LogonId", "TerminalSessionId", "RuleName", "UtcTime",
    "CreationUtcTime", "SourcePortName", "DestinationPortName", "SourceHostname",
    "EventID", "Channel", "Provider_Name", "Computer", "Level", "Task", "Keywords",
})


class Facts:
    def __init__(self, table: dict[int, LiveProcess]) -> None:
        self.table = table

    def describe(self, pid: int) -> LiveProcess | None:
        return self.table.get(pid)


@pytest.fixture(scope="module")
def sigmahq() -> SigmaEngine:
    """All of ../shared/sigma, with the compiled-rule cache in the temporary directory."""
    rules = shared_path("sigma")
    cache = Path(tempfile.gettempdir()) / "edr-etw-sigma-cache"
    cache.mkdir(exist_ok=True)
    engine, report = load_sigma([str(rules)], cache_dir=str(cache))
    assert report.loaded > 2500
    return engine


def _sysmon_events() -> list[Event]:
    root = shared_path("evtx-attack-samples")
    return [e for path in sorted(root.rglob("*.evtx")) for e in iter_winlog_events(path)
            if e.service == "sysmon" and e.category in CATEGORIES]


def _fired(engine: SigmaEngine, events: list[Event], detection: frozenset[str]) -> set[str]:
    return {a.rule_id for e in events for a in engine.match(e) if a.rule_id in detection}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    return str(a).lower() == str(b).lower()


def test_sigmahq_fires_on_etw_derived_events_as_on_sysmon(sigmahq: SigmaEngine) -> None:
    rules = {r.meta.rule_id: r for r in sigmahq.rules}
    detection = frozenset(rules)
    builder = SysmonToEtw()
    sysmon_events = _sysmon_events()
    assert len(sysmon_events) > 2000
    compared = Counter[str]()
    fired_sysmon = Counter[str]()
    fired_both = Counter[str]()
    missed: dict[tuple[str, frozenset[str]], int] = defaultdict(int)
    unexplained: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = []
    extra = Counter[str]()
    for sysmon in sysmon_events:
        built = builder.build(sysmon)
        assert built is not None, f"no ETW records for {sysmon.category} {sysmon.fields}"
        records, facts = built
        normalizer = EtwNormalizer(devices=DeviceMap(DEVICES), sids=SidResolver(lambda s: None),
                                   facts=Facts(facts))
        etw = [e for e in normalizer.normalize_batch(records) if e.category == sysmon.category]
        assert len(etw) == 1, (sysmon.category, sysmon.fields, normalizer.statistics())
        compared[sysmon.category] += 1
        want = _fired(sigmahq, [sysmon], detection)
        got = _fired(sigmahq, etw, detection)
        fired_sysmon[sysmon.category] += len(want)
        fired_both[sysmon.category] += len(want & got)
        extra.update(got - want)
        for rule_id in want - got:
            rule = rules[rule_id]
            differ = frozenset(
                name for name in rule.fields
                if name in sysmon.fields and not _same(sysmon.fields[name], etw[0].fields.get(name))
            )
            if differ and differ <= NOT_FROM_ETW:
                missed[(rule_id, differ)] += 1
            else:
                unexplained.append((rule.meta.title, sysmon.category, sysmon.fields, etw[0].fields))

    lines = [f"compared {sum(compared.values())} Sysmon events: {dict(compared)}",
             f"rule firings on Sysmon: {sum(fired_sysmon.values())} {dict(fired_sysmon)}",
             f"reproduced on ETW: {sum(fired_both.values())} {dict(fired_both)}",
             f"rules that cannot fire on the ETW path ({len(missed)}), with the field ETW does not carry:"]
    for (rule_id, fields), count in sorted(missed.items(), key=lambda kv: (-kv[1], rules[kv[0][0]].meta.title)):
        lines.append(f"  {rules[rule_id].meta.title} [{rule_id}]: {', '.join(sorted(fields))} ({count} events)")
    lines.append(f"rules firing on the ETW event only ({sum(extra.values())} firings): "
                 + ", ".join(f"{rules[r].meta.title} ({n})" for r, n in extra.most_common()))
    print("\n".join(lines))
    assert not unexplained, "\n".join(
        f"{title} ({cat}) did not fire on ETW:\n  sysmon={s}\n  etw={e}" for title, cat, s, e in unexplained[:5])
    assert sum(fired_both.values()) + sum(missed.values()) == sum(fired_sysmon.values())
    assert sum(fired_both.values()) >= 0.9 * sum(fired_sysmon.values())
