"""``edr service`` verbs on Linux through an injected command runner, and the --root dry run (issue #14, point 4)."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from edr.config import load_config
from edr.service.manager import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    ServiceError,
    ServiceManagerUnavailable,
    perform,
    service_manager,
)
from edr.service.systemd_manager import BOOTED_MARKER, CommandResult, SystemdManager, run_command, systemd_booted
from edr.service.systemd_unit import UnitFacts, render_unit

FACTS = UnitFacts(executable="/usr/local/bin/edr", config="/etc/edr/config.toml", state_directory="/var/lib/edr",
                  writable=("/var/log/edr", "/srv/edr/alerts"))
SHOW_RUNNING = ("LoadState=loaded\nActiveState=active\nSubState=running\nUnitFileState=enabled\nMainPID=4242\n"
                "Result=success\n")


class RecordingRunner:
    """Stands in for systemctl: records each command and answers from a table (the seam the verbs expose)."""

    def __init__(self, answers: dict[str, CommandResult] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.answers = answers or {}

    def __call__(self, argv: Sequence[str]) -> CommandResult:
        self.calls.append(list(argv))
        return self.answers.get(" ".join(argv[1:3]), CommandResult(0))


def unit_file(root: Path) -> Path:
    return root / "etc/systemd/system/edr.service"


def live(root: Path, runner: RecordingRunner) -> SystemdManager:
    """Not a dry run: commands go to ``runner``, files under ``root``."""
    return SystemdManager(FACTS, root=root, dry_run=False, runner=runner, booted=lambda: True)


# -- --root: a dry run that writes the files ----------------------------------------------------------------------


def test_dry_run_install_writes_the_unit_and_the_paths_it_needs(tmp_path: Path) -> None:
    def refuse(argv: Sequence[str]) -> CommandResult:
        raise AssertionError(f"a dry run ran {argv}")

    report = SystemdManager(FACTS, root=tmp_path, runner=refuse, booted=lambda: False).install()
    path = unit_file(tmp_path)
    assert path.read_text() == render_unit(FACTS)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    # ReadWritePaths= directories must exist or systemd refuses to start the unit; systemd makes the others
    alerts = tmp_path / "srv/edr/alerts"
    assert alerts.is_dir() and stat.S_IMODE(alerts.stat().st_mode) == 0o700
    assert not (tmp_path / "var/lib/edr").exists()
    assert report.dry_run
    assert report.steps == (f"created {alerts} (mode 0700)", f"wrote {path}", "run systemctl daemon-reload",
                            "run systemctl enable edr.service")
    assert report.render().splitlines()[-1] == "would run systemctl enable edr.service"
    assert report.render().splitlines()[:2] == [f"created {alerts} (mode 0700)", f"wrote {path}"]  # done, not "would"
    again = SystemdManager(FACTS, root=tmp_path, runner=refuse).install()
    assert again.steps[0] == f"{path} is up to date"


def test_install_replaces_a_stale_unit_and_never_writes_through_a_link(tmp_path: Path) -> None:
    path = unit_file(tmp_path)
    path.parent.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    path.symlink_to(victim)
    SystemdManager(FACTS, root=tmp_path).install()
    assert not path.is_symlink() and path.read_text() == render_unit(FACTS)
    assert victim.read_text() == "keep me"
    assert [p.name for p in path.parent.iterdir()] == ["edr.service"]  # no temporary file left


def test_dry_run_verbs_report_the_commands(tmp_path: Path) -> None:
    mgr = SystemdManager(FACTS, root=tmp_path)
    with pytest.raises(ServiceError, match=r"edr\.service is not installed .*run `edr service install` first"):
        mgr.start()
    mgr.install()
    assert mgr.start().steps == ("run systemctl start edr.service",)
    assert mgr.restart().steps == ("run systemctl restart edr.service",)
    assert mgr.stop().steps == ("run systemctl stop edr.service",)
    status = mgr.status()
    assert status.installed and status.current is True and status.active is None
    assert status.problem and "dry run" in status.problem
    unit_file(tmp_path).write_text(render_unit(FACTS).replace("WatchdogSec=60", "WatchdogSec=5"))
    assert mgr.status().current is False
    assert "differs from the one this edr generates" in mgr.status().render()
    report = mgr.uninstall()
    assert report.steps == ("run systemctl disable --now edr.service", f"remove {unit_file(tmp_path)}",
                            "run systemctl daemon-reload")
    assert unit_file(tmp_path).exists()  # a dry run removes nothing
    unit_file(tmp_path).unlink()
    assert mgr.uninstall().steps == (f"nothing to do: {unit_file(tmp_path)} is not installed",)
    assert not mgr.status().installed


# -- with systemd: the commands, in order, and their failures ----------------------------------------------------


def test_install_reloads_then_enables(tmp_path: Path) -> None:
    runner = RecordingRunner()
    report = live(tmp_path, runner).install()
    assert runner.calls == [["systemctl", "daemon-reload"], ["systemctl", "enable", "edr.service"]]
    assert not report.dry_run and report.steps[-2:] == ("ran systemctl daemon-reload",
                                                        "ran systemctl enable edr.service")


def test_uninstall_stops_disables_removes_and_reloads(tmp_path: Path) -> None:
    runner = RecordingRunner()
    mgr = live(tmp_path, runner)
    mgr.install()
    runner.calls.clear()
    mgr.uninstall()
    assert runner.calls == [["systemctl", "disable", "--now", "edr.service"], ["systemctl", "daemon-reload"]]
    assert not unit_file(tmp_path).exists()


def test_a_failing_systemctl_is_reported_with_its_words(tmp_path: Path) -> None:
    runner = RecordingRunner({"start edr.service": CommandResult(
        1, "", "Job for edr.service failed because the control process exited with error code.\n"
               "See \"systemctl status edr.service\" and \"journalctl -xeu edr.service\" for details.\n")})
    mgr = live(tmp_path, runner)
    mgr.install()
    with pytest.raises(ServiceError) as info:
        mgr.start()
    assert str(info.value).startswith("systemctl start edr.service failed: Job for edr.service failed because")
    assert "see `journalctl -u edr.service`" in str(info.value)
    assert info.value.exit_code == EXIT_FAILED


def test_a_failing_enable_leaves_the_error_not_a_traceback(tmp_path: Path) -> None:
    runner = RecordingRunner({"enable edr.service": CommandResult(1, "", "Failed to enable unit: Access denied\n")})
    text, code = perform(live(tmp_path, runner), "install")
    assert code == EXIT_FAILED
    assert text == "edr: service install: systemctl enable edr.service failed: Failed to enable unit: Access denied"


@pytest.mark.parametrize(("show", "running", "code"), [
    (SHOW_RUNNING, True, EXIT_OK),
    (SHOW_RUNNING.replace("ActiveState=active", "ActiveState=failed").replace("Result=success", "Result=exit-code")
     .replace("MainPID=4242", "MainPID=0"), False, EXIT_FAILED),
    ("LoadState=not-found\nActiveState=inactive\nSubState=dead\nUnitFileState=\nMainPID=0\nResult=success\n",
     False, EXIT_FAILED),
])
def test_status_reads_systemctl_show(tmp_path: Path, show: str, running: bool, code: int) -> None:
    runner = RecordingRunner({"show edr.service": CommandResult(0, show)})
    status = live(tmp_path, runner).status()
    assert runner.calls == [["systemctl", "show", "edr.service",
                             "--property=LoadState,ActiveState,SubState,UnitFileState,MainPID,Result"]]
    assert status.running is running and status.exit_code == code and status.problem is None
    if running:
        assert (status.active, status.sub_state, status.enabled, status.main_pid) == (
            "active", "running", "enabled", 4242)
        assert "active (running), pid 4242; enabled at boot" in status.render()
    elif "failed" in show:
        assert status.main_pid is None and "last result: exit-code" in status.render()
    else:
        assert not status.installed and status.enabled is None


# -- no systemd ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["install", "uninstall", "start", "stop", "restart"])
def test_without_systemd_every_verb_says_so_and_changes_nothing(tmp_path: Path, verb: str) -> None:
    runner = RecordingRunner()
    mgr = SystemdManager(FACTS, root=tmp_path, dry_run=False, runner=runner, booted=lambda: False)
    with pytest.raises(ServiceManagerUnavailable, match=r"systemd is not running on this host \(no "
                                                        r"/run/systemd/system\).*`--root DIR`") as info:
        getattr(mgr, verb)()
    assert info.value.exit_code == EXIT_UNAVAILABLE
    assert runner.calls == [] and list(tmp_path.iterdir()) == []


def test_status_without_systemd_reports_the_file_and_the_reason(tmp_path: Path) -> None:
    SystemdManager(FACTS, root=tmp_path).install()
    status = SystemdManager(FACTS, root=tmp_path, dry_run=False, booted=lambda: False).status()
    assert status.installed and status.current and status.exit_code == EXIT_UNAVAILABLE
    text, code = perform(SystemdManager(FACTS, root=tmp_path, dry_run=False, booted=lambda: False), "status",
                         as_json=True)
    data = json.loads(text)
    assert code == EXIT_UNAVAILABLE and data["installed"] and data["running"] is False
    assert "systemd is not running" in data["problem"]


@pytest.mark.skipif(os.path.isdir(BOOTED_MARKER), reason="systemd runs here: the real verbs would act")
def test_this_host_without_systemd_gets_the_clear_error() -> None:
    """The real probe (PID 1 is not systemd on the test machine) and the real default paths."""
    assert systemd_booted() is False
    text, code = perform(SystemdManager(FACTS), "install")
    assert code == EXIT_UNAVAILABLE
    assert text.startswith("edr: service install: systemd is not running on this host (no /run/systemd/system)")
    assert not Path("/etc/systemd/system/edr.service").exists()


# -- the CLI's entry points ------------------------------------------------------------------------------------------


def test_perform_as_json(tmp_path: Path) -> None:
    mgr = SystemdManager(FACTS, root=tmp_path)
    text, code = perform(mgr, "install", as_json=True)
    assert code == EXIT_OK
    assert json.loads(text)["steps"][-1] == "run systemctl enable edr.service"
    text, code = perform(SystemdManager(FACTS, root=tmp_path / "empty"), "start", as_json=True)
    assert code == EXIT_FAILED and "not installed" in json.loads(text)["error"]
    with pytest.raises(ValueError, match="unknown service verb 'reload'"):
        perform(mgr, "reload")


def test_service_manager_builds_the_unit_from_the_configuration(tmp_path: Path) -> None:
    conf = tmp_path / "etc" / "config.toml"
    conf.parent.mkdir()
    conf.write_text(f'[agent]\nstate_directory = "/var/lib/edr"\n[logging]\ndirectory = "/var/log/edr"\n'
                    f'[alerts]\ndirectory = "{tmp_path}/alerts"\n[events]\ndirectory = "/var/log/edr"\n'
                    '[sigma]\ncache_dir = "/var/lib/edr/cache"\n')
    loaded = load_config(str(conf), environ={})
    mgr = service_manager(loaded.config, config_path=conf, executable=sys.executable, root=tmp_path / "root")
    assert isinstance(mgr, SystemdManager) and mgr.dry_run
    mgr.install()
    text = unit_file(tmp_path / "root").read_text()
    assert f"ExecStart={sys.executable} run --config {conf} --no-console" in text
    assert f"ReadWritePaths={tmp_path}/alerts" in text and "StateDirectory=edr\n" in text
    assert (tmp_path / "root" / str(tmp_path).lstrip("/") / "alerts").is_dir()
    with pytest.raises(ServiceError, match=r"cannot generate the unit: executable .* use a path of"):
        service_manager(loaded.config, config_path=conf, executable="/opt/my edr/edr")


def test_run_command_reports_a_missing_program() -> None:
    result = run_command(["/nonexistent/systemctl", "status"])
    assert result.returncode == 127 and "command not found" in result.stderr
    assert run_command([sys.executable, "-c", "import sys; print('out'); sys.exit(4)"]) == CommandResult(4, "out\n")
