"""``edr service`` verbs on Windows: WindowsServiceManager over a stand-in service control manager."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from edr.config import load_config
from edr.service import manager as service_manager_module
from edr.service.manager import EXIT_FAILED, EXIT_OK, ServiceError, perform, service_manager
from edr.service.windows_manager import RESTART_DELAYS_MS, Pywin32, WindowsServiceManager
from edr.service.windows_service import CLASS_STRING, CONFIG_OPTION, SERVICE_NAME
from tests.service import standin_pywin32 as w
from tests.service.standin_pywin32 import ServiceControlManager

CONFIG = "C:\\ProgramData\\edr\\config.toml"


def lab(config: str = CONFIG) -> tuple[ServiceControlManager, WindowsServiceManager]:
    scm = ServiceControlManager()
    su, ws, _sm, pywintypes = scm.modules()

    class Idle(su.ServiceFramework):  # type: ignore[name-defined,misc]
        """A service that runs until it is stopped (the verbs, not the agent, are under test here)."""

        _svc_name_ = SERVICE_NAME

        def __init__(self, args: Any) -> None:
            super().__init__(args)
            self.stopped = threading.Event()

        def SvcStop(self) -> None:
            self.ReportServiceStatus(ws.SERVICE_STOP_PENDING)
            self.stopped.set()

        def SvcShutdown(self) -> None:
            self.SvcStop()

        def SvcDoRun(self) -> None:
            self.stopped.wait(30)

    scm.service_class = Idle
    return scm, WindowsServiceManager(config, modules=Pywin32(su, ws, pywintypes), sleep=lambda s: None)


def test_install_registers_a_delayed_automatic_service_that_restarts_on_failure() -> None:
    scm, manager = lab()
    report = manager.install()
    service = scm.services[SERVICE_NAME]
    assert service.python_class == CLASS_STRING
    assert service.start_type == w.SERVICE_AUTO_START and service.delayed
    assert service.command == f'"{scm.exe}"'  # pywin32's service host
    assert service.options == {CONFIG_OPTION: CONFIG}
    assert service.failure_actions == {"ResetPeriod": 86400, "RebootMsg": "", "Command": "",
                                       "Actions": tuple((w.SC_ACTION_RESTART, ms) for ms in RESTART_DELAYS_MS)}
    assert service.failure_flag  # also when the agent ends with an error, not only on a crash
    assert service.status[1] == w.SERVICE_STOPPED  # installed, not started
    assert report.steps == (
        f"registered service edr ({CLASS_STRING}, automatic delayed start)",
        f"set its configuration to {CONFIG}",
        "set its recovery: restart after 5 s, 30 s, 60 s, also when the agent ends with an error; "
        "count reset after a day",
    )
    # every handle opened was closed
    opened = sum(1 for c in scm.calls if c[0] in ("OpenSCManager", "OpenService"))
    assert opened == sum(1 for c in scm.calls if c[0] == "CloseServiceHandle") == 2

    status = manager.status()
    assert (status.installed, status.current, status.enabled, status.active) == (True, True, "enabled", "inactive")
    assert status.exit_code == EXIT_FAILED  # installed, not running


def test_install_again_updates_the_registration_in_place() -> None:
    scm, manager = lab()
    manager.install()
    service = scm.services[SERVICE_NAME]
    service.start_type, service.delayed, service.failure_flag = w.SERVICE_DEMAND_START, False, False
    assert manager.status().current is False
    moved = WindowsServiceManager("D:\\edr.toml", modules=manager.modules, sleep=lambda s: None)
    assert moved.status().current is False  # another configuration than the installed one
    report = moved.install()
    assert report.steps[0] == f"updated service edr ({CLASS_STRING}, automatic delayed start)"
    assert scm.services[SERVICE_NAME] is service
    assert (service.start_type, service.delayed, service.failure_flag) == (w.SERVICE_AUTO_START, True, True)
    assert service.options[CONFIG_OPTION] == "D:\\edr.toml"
    assert moved.status().current is True


def test_start_status_stop_restart_uninstall() -> None:
    _scm, manager = lab()
    with pytest.raises(ServiceError, match="not installed: run `edr service install`"):
        manager.start()
    manager.install()
    assert manager.start().steps == ("started service edr",)
    status = manager.status()
    assert (status.active, status.sub_state, status.running, status.exit_code) == ("active", "running", True, EXIT_OK)
    assert manager.start().steps == ("service edr is already running",)

    restarted = manager.restart()
    assert restarted.steps == ("stopped service edr", "started service edr")
    assert manager.status().running

    assert manager.stop().steps == ("stopped service edr",)
    assert manager.stop().steps == ("service edr is not running",)
    assert manager.status().active == "inactive"

    manager.start()
    report = manager.uninstall()
    assert report.steps == ("stopped service edr", "removed service edr")
    assert not manager.status().installed
    assert manager.uninstall().steps == ("service edr is not installed: nothing to do",)


def test_a_service_that_stops_while_starting_is_reported_with_its_exit_code() -> None:
    scm, manager = lab()
    manager.install()

    class Failing(scm.service_class):  # type: ignore[misc,name-defined]
        def SvcDoRun(self) -> None:
            raise RuntimeError("cannot start")

    scm.service_class = Failing
    with pytest.raises(ServiceError, match=r"stopped while starting \(exit code 1066, service-specific 536870913\)"):
        manager.start()
    status = manager.status()
    assert status.result == "exit code 1066 (service-specific 536870913)"
    assert "last result: exit code 1066" in status.render()


def test_errors_say_what_to_do() -> None:
    scm, manager = lab()
    scm.denied.add("InstallService")
    with pytest.raises(ServiceError, match=r"Access is denied\.: run it from an elevated \(Administrator\) prompt"):
        manager.install()
    assert SERVICE_NAME not in scm.services


def test_dry_run_calls_nothing() -> None:
    scm, _ = lab()
    su, ws, _sm, pywintypes = scm.modules()
    dry = WindowsServiceManager(CONFIG, modules=Pywin32(su, ws, pywintypes), dry_run=True)
    report = dry.install()
    assert report.dry_run and report.steps[0].startswith("run InstallService edr")
    assert all(line.startswith("would run ") for line in report.render().splitlines())
    assert dry.stop().dry_run and dry.uninstall().dry_run and dry.start().dry_run
    assert dry.status().problem == "dry run: the service control manager is not asked"
    assert scm.calls == [] and scm.services == {}


def test_perform_prints_the_windows_status_as_the_cli_does() -> None:
    _, manager = lab()
    manager.install()
    manager.start()
    text, code = perform(manager, "status", as_json=True)
    data = json.loads(text)
    assert code == EXIT_OK and data["running"] and data["enabled"] == "enabled" and data["name"] == "edr"
    text, code = perform(manager, "status")
    assert text.splitlines()[1] == "  active (running); enabled at boot"
    manager.stop()


def test_service_manager_is_the_windows_one_on_windows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    scm = ServiceControlManager(exe="C:\\Python312\\pythonservice.exe")
    su, ws, _sm, pywintypes = scm.modules()
    for name, module in (("win32serviceutil", su), ("win32service", ws), ("pywintypes", pywintypes)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(sys, "platform", "win32")
    exe = service_manager_module.default_executable()
    assert str(exe) == "C:\\Python312\\pythonservice.exe"
    config = load_config(None, environ={}).config
    made = service_manager(config, config_path=tmp_path / "config.toml", executable=exe)
    assert isinstance(made, WindowsServiceManager) and not made.dry_run
    made.install()
    assert scm.services[SERVICE_NAME].options[CONFIG_OPTION] == str(tmp_path / "config.toml")
    assert scm.services[SERVICE_NAME].command == '"C:\\Python312\\pythonservice.exe"'
    dry = service_manager(config, config_path=tmp_path / "config.toml", executable=exe, root=tmp_path)
    assert isinstance(dry, WindowsServiceManager) and dry.dry_run


def test_reload_sends_the_paramchange_control_and_says_when_it_cannot() -> None:
    scm, manager = lab()
    manager.install()
    manager.start()
    # this idle service does not accept PARAMCHANGE (the agent's EdrService does: tests/service/test_windows_service)
    with pytest.raises(ServiceError, match="cannot accept control messages"):
        manager.reload()
    assert ("ControlService", SERVICE_NAME, 6) in scm.calls

    class Reloading(scm.service_class):  # type: ignore[misc,name-defined]
        reloads = 0

        def GetAcceptedControls(self) -> int:
            return int(super().GetAcceptedControls()) | 8  # SERVICE_ACCEPT_PARAMCHANGE

        def SvcOther(self, control: int) -> None:
            type(self).reloads += control == 6

    manager.stop()
    scm.service_class = Reloading
    manager.start()
    assert manager.reload().steps == ("reload requested from service edr; its log says what was reloaded",)
    assert Reloading.reloads == 1
    manager.stop()
    dry = WindowsServiceManager(CONFIG, modules=manager.modules, dry_run=True)
    assert dry.reload().dry_run
