"""Response decisions (sans-IO): severity mapping, target extraction, safety checks, allowlists."""

from __future__ import annotations

from edr.detect.alert import Alert
from edr.event import Event
from edr.platform.windows.processes import EPOCH_FILETIME, filetime_to_epoch
from edr.response.allowlist import ImageAllowlist
from edr.response.decision import DRY_RUN, KILL, SKIP, ResponsePolicy, effective_severity, target_of


def alert(engine: str = "sigma", severity: str = "high", **fields: object) -> Alert:
    event = Event("process_creation", "linux", dict(fields), 100.0)
    return Alert(rule_id="r", rule_name="Rule", severity=severity, engine=engine, event=event)


def policy(**kw: object) -> ResponsePolicy:
    args = {"enabled": True, "prevention": False, "min_severity": "critical",
            "allowlist": ImageAllowlist([], ["/usr/bin/"], windows=False), "protected_pids": frozenset({999})}
    args.update(kw)
    return ResponsePolicy(**args)  # type: ignore[arg-type]


def test_severity_mapping_then_min_severity() -> None:
    assert effective_severity(alert("yara", "low")) == "critical"
    assert effective_severity(alert("sigma", "High")) == "high"
    p = policy(min_severity="high")
    assert p.admits(alert("yara", "informational"))
    assert p.admits(alert("sigma", "high")) and not p.admits(alert("sigma", "medium"))
    assert p.admits(alert("ioc", "high")) and not p.admits(alert("simple", "low"))
    assert not policy(enabled=False).admits(alert("yara"))


def test_target_extraction_tolerates_odd_values() -> None:
    t = target_of(alert(ProcessId="0x10", Image="/tmp/x", ProcessStartTime="123"))
    assert (t.pid, t.image, t.start_ticks, t.event_time) == (16, "/tmp/x", 123, 100.0)
    t = target_of(alert(ProcessId=1, ProcessStartTime=1795333289.5))
    assert (t.start_ticks, t.start_epoch) == (None, 1795333289.5)
    assert target_of(alert(ProcessStartTime="1795333289.5")).start_epoch == 1795333289.5
    t = target_of(alert(ProcessId=True, Image=5))
    assert t.pid is None and t.image is None
    t = target_of(Alert(rule_id="r", rule_name="n", severity="high", engine="sigma", event=None))
    assert t.pid is None and t.event_time is None


def test_safety_checks_in_order_with_seed_messages() -> None:
    p = policy()
    d = p.decide(target_of(alert(Image="/tmp/x")))
    assert (d.action, d.reason) == (SKIP, "missing pid")
    assert d.message.startswith("Active response skipped: missing pid")
    assert p.decide(target_of(alert(ProcessId=4, Image="/tmp/x"))).message == (
        'Active response skipped: protected pid pid=4 image="/tmp/x"')
    assert p.decide(target_of(alert(ProcessId=999, Image="/tmp/x"))).reason == "protected pid"
    assert p.decide(target_of(alert(ProcessId=5000))).reason == "missing image"
    assert p.decide(target_of(alert(ProcessId=4321, Image="/usr/bin/bash"))).message == (
        'Active response skipped: allowlisted pid=4321 image="/usr/bin/bash"')
    assert p.decide(target_of(alert(ProcessId=4242, Image="/tmp/evil"))).message == (
        'Active response would terminate process pid=4242 image="/tmp/evil" dry_run=true')
    assert p.decide(target_of(alert(ProcessId=4242, Image="/tmp/evil"))).action == DRY_RUN
    assert policy(prevention=True).decide(target_of(alert(ProcessId=4242, Image="/tmp/evil"))).action == KILL


def test_log_text_cannot_be_forged_through_the_image_name() -> None:
    d = policy().decide(target_of(alert(ProcessId=4242, Image="/tmp/a\nINFO fake line")))
    assert "\n" not in d.message


def test_image_allowlist_names_full_paths_prefixes_and_windows_case() -> None:
    posix = ImageAllowlist(["sshd", "/opt/agent/bin/run"], ["/usr/"], windows=False)
    assert posix.match("/usr/sbin/cron") and posix.match("/srv/x/sshd") and posix.match("/opt/agent/bin/run")
    assert not posix.match("/opt/agent/bin/run2") and not posix.match("/tmp/SSHD")
    win = ImageAllowlist(["cmd.exe", "D:\\Tools\\x.exe"], ["C:\\Windows\\"], windows=True)
    assert win.match("c:\\windows\\system32\\svchost.exe") and win.match("C:\\Users\\a\\CMD.EXE")
    assert win.match("d:/tools/X.exe") and not win.match("C:\\Temp\\evil.exe")


def test_windows_layer_is_import_safe_and_converts_filetime() -> None:
    assert filetime_to_epoch(EPOCH_FILETIME + 10_000_000) == 1.0


def test_the_writer_of_a_matching_file_is_not_killed() -> None:
    """A file that matched when written says nothing bad about its writer (dpkg, cp...): no kill.

    The file's own process is killed when it runs: its exec scan alerts on it.
    """
    written = alert("yara", ProcessId=4242, Image="/tmp/dropper")
    written.ecs.update({"file.path": "/tmp/payload", "edr.scan.object": "written_file"})
    for prevention in (False, True):
        d = policy(prevention=prevention).decide(target_of(written))
        assert (d.action, d.reason) == (SKIP, "written file")
        assert d.message == 'Active response skipped: written file pid=4242 image="/tmp/dropper" file="/tmp/payload"'
    executed = alert("yara", ProcessId=4243, Image="/tmp/payload")
    executed.ecs.update({"file.path": "/tmp/payload", "edr.scan.object": "process_image"})
    assert policy(prevention=True).decide(target_of(executed)).action == KILL
