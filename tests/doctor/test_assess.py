"""The doctor's judgement (sans-IO): facts in, checks with verdicts, reasons and fixes out; exit 0/1/2."""

from __future__ import annotations

import json

import attrs
import pytest

from edr.doctor.assess import (
    build_report,
    capability_checks,
    config_checks,
    directory_check,
    linux_host_checks,
    lock_check,
    pack_check,
    rule_path_check,
    service_check,
    sigma_check,
    trust_checks,
    windows_host_checks,
)
from edr.doctor.facts import (
    LOCK_FREE,
    LOCK_HELD,
    LOCK_UNKNOWN,
    ConfigFacts,
    DirectoryFacts,
    DoctorFacts,
    Finding,
    LinuxHost,
    LockFacts,
    PackFacts,
    RefusalFacts,
    RulePathFacts,
    ServiceFacts,
    SigmaFacts,
    TrustFacts,
    WindowsHost,
)
from edr.doctor.profiles import linux_profile
from edr.doctor.report import Check, Report, Verdict
from edr.doctor.rule_verdicts import summarize
from edr.service.manager import ServiceStatus
from tests.doctor.test_rule_verdicts import LNX_PROC, WIN_PROC, compiled

ALL_CAPS = frozenset({"CAP_DAC_READ_SEARCH", "CAP_KILL", "CAP_SYS_PTRACE", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE",
                      "CAP_PERFMON", "CAP_BPF"})
OK = Finding(True, "fine")
TRACEFS_DOWN = Finding(False, "not mounted", "tracefs is not mounted (no /sys/kernel/tracing/events/syscalls)",
                       "`mount -t tracefs nodev /sys/kernel/tracing`")


def host(**changes: object) -> LinuxHost:
    base = LinuxHost(kernel=Finding(True, "Linux 6.1.0"), legacy_kernel=False, btf=Finding(True, "present"),
                     sensor=(("privileges", (OK, OK)), ("bcc", (OK, OK)), ("kernel headers", (OK, OK)),
                             ("tracefs", (OK, OK))),
                     capabilities=ALL_CAPS, euid=0)
    return attrs.evolve(base, **changes)


def by_id(checks: list[Check]) -> dict[str, Check]:
    return {c.id: c for c in checks}


def test_a_healthy_host_passes() -> None:
    checks = linux_host_checks(host(), prevention=True)
    assert [c.id for c in checks] == [
        "host.kernel", "host.btf", "host.privileges", "host.bcc", "host.kernel_headers", "host.tracefs",
        "capabilities.CAP_BPF", "capabilities.CAP_PERFMON", "capabilities.CAP_SYS_PTRACE",
        "capabilities.CAP_DAC_READ_SEARCH", "capabilities.CAP_KILL"]
    assert {c.verdict for c in checks} == {Verdict.PASS}


def test_tracefs_down_fails_with_the_loaders_reason_and_fix() -> None:
    # what `edr run` checks passes (events/ exists) but the loader's stricter check does not
    checks = by_id(linux_host_checks(host(sensor=(("tracefs", (OK, TRACEFS_DOWN)),)), prevention=False))
    tracefs = checks["host.tracefs"]
    assert tracefs.verdict is Verdict.FAIL
    assert tracefs.reason.startswith("tracefs is not mounted") and "mount -t tracefs" in tracefs.fix
    report = Report("linux", list(checks.values()))
    assert report.exit_code == 2 and report.verdict is Verdict.FAIL
    # both fail: the loader's finding (which tells "not readable" from "not mounted") is the one shown
    agents = Finding(False, "not mounted", "tracefs is not mounted", "mount -t tracefs nodev /sys/kernel/tracing")
    loaders = Finding(False, "not readable", "tracefs at /sys/kernel/tracing cannot be read by uid 1000", "root")
    both = by_id(linux_host_checks(host(sensor=(("tracefs", (agents, loaders)),)), prevention=False))
    assert both["host.tracefs"].found == "not readable" and "cannot be read" in both["host.tracefs"].reason


def test_btf_absent_is_reported_but_passes() -> None:
    btf = Finding(False, "/sys/kernel/btf/vmlinux absent", "the kernel has no BTF", "not needed by the sensor")
    check = by_id(linux_host_checks(host(btf=btf), prevention=False))["host.btf"]
    assert check.verdict is Verdict.PASS and "absent" in check.found and "not needed" in check.found


def test_capabilities() -> None:
    no_ptrace = ALL_CAPS - {"CAP_SYS_PTRACE", "CAP_KILL"}
    checks = by_id(capability_checks(host(capabilities=no_ptrace, euid=1000), prevention=False))
    assert checks["capabilities.CAP_SYS_PTRACE"].verdict is Verdict.WARN
    assert "/proc/PID" in checks["capabilities.CAP_SYS_PTRACE"].reason
    # CAP_KILL matters only when active response may kill
    assert checks["capabilities.CAP_KILL"].verdict is Verdict.PASS
    assert by_id(capability_checks(host(capabilities=no_ptrace), prevention=True))[
        "capabilities.CAP_KILL"].verdict is Verdict.WARN
    # without CAP_BPF the sensor cannot load
    no_bpf = ALL_CAPS - {"CAP_BPF"}
    assert by_id(capability_checks(host(capabilities=no_bpf), prevention=False))[
        "capabilities.CAP_BPF"].verdict is Verdict.FAIL
    # before 5.8 there is no CAP_BPF: CAP_SYS_ADMIN is what counts
    legacy = by_id(capability_checks(host(capabilities=no_bpf - {"CAP_SYS_ADMIN"},
                                          legacy_kernel=True), prevention=False))
    assert legacy["capabilities.CAP_BPF"].verdict is Verdict.PASS and "before Linux 5.8" in legacy[
        "capabilities.CAP_BPF"].found
    assert legacy["capabilities.CAP_SYS_ADMIN"].verdict is Verdict.FAIL
    unknown = capability_checks(host(capabilities=None), prevention=False)
    assert {c.verdict for c in unknown} == {Verdict.WARN}


def test_windows_host() -> None:
    missing = Finding(False, "not importable", "pywintrace cannot be loaded", "install it")
    checks = by_id(windows_host_checks(WindowsHost(missing, OK, OK)))
    assert checks["host.pywintrace"].verdict is Verdict.FAIL and checks["host.admin"].verdict is Verdict.PASS


def test_configuration() -> None:
    (bad,) = config_checks(ConfigFacts("/etc/edr/config.toml", error="configuration scan.workers (from x): must be >0"))
    assert bad.verdict is Verdict.FAIL and "scan.workers" in bad.reason
    checks = config_checks(ConfigFacts("/c.toml", trust=Finding(False, "/c.toml", "writable by others", "chmod")))
    assert checks[1].verdict is Verdict.FAIL
    tolerated = config_checks(ConfigFacts("/c.toml", trust=Finding(False, "/c.toml", "w", "f"), tolerated=True))
    assert tolerated[1].verdict is Verdict.WARN
    assert "not running as root" in config_checks(ConfigFacts("/c.toml"))[1].found
    assert len(config_checks(ConfigFacts(None))) == 1  # built-in defaults: no file to trust


def test_directories_and_lock() -> None:
    assert directory_check(DirectoryFacts("logging.directory", "/var/log/edr", "the operational log",
                                          exists=False)).verdict is Verdict.PASS
    bad = directory_check(DirectoryFacts("alerts.directory", "/tmp/x", "alerts", problem="/tmp/x: writable by "
                                         "others (mode 0777): chmod go-w /tmp/x", fix="fix it"))
    assert bad.verdict is Verdict.FAIL and "cannot write alerts" in bad.reason and bad.id == "paths.alerts.directory"
    unused = directory_check(DirectoryFacts("events.directory", "/x", "events", used=False, why_unused="off"))
    assert unused.verdict is Verdict.PASS and "not used" in unused.found
    assert lock_check(LockFacts("/s/edr.lock", LOCK_FREE)).verdict is Verdict.PASS
    held = lock_check(LockFacts("/s/edr.lock", LOCK_HELD, holder=4242))
    assert held.verdict is Verdict.PASS and "PID 4242" in held.found
    assert lock_check(LockFacts("/s/edr.lock", LOCK_UNKNOWN, problem="boom")).verdict is Verdict.FAIL


def test_rules_paths_trust_and_pack() -> None:
    unreadable = rule_path_check(RulePathFacts("scanner.sigma_rules_path", "/r", True, 0,
                                               "cannot read /r as uid 0: Permission denied", "chmod"))
    assert unreadable.verdict is Verdict.FAIL and "Permission denied" in unreadable.reason
    assert rule_path_check(RulePathFacts("ioc.ips_path", "/i.txt")).verdict is Verdict.PASS
    refusal = RefusalFacts("scanner.sigma_rules_path", "/r/x.yml", "rule file /r/x.yml (...): writable by others",
                           whole=False)
    (trust,) = trust_checks(TrustFacts(True, True, (refusal,)))
    assert trust.verdict is Verdict.WARN and "refused" in trust.found and "/r/x.yml" in trust.reason
    assert trust_checks(TrustFacts(True, True))[0].verdict is Verdict.PASS
    assert pack_check(PackFacts(False, "/s")).verdict is Verdict.PASS
    none = pack_check(PackFacts(True, "/s"))
    assert none.verdict is Verdict.WARN and "edr rules update" in none.fix
    tampered = pack_check(PackFacts(True, "/s", "0001-x", problem="rule pack 0001-x: rules/a.yml: was modified "
                                    "after the pack was installed", kind="integrity"))
    assert tampered.verdict is Verdict.FAIL and "modified" in tampered.reason and "rollback" in tampered.fix
    good = pack_check(PackFacts(True, "/s", "0001-x", 1, ("/s/packs/0001-x/content/rules",), 120, "verified"))
    assert good.verdict is Verdict.PASS and "signature verified" in good.found


def test_sigma_rules() -> None:
    profile = linux_profile(["process", "network", "file", "dns"])
    linux = compiled(LNX_PROC, "  sel:\n    Image: a\n  condition: sel", "l")
    windows = compiled(WIN_PROC, "  sel:\n    Image: a\n  condition: sel", "w")
    facts = SigmaFacts(True, ("/r",), files=2, rules=(linux, windows))
    ok = sigma_check(facts, summarize(facts.rules, profile))
    assert ok.verdict is Verdict.PASS and "1 can fire, 0 degraded, 1 never fire on linux" in ok.found
    only_windows = attrs.evolve(facts, rules=(windows,))
    assert sigma_check(only_windows, summarize(only_windows.rules, profile)).verdict is Verdict.WARN
    rejected = attrs.evolve(facts, rejections=(("/r/bad.yml", "Sigma rule must have a log source"),))
    check = sigma_check(rejected, summarize(rejected.rules, profile))
    assert check.verdict is Verdict.WARN and "/r/bad.yml" in check.reason
    assert sigma_check(SigmaFacts(True, ("/r",), error="boom"), None).verdict is Verdict.FAIL
    assert sigma_check(SigmaFacts(False), None).verdict is Verdict.PASS


@pytest.mark.parametrize(("status", "verdict"), [
    (ServiceStatus("edr.service", "/etc/systemd/system/edr.service", installed=False), Verdict.PASS),
    (ServiceStatus("edr.service", "/u", True, True, "enabled", "active", "running", 42, "success"), Verdict.PASS),
    (ServiceStatus("edr.service", "/u", True, True, "enabled", "failed", "failed", None, "exit-code"), Verdict.WARN),
    (ServiceStatus("edr.service", "/u", True, False, "enabled", "active", "running", 42, "success"), Verdict.WARN),
])
def test_service(status: ServiceStatus, verdict: Verdict) -> None:
    assert service_check(ServiceFacts(status=status)).verdict is verdict
    assert service_check(ServiceFacts(unavailable="no systemd here")).verdict is Verdict.PASS


def test_report_exit_codes_text_and_json() -> None:
    facts = DoctorFacts("linux", ConfigFacts("/c.toml", trust=OK), linux=host(),
                        directories=(DirectoryFacts("alerts.directory", "/a", "alerts"),),
                        lock=LockFacts("/s/edr.lock", LOCK_FREE), pack=PackFacts(False, "/s"),
                        sigma=SigmaFacts(True, ("/r",), 1, (compiled(LNX_PROC, "  s:\n    Image: a\n  condition: s"),)),
                        service=ServiceFacts(unavailable="no systemd here"))
    profile = linux_profile(["process"])
    report = build_report(facts, profile, {"config": "/c.toml"})
    assert report.exit_code == 0 and report.rules is not None and report.rules.totals.can_fire == 1
    warned = build_report(attrs.evolve(facts, pack=PackFacts(True, "/s")), profile)
    assert warned.exit_code == 1
    failed = build_report(attrs.evolve(facts, linux=host(sensor=(("tracefs", (TRACEFS_DOWN,)),))), profile)
    assert failed.exit_code == 2 and [c.id for c in failed.failing()] == ["host.tracefs"]
    doc = json.loads(json.dumps(failed.to_json()))
    assert doc["verdict"] == "fail" and doc["exit_code"] == 2 and doc["totals"]["fail"] == 1
    (tracefs,) = [c for c in doc["checks"] if c["id"] == "host.tracefs"]
    assert tracefs["verdict"] == "fail" and tracefs["reason"].startswith("tracefs is not mounted")
    assert doc["rules"]["totals"] == {"can_fire": 1, "degraded": 0, "never": 0}
    text = failed.to_text()
    assert "\nHost\n" in text and "[FAIL] tracefs: not mounted" in text and "why: tracefs is not mounted" in text
    assert text.rstrip().endswith("verdict fail (exit 2)")
    # a configuration that does not load: the host is still examined, nothing else
    broken = build_report(DoctorFacts("linux", ConfigFacts("/c.toml", error="bad"), linux=host()), None)
    assert broken.exit_code == 2 and {c.section for c in broken.checks} == {"host", "capabilities", "configuration"}
