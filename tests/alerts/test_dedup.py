"""Alert dedup and rollup: the first at once, one rollup with the count, nothing lost, state bounded."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edr.alerts.dedup import (
    COUNT_KEY,
    FIRST_SEEN_KEY,
    LAST_SEEN_KEY,
    AlertDeduplicator,
    dedup_key,
)
from edr.alerts.ecs import iso_time
from edr.detect.alert import Alert
from edr.detect.sigma import load_sigma
from edr.event import Event

REPO = Path(__file__).resolve().parents[2]
T0 = 1_772_359_200.0  # 2026-03-01T10:00:00Z


def exec_event(t: float, pid: int, *, ppid: int = 900, parent: str = "/usr/bin/bash",
               cmd: str = "whoami", image: str = "/usr/bin/whoami") -> Event:
    return Event(category="process_creation", product="linux", timestamp=t,
                 fields={"ProcessId": pid, "Image": image, "CommandLine": cmd, "ParentProcessId": ppid,
                         "ParentImage": parent, "User": "alice", "CurrentDirectory": "/home/alice",
                         "ProcessStartTime": 1000 + pid})


def file_event(t: float, pid: int, path: str = "/etc/cron.d/x", image: str = "/usr/bin/cp") -> Event:
    return Event(category="file_event", product="linux", timestamp=t,
                 fields={"ProcessId": pid, "Image": image, "TargetFilename": path, "Operation": "file_write",
                         "ProcessStartTime": 5000 + pid})


def alert(event: Event | None, rule: str = "R-1", engine: str = "sigma", **ecs: Any) -> Alert:
    return Alert(rule_id=rule, rule_name=f"rule {rule}", severity="high", engine=engine, event=event, ecs=dict(ecs))


@pytest.fixture(scope="module")
def whoami_engine() -> Any:
    engine, report = load_sigma([str(REPO / "rules" / "sigma" / "linux")])
    assert report.loaded >= 3
    return engine


def test_100_identical_executions_in_one_second(whoami_engine: Any) -> None:
    """100 whoami from one shell within a second, through the repository's Sigma rule: 1 alert + 1 rollup of 100."""
    events = [exec_event(T0 + i * 0.009, pid=2000 + i) for i in range(100)]
    alerts = [a for e in events for a in whoami_engine.match(e)]
    assert len(alerts) == 100 and {a.rule_id for a in alerts} == {"4c2e9a71-5d83-4f6b-8e0a-2b7d9c1f3e45"}
    dedup = AlertDeduplicator(10.0)
    out = [dedup.offer(a) for a in alerts]
    assert out[0] == [alerts[0]] and out[0][0] is alerts[0]  # the first at once, unchanged
    assert all(o == [] for o in out[1:])
    assert dedup.next_deadline() == pytest.approx(T0 + 10.0)
    assert dedup.expire(T0 + 9.99) == []
    rollups = dedup.expire(T0 + 10.0)
    assert len(rollups) == 1
    r = rollups[0]
    assert r.ecs[COUNT_KEY] == 100
    assert r.ecs[FIRST_SEEN_KEY] == iso_time(T0) and r.ecs[LAST_SEEN_KEY] == iso_time(T0 + 99 * 0.009)
    assert r.time == pytest.approx(T0 + 99 * 0.009)
    assert (r.rule_id, r.event) == (alerts[0].rule_id, alerts[0].event)
    assert COUNT_KEY not in alerts[0].ecs  # the first alert was not changed after it was emitted
    s = dedup.statistics()
    assert (s.offered, s.emitted_first, s.counted, s.rollups, s.open_windows) == (100, 1, 99, 1, 0)


def test_different_processes_are_not_merged() -> None:
    dedup = AlertDeduplicator(10.0)
    a = alert(exec_event(T0, 10, ppid=900))
    b = alert(exec_event(T0 + 0.1, 11, ppid=901))  # the same command from another shell
    c = alert(exec_event(T0 + 0.2, 12, ppid=900, parent="/usr/bin/python3"))  # pid 900 reused by another program
    d = alert(file_event(T0 + 0.3, 20))
    e = alert(file_event(T0 + 0.4, 21))  # another writer of the same file
    f = alert(Event(category="file_event", product="linux", timestamp=T0 + 0.5,
                    fields={**file_event(0, 20).fields, "ProcessStartTime": 9}))  # pid 20 again, a new process
    out = [x for al in (a, b, c, d, e, f) for x in dedup.offer(al)]
    assert out == [a, b, c, d, e, f]
    assert dedup.flush() == []  # no repeats, no rollups


def test_what_the_key_fields_tell_apart() -> None:
    base = exec_event(T0, 10)
    same_but_pid = exec_event(T0, 99)
    assert dedup_key(alert(base)) == dedup_key(alert(same_but_pid))  # the new process's pid is not the key
    assert dedup_key(alert(base)) != dedup_key(alert(exec_event(T0, 10, cmd="whoami --help")))
    assert dedup_key(alert(base)) != dedup_key(alert(base, rule="R-2"))
    assert dedup_key(alert(file_event(T0, 5))) != dedup_key(alert(file_event(T0, 5, path="/etc/cron.d/y")))
    conn = {"ProcessId": 7, "Image": "/usr/bin/nc", "Protocol": "tcp", "Initiated": "true",
            "DestinationIp": "203.0.113.9", "DestinationPort": 4444, "SourcePort": 40000}
    c1 = Event(category="network_connection", product="linux", fields=conn)
    c2 = Event(category="network_connection", product="linux", fields={**conn, "SourcePort": 40001})
    c3 = Event(category="network_connection", product="linux", fields={**conn, "DestinationPort": 4445})
    assert dedup_key(alert(c1)) == dedup_key(alert(c2))  # a new ephemeral port is the same connection again
    assert dedup_key(alert(c1)) != dedup_key(alert(c3))
    # Windows: the GUID is the identity
    w1 = Event(category="process_creation", product="windows", service="sysmon",
               fields={"ParentProcessGuid": "{A}", "ParentProcessId": 4, "Image": "C:\\x.exe", "CommandLine": "x"})
    w2 = Event(category="process_creation", product="windows", service="sysmon",
               fields={"ParentProcessGuid": "{B}", "ParentProcessId": 4, "Image": "C:\\x.exe", "CommandLine": "x"})
    assert dedup_key(alert(w1)) != dedup_key(alert(w2))
    # a category without a field list: every field but the times
    s1 = Event(category="ps_script", product="windows", fields={"ScriptBlockText": "iex", "UtcTime": "1"})
    s2 = Event(category="ps_script", product="windows", fields={"ScriptBlockText": "iex", "UtcTime": "2"})
    s3 = Event(category="ps_script", product="windows", fields={"ScriptBlockText": "iwr", "UtcTime": "1"})
    assert dedup_key(alert(s1)) == dedup_key(alert(s2)) != dedup_key(alert(s3))


def test_engine_key_fields() -> None:
    ev = exec_event(T0, 10)
    y1 = alert(ev, "yara:x", "yara", **{"file.path": "/tmp/a", "file.hash.sha256": "aa", "edr.yara.tags": ["x"]})
    y2 = alert(ev, "yara:x", "yara", **{"file.path": "/tmp/b", "file.hash.sha256": "bb", "edr.yara.tags": ["x"]})
    assert dedup_key(y1) != dedup_key(y2)
    i1 = alert(ev, "ioc:1", "ioc", **{"threat.enrichments.matched.atomic": "1.2.3.4"})
    i2 = alert(ev, "ioc:1", "ioc", **{"threat.enrichments.matched.atomic": "1.2.3.5"})
    assert dedup_key(i1) != dedup_key(i2)
    # a correlation is about its group, whichever event completed it
    c1 = alert(exec_event(T0, 10), **{"edr.correlation.type": "event_count", "edr.correlation.group.User": "bob",
                                      "edr.correlation.value": 5})
    c2 = alert(file_event(T0, 77), **{"edr.correlation.type": "event_count", "edr.correlation.group.User": "bob",
                                      "edr.correlation.value": 6})
    c3 = alert(exec_event(T0, 10), **{"edr.correlation.type": "event_count", "edr.correlation.group.User": "eve"})
    assert dedup_key(c1) == dedup_key(c2) != dedup_key(c3)
    # an engine this module does not know: all of its ecs fields
    u1, u2 = alert(ev, engine="new", x=1), alert(ev, engine="new", x=2)
    assert dedup_key(u1) != dedup_key(u2)
    assert dedup_key(alert(None)) == dedup_key(alert(None)) != dedup_key(alert(None, rule="R-9"))


def test_window_expiry_and_the_next_window() -> None:
    dedup = AlertDeduplicator(5.0)
    a = [alert(file_event(T0 + t, 20)) for t in (0.0, 1.0, 4.99, 5.0, 6.0, 20.0)]
    assert dedup.offer(a[0]) == [a[0]]
    assert dedup.offer(a[1]) == [] and dedup.offer(a[2]) == []
    # at the window's end: the rollup of the closed window, then the alert itself, which opens the next
    out = dedup.offer(a[3])
    assert [x.ecs.get(COUNT_KEY) for x in out] == [3, None] and out[1] is a[3]
    assert out[0].ecs[LAST_SEEN_KEY] == iso_time(T0 + 4.99)
    assert dedup.offer(a[4]) == []
    # another key's alert moves time on too, closing this window
    other = alert(file_event(T0 + 10.0, 21))
    out = dedup.offer(other)
    assert [x.ecs.get(COUNT_KEY) for x in out] == [2, None] and out[1] is other
    # a window without repeats closes silently
    assert dedup.expire(T0 + 15.0) == []
    assert dedup.offer(a[5]) == [a[5]] and dedup.open_windows == 1


def test_late_alerts_within_the_window_are_counted_with_their_own_times() -> None:
    dedup = AlertDeduplicator(10.0)
    first = alert(file_event(T0 + 5, 20))
    assert dedup.offer(first) == [first]
    assert dedup.offer(alert(file_event(T0 + 1, 20))) == []  # older: an out-of-order event
    [r] = dedup.flush()
    assert r.ecs[COUNT_KEY] == 2 and r.ecs[FIRST_SEEN_KEY] == iso_time(T0 + 1)
    assert r.ecs[LAST_SEEN_KEY] == iso_time(T0 + 5)


def test_eviction_emits_the_pending_rollup_and_state_stays_bounded() -> None:
    dedup = AlertDeduplicator(60.0, max_entries=3)
    a = alert(file_event(T0, 1))
    assert dedup.offer(a) == [a]
    assert dedup.offer(alert(file_event(T0 + 1, 1))) == []
    for pid in (2, 3):
        dedup.offer(alert(file_event(T0 + 2, pid)))
    newcomer = alert(file_event(T0 + 3, 4))
    out = dedup.offer(newcomer)
    assert [x.ecs.get(COUNT_KEY) for x in out] == [2, None] and out[1] is newcomer  # pid 1's window evicted
    assert out[0].event is a.event
    s = dedup.statistics()
    assert (s.evicted, s.evicted_rollups, s.open_windows) == (1, 1, 3)
    for pid in range(100, 1100):
        dedup.offer(alert(file_event(T0 + 4, pid)))
        assert dedup.open_windows <= 3
    s = dedup.statistics()
    assert s.evicted == 1001 and s.open_windows == 3
    assert len(dedup._heap) <= 2 * 3 + 64  # stale heap items are compacted away


def test_byte_bound() -> None:
    dedup = AlertDeduplicator(60.0, max_entries=10_000, max_bytes=50_000)
    for pid in range(500):
        ev = file_event(T0, pid, path="/var/tmp/" + "p" * 1000)
        dedup.offer(alert(ev))
        dedup.offer(alert(ev))
        assert dedup.statistics().bytes <= 50_000
    s = dedup.statistics()
    assert 10 < s.open_windows < 50 and s.evicted == 500 - s.open_windows
    assert s.evicted_rollups == s.evicted  # each had a repeat: none lost
    # a single alert bigger than the bound is still emitted, and its window closed at once
    huge = alert(file_event(T0, 1, path="/" + "h" * 60_000))
    assert huge in dedup.offer(huge)


def test_flush_emits_every_pending_rollup_in_opening_order() -> None:
    dedup = AlertDeduplicator(10.0)
    for pid in (3, 1, 2):
        dedup.offer(alert(file_event(T0, pid)))
        dedup.offer(alert(file_event(T0 + 1, pid)))
    dedup.offer(alert(file_event(T0, 9)))  # no repeat
    rollups = dedup.flush()
    assert [r.event.fields["ProcessId"] for r in rollups if r.event] == [3, 1, 2]
    assert dedup.open_windows == 0 and dedup.next_deadline() is None


def test_invalid_settings_are_refused() -> None:
    for kwargs in ({"window": 0}, {"window": 1, "max_entries": 0}, {"window": 1, "max_bytes": 0}):
        with pytest.raises(ValueError):
            AlertDeduplicator(**kwargs)


# --- properties ------------------------------------------------------------------------------------

_streams = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 2), st.floats(0, 30, allow_nan=False),
              st.booleans()),
    max_size=120,
)


def _run(stream: list[tuple[int, int, float, bool]], window: float, max_entries: int,
         max_bytes: int) -> tuple[list[Alert], list[Alert], AlertDeduplicator]:
    """Feed ``stream`` (pid, rule, time offset, expire-before?), return the inputs and everything emitted."""
    dedup = AlertDeduplicator(window, max_entries=max_entries, max_bytes=max_bytes)
    inputs: list[Alert] = []
    out: list[Alert] = []
    for pid, rule, dt, tick in stream:
        if tick:
            out.extend(dedup.expire(T0 + dt))
        a = alert(file_event(T0 + dt, pid), rule=f"R-{rule}")
        inputs.append(a)
        out.extend(dedup.offer(a))
    out.extend(dedup.flush())
    return inputs, out, dedup


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_streams, st.sampled_from([0.5, 3.0, 10.0]), st.integers(1, 6), st.sampled_from([2_000, 10_000, 1 << 30]))
def test_no_alert_is_lost(stream: list[tuple[int, int, float, bool]], window: float, max_entries: int,
                          max_bytes: int) -> None:
    """Every input is emitted itself or is one of the count - 1 repeats of exactly one rollup, per key."""
    inputs, out, dedup = _run(stream, window, max_entries, max_bytes)
    input_ids = {id(a) for a in inputs}
    firsts = [a for a in out if id(a) in input_ids]
    rollups = [a for a in out if id(a) not in input_ids]
    assert len({id(a) for a in firsts}) == len(firsts)  # nothing emitted twice
    assert all(COUNT_KEY not in a.ecs for a in firsts)
    assert all(r.ecs[COUNT_KEY] >= 2 for r in rollups)
    per_key_in = Counter(dedup_key(a) for a in inputs)
    per_key_out: Counter[Any] = Counter()
    for a in firsts:
        per_key_out[dedup_key(a)] += 1
    for r in rollups:
        key = dedup_key(r)  # the rollup keeps its first's key
        per_key_out[key] += r.ecs[COUNT_KEY] - 1
    assert per_key_out == per_key_in
    assert len(firsts) + sum(r.ecs[COUNT_KEY] - 1 for r in rollups) == len(inputs)
    s = dedup.statistics()
    assert s.offered == len(inputs) == s.emitted_first + s.counted and s.rollups == len(rollups)
    assert s.open_windows == 0 and s.bytes == 0


def _model(stream: list[tuple[int, int, float, bool]], window: float) -> list[tuple[Any, ...]]:
    """The stated semantics, written out plainly (unbounded state): what should be emitted, in order."""
    open_: dict[Any, list[Any]] = {}  # key -> [first alert desc, count, min t, max t, end, order]
    out: list[tuple[Any, ...]] = []
    order = 0

    def close_until(now: float) -> None:
        for key, w in sorted(open_.items(), key=lambda kv: (kv[1][4], kv[1][5])):
            if w[4] <= now:
                del open_[key]
                if w[1] > 1:
                    out.append(("rollup", key, w[1], w[2], w[3]))

    for pid, rule, dt, tick in stream:
        t = T0 + dt
        if tick:
            close_until(t)
        close_until(t)
        key = (pid, rule)
        if key in open_:
            w = open_[key]
            w[1] += 1
            w[2], w[3] = min(w[2], t), max(w[3], t)
        else:
            order += 1
            open_[key] = [key, 1, t, t, t + window, order]
            out.append(("first", key, t))
    for key, w in sorted(open_.items(), key=lambda kv: kv[1][5]):
        if w[1] > 1:
            out.append(("rollup", key, w[1], w[2], w[3]))
    return out


@settings(max_examples=300, deadline=None)
@given(_streams, st.sampled_from([0.5, 3.0, 10.0]))
def test_matches_the_stated_semantics_when_nothing_is_evicted(stream: list[tuple[int, int, float, bool]],
                                                             window: float) -> None:
    _inputs, out, dedup = _run(stream, window, 10_000, 1 << 30)
    assert dedup.statistics().evicted == 0
    got: list[tuple[Any, ...]] = []
    for a in out:
        assert a.event is not None
        key = (a.event.fields["ProcessId"], int(a.rule_id.removeprefix("R-")))
        if COUNT_KEY in a.ecs:
            got.append(("rollup", key, a.ecs[COUNT_KEY], a.ecs[FIRST_SEEN_KEY], a.ecs[LAST_SEEN_KEY]))
        else:
            got.append(("first", key, a.event.timestamp))
    expected = [(e[0], e[1], e[2], iso_time(e[3]), iso_time(e[4])) if e[0] == "rollup" else e
                for e in _model(stream, window)]
    assert got == expected


def test_held_counts_the_repeats_waiting_for_their_rollup() -> None:
    d = AlertDeduplicator(10.0)
    first, *repeats = [alert(file_event(T0 + t, 30)) for t in (0.0, 1.0, 2.0)]
    assert d.offer(first) == [first] and d.held == 0
    for a in repeats:
        assert d.offer(a) == []
    assert d.held == 2
    [rollup] = d.flush()
    assert rollup.ecs[COUNT_KEY] == 3 and d.held == 0
