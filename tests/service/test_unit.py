"""The generated systemd unit: what it declares, systemd's own verdicts on it, the shipped copy (issue #14, point 4)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from edr.config import Config, default_config, load_config
from edr.service.systemd_unit import (
    DEFAULT_FACTS,
    UnitError,
    UnitFacts,
    facts_from_config,
    kernel_lacks_bpf_capabilities,
    render_unit,
    split_writable,
)
from tests.conftest import REPO
from tests.service.sandbox import service_directives

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
MAX_EXPOSURE = 5.0


def real_facts(tmp_path: Path, **kw: object) -> UnitFacts:
    """The default layout, with ExecStart pointing at an executable that exists (verify checks it)."""
    return UnitFacts(executable=sys.executable, config="/etc/edr/config.toml", state_directory="/var/lib/edr",
                     writable=("/var/log/edr",), **kw)  # type: ignore[arg-type]


def write_unit(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edr.service"
    path.write_text(text)
    return path


def exposure(unit: Path) -> float:
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
                       capture_output=True, text=True)
    match = re.search(r"Overall exposure level for edr\.service: (\d+\.\d+)", r.stdout)
    assert match, (r.returncode, r.stdout[-2000:], r.stderr)
    return float(match[1])


def test_shipped_unit_is_the_generated_one() -> None:
    shipped = (REPO / "conf" / "edr.service").read_text()
    assert shipped == render_unit(DEFAULT_FACTS), (
        "conf/edr.service is stale: PYTHONPATH=src python -m edr.service.systemd_unit > conf/edr.service")


def test_lifecycle_directives() -> None:
    d = service_directives(render_unit(DEFAULT_FACTS))
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert d["ExecStart"] == ["/usr/local/bin/edr run --config /etc/edr/config.toml --no-console"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert "ExecStartPre" not in d  # no package installation at start
    assert d["WatchdogSec"] == ["60"]
    assert d["Restart"] == ["on-failure"]
    # the agent's exit codes for a bad configuration and an unusable sensor (edr.cli)
    from edr.cli import EXIT_UNAVAILABLE, EXIT_USAGE

    assert d["RestartPreventExitStatus"] == [f"{EXIT_USAGE} {EXIT_UNAVAILABLE}"]
    assert d["UMask"] == ["0077"]
    assert d["StateDirectory"] == ["edr"] and d["LogsDirectory"] == ["edr"]
    assert d["StateDirectoryMode"] == d["LogsDirectoryMode"] == ["0700"]


def test_hardening_directives() -> None:
    d = service_directives(render_unit(DEFAULT_FACTS))
    assert d["CapabilityBoundingSet"] == ["CAP_BPF CAP_PERFMON CAP_SYS_PTRACE CAP_DAC_READ_SEARCH CAP_KILL"]
    assert "AmbientCapabilities" not in d  # uid 0: the bounding set is what it gets
    for key in ("NoNewPrivileges", "ProtectKernelTunables", "ProtectControlGroups", "ProtectKernelLogs",
                "ProtectClock", "ProtectHostname", "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID",
                "LockPersonality", "MemoryDenyWriteExecute", "PrivateMounts"):
        assert d[key] == ["yes"], key
    assert d["ProtectSystem"] == ["strict"]
    assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert d["SystemCallArchitectures"] == ["native"]
    assert d["SystemCallFilter"][0] == "@system-service bpf perf_event_open pidfd_getfd"
    assert d["KeyringMode"] == ["private"] and d["DevicePolicy"] == ["closed"]
    # what would blind the scanner or the sensor is never set, and each omission is explained
    text = render_unit(DEFAULT_FACTS)
    for key in ("PrivateTmp", "ProtectHome", "ProtectProc", "ProcSubset", "PrivateDevices", "ProtectKernelModules",
                "PrivateNetwork", "PrivateUsers"):
        assert key not in d, key
        assert re.search(rf"^#   .*\b{key}\b", text, re.M), f"no comment explains why {key} is not used"


def test_other_user_gets_ambient_capabilities() -> None:
    d = service_directives(render_unit(UnitFacts(executable="/usr/local/bin/edr", config="/etc/edr/config.toml",
                                                 state_directory="/var/lib/edr", user="edr")))
    assert d["User"] == ["edr"] and d["Group"] == ["edr"]
    assert d["AmbientCapabilities"] == d["CapabilityBoundingSet"]


@pytest.mark.parametrize(("release", "old"), [("4.18.0-553.el8_10.x86_64", True), ("5.4.0-150-generic", True),
                                              ("5.8.0", False), ("6.1.0-57-amd64", False), ("6.18.44-fc", False)])
def test_sys_admin_only_for_kernels_without_cap_bpf(release: str, old: bool) -> None:
    assert kernel_lacks_bpf_capabilities(release) is old
    facts = UnitFacts(executable="/usr/local/bin/edr", config="/etc/edr/config.toml",
                      state_directory="/var/lib/edr", legacy_kernel=old)
    caps = service_directives(render_unit(facts))["CapabilityBoundingSet"][0].split()
    assert ("CAP_SYS_ADMIN" in caps) is old
    assert "CAP_SYS_RESOURCE" not in caps


def test_bad_kernel_release() -> None:
    with pytest.raises(UnitError, match=r"'linux' does not start with MAJOR\.MINOR"):
        kernel_lacks_bpf_capabilities("linux")


def test_directories_outside_the_managed_roots_become_read_write_paths() -> None:
    managed, other = split_writable([PurePosixPath(p) for p in (
        "/var/lib/edr", "/var/lib/edr/cache", "/var/log/edr", "/srv/alerts", "/srv/alerts/x", "/var/cache/edr/a",
        "/var/lib")])
    # /var/lib itself is not a service directory: it must be named as a path
    assert managed == {"LogsDirectory": ["edr"], "CacheDirectory": ["edr/a"]}
    assert other == ["/srv/alerts", "/var/lib"]
    d = service_directives(render_unit(UnitFacts(executable="/usr/local/bin/edr", config="/etc/edr/config.toml",
                                                 state_directory="/var/lib/edr", writable=("/srv/alerts",))))
    assert d["ReadWritePaths"] == ["/srv/alerts"]


@pytest.mark.parametrize(("kw", "message"), [
    ({"executable": "edr"}, "executable must be an absolute path"),
    ({"config": "/etc/my edr/config.toml"}, "config '/etc/my edr/config.toml': use a path of"),
    ({"state_directory": "/var/lib/%n"}, "writable directory '/var/lib/%n'"),
    ({"writable": ("/",)}, "would undo ProtectSystem=strict"),
    ({"writable": ("/var/log/../../etc",)}, "no spaces, quotes, '%', '\\$' or '..'"),
    ({"user": "Bad User"}, "user 'Bad User' is not a valid user name"),
    ({"watchdog_secs": 0}, "watchdog_secs must be a positive whole number of seconds, not 0"),
    ({"stop_timeout_secs": True}, "stop_timeout_secs must be a positive whole number of seconds, not True"),
])
def test_facts_that_cannot_go_into_a_unit(kw: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"executable": "/usr/local/bin/edr", "config": "/etc/edr/config.toml",
                               "state_directory": "/var/lib/edr"}
    with pytest.raises(UnitError, match=message):
        UnitFacts(**{**base, **kw})  # type: ignore[arg-type]


def test_facts_from_a_configuration(tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text('[agent]\nstate_directory = "/var/lib/edr"\n[logging]\ndirectory = "/var/log/edr"\n'
                    '[alerts]\ndirectory = "/srv/edr-alerts"\n[events]\ndirectory = "events"\n'
                    '[sigma]\ncache_dir = ""\n')
    facts = facts_from_config(load_config(str(conf), environ={}).config, config_path="/etc/edr/config.toml",
                              executable="/usr/local/bin/edr")
    assert facts.state_directory == PurePosixPath("/var/lib/edr")
    # a relative path is relative to the configuration file it is written in (resolved when it is loaded)
    events = PurePosixPath(tmp_path / "events")
    assert set(facts.writable) == {PurePosixPath(p) for p in ("/var/log/edr", "/srv/edr-alerts")} | {events}
    d = service_directives(render_unit(facts))
    assert d["WorkingDirectory"] == ["/etc/edr"]
    assert d["ReadWritePaths"] == [" ".join(sorted([str(events), "/srv/edr-alerts"]))]
    defaults = facts_from_config(default_config(), config_path="/etc/edr/config.toml", executable="/usr/local/bin/edr")
    assert PurePosixPath("/var/lib/edr/cache") in defaults.writable  # the compiled-rule cache, when enabled


def test_watchdog_and_stop_timeout_follow_the_configuration(tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text('[agent]\nstop_timeout_secs = 44.5\n[health]\nwatchdog = false\n')
    facts = facts_from_config(load_config(str(conf), environ={}).config, config_path="/etc/edr/config.toml",
                              executable="/usr/local/bin/edr")
    text = render_unit(facts)
    d = service_directives(text)
    # no pings are sent, so a WatchdogSec= would kill a healthy agent
    assert "WatchdogSec" not in d and "No WatchdogSec=: health.watchdog is off" in text
    assert d["TimeoutStopSec"] == ["65"]  # the agent's own limit, rounded up, plus 20 s
    defaults = service_directives(render_unit(facts_from_config(Config(), config_path="/etc/edr/config.toml",
                                                                executable="/usr/local/bin/edr")))
    assert defaults["WatchdogSec"] == ["60"] and defaults["TimeoutStopSec"] == ["30"]


@needs_analyze
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    unit = write_unit(tmp_path, render_unit(real_facts(tmp_path)))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


@needs_analyze
def test_systemd_analyze_verify_catches_a_missing_executable(tmp_path: Path) -> None:
    """The check above can fail: a unit pointing at no program does not verify."""
    facts = UnitFacts(executable=tmp_path / "no-such-edr", config="/etc/edr/config.toml",
                      state_directory="/var/lib/edr")
    r = subprocess.run(["systemd-analyze", "verify", str(write_unit(tmp_path, render_unit(facts)))],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "no-such-edr" in r.stderr


@needs_analyze
@pytest.mark.parametrize("legacy", [False, True])
def test_security_exposure_is_at_most_5(tmp_path: Path, legacy: bool) -> None:
    score = exposure(write_unit(tmp_path, render_unit(real_facts(tmp_path, legacy_kernel=legacy))))
    print(f"systemd-analyze security --offline=true: {score} (legacy kernel: {legacy})")
    assert score <= MAX_EXPOSURE


@needs_analyze
def test_the_old_unit_scored_unsafe(tmp_path: Path) -> None:
    """The exposure figure means something: the unit this replaces was rated 9.6 UNSAFE."""
    old = ("[Unit]\nDescription=edr\n[Service]\nType=notify\nNotifyAccess=main\n"
           f"ExecStart={sys.executable} run --no-console\nWatchdogSec=60\nRestart=on-failure\n"
           "[Install]\nWantedBy=multi-user.target\n")
    assert exposure(write_unit(tmp_path, old)) > 9.0
