"""The Windows service class, hosted as pythonservice.exe hosts it, over stand-ins for pywin32.

Each start runs the real agent (:func:`edr.agent.run_live`, the real
Windows graph and Supervisor, real rules, alert files) with stand-ins only
where Windows itself is needed: pywin32's service modules
(:mod:`tests.service.standin_pywin32`), pywintrace's ``etw``
(:mod:`tests.sources.etw.standin_etw`, which delivers the real ETW recordings) and
pywin32's ``win32evtlog``/``win32event`` (:mod:`tests.sources.etw.standin_eventlog`).
``edr.agent`` is told it runs on Windows (its ``current()``), nothing else.
The stop comes from another thread through the registered control handler,
as the service control manager's dispatcher delivers it.
"""

from __future__ import annotations

import json
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import edr.agent
from edr.platform.windows import WindowsPlatform
from edr.service.windows_service import CONFIG_OPTION, SERVICE_NAME, judge, make_service_class
from tests.service import standin_pywin32 as w
from tests.service.standin_pywin32 import ServiceControlManager
from tests.sources.etw.pywintrace_shape import all_recorded
from tests.sources.etw.standin_etw import SessionTable, make_module
from tests.sources.etw.standin_eventlog import EventLogService

RULE = """\
title: cmd started by PowerShell at high integrity
id: 5f0c7f6e-6f1e-4d6b-9a49-3d2a3c0e0101
status: test
level: high
logsource:
    product: windows
    category: process_creation
detection:
    selection:
        Image|endswith: '\\cmd.exe'
        ParentImage|endswith: '\\powershell.exe'
        IntegrityLevel: High
    condition: selection
"""
STOP_TIMEOUT = 20.0
CHANNELS = ["Security", "System", "Application", "Microsoft-Windows-Windows Defender/Operational"]


def write_config(tmp: Path, extra: str = "") -> Path:
    rules = tmp / "rules"
    rules.mkdir()
    (rules / "cmd_from_powershell.yml").write_text(textwrap.dedent(RULE))
    logs = tmp / "logs"
    path = tmp / "config.toml"
    path.write_text(textwrap.dedent(f"""\
        [agent]
        state_directory = "{tmp / 'state'}"
        stop_timeout_secs = {STOP_TIMEOUT}
        [scanner]
        sigma_rules_path = ["{rules}"]
        yara_enabled = false
        [ioc]
        enabled = false
        [simple]
        enabled = false
        [sigma]
        cache_dir = ""
        [events]
        enabled = true
        directory = "{logs}"
        [alerts]
        directory = "{logs}"
        [logging]
        directory = "{logs}"
        console_output = false
        """) + extra)
    return path


def read(directory: Path, pattern: str) -> list[dict[str, Any]]:
    return [json.loads(line) for p in sorted(directory.glob(pattern)) for line in p.read_text().splitlines() if line]


class Lab:
    """The stand-in Windows of one test: its service manager, ETW sessions and Event Log."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp: Path, feed: Any = None, **etw: Any) -> None:
        self.scm = ServiceControlManager()
        su, ws, sm, _ = self.scm.modules()
        self.cls = make_service_class(su, ws, sm)
        self.scm.service_class = self.cls
        su.InstallService("edr.service.windows_service.EdrService", SERVICE_NAME, "edr",
                          startType=w.SERVICE_AUTO_START, delayedstart=True)
        self.config = write_config(tmp)
        su.SetServiceCustomOption(SERVICE_NAME, CONFIG_OPTION, str(self.config))
        self.sessions = SessionTable()
        records = all_recorded()
        monkeypatch.setitem(sys.modules, "etw", make_module(self.sessions, feed or (lambda: records), **etw))
        self.eventlog = EventLogService(CHANNELS)
        evtlog, event = self.eventlog.modules()
        monkeypatch.setitem(sys.modules, "win32evtlog", evtlog)
        monkeypatch.setitem(sys.modules, "win32event", event)
        monkeypatch.setattr(edr.agent, "current", WindowsPlatform)  # the agent runs the Windows graph
        self.logs = tmp / "logs"

    @property
    def service(self) -> w.Service:
        return self.scm.services[SERVICE_NAME]

    def stop_from_the_manager(self) -> None:
        """ControlService(STOP) from a thread of the manager's, as its dispatcher calls the handler."""
        control = threading.Thread(target=self.scm.control, args=(SERVICE_NAME, w.SERVICE_CONTROL_STOP))
        control.start()
        control.join(10)
        assert not control.is_alive(), "the control handler blocked"

    def oplog(self) -> str:
        """edr's own log (``edr.log.<date>``)."""
        return "".join(p.read_text() for p in sorted(self.logs.glob("edr.log*")))

    def states(self) -> list[int]:
        return [s[1] for s in self.service.statuses]


@pytest.fixture(autouse=True)
def _edr_logger() -> Iterator[None]:
    # the service sets up edr's log handlers (a file in the test's directory): put them back afterwards
    import logging

    logger = logging.getLogger("edr")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for h in list(logger.handlers):
        if h not in saved[0]:
            h.close()
    logger.handlers[:], logger.level, logger.propagate = saved


def test_judge_ends_a_requested_stop_cleanly_and_any_other_end_as_a_failure() -> None:
    assert judge(0, True) == judge(0, True) and not judge(0, True).failed and not judge(0, True).error
    lost = judge(1, True)
    assert lost.error and not lost.failed  # logged as an error; no restart after the operator's stop
    for code in (0, 1, 2, 3):
        outcome = judge(code, False)
        assert outcome.failed and outcome.error and "recovery actions restart it" in outcome.message
    assert "another agent" in judge(2, False).message and "sensor" in judge(3, False).message


def test_stop_during_startup_never_starts_the_graph(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    lab = Lab(monkeypatch, tmp_path)

    def on_status(service: w.Service, status: tuple[int, ...]) -> None:
        # SvcRun has reported RUNNING (so a stop is accepted) and is about to load the configuration and rules
        if status[1] == w.SERVICE_RUNNING and lab.states().count(w.SERVICE_RUNNING) == 1:
            lab.stop_from_the_manager()

    lab.scm.on_status = on_status
    lab.scm.host(SERVICE_NAME)
    assert lab.scm.wait_stopped(SERVICE_NAME, 120)
    lab.service.thread.join(10)

    assert lab.sessions.log == []  # no ETW session was ever started: the graph did not run
    assert lab.eventlog.subscriptions == []
    assert lab.states() == [w.SERVICE_START_PENDING, w.SERVICE_RUNNING, w.SERVICE_STOP_PENDING,
                            w.SERVICE_STOP_PENDING, w.SERVICE_STOPPED]
    stop_pending = lab.service.statuses[2]
    assert stop_pending[6] == int((STOP_TIMEOUT + 1) * 1000)  # the wait hint covers the drain
    assert lab.service.status[3:5] == (0, 0)  # a clean stop: no recovery action
    assert lab.scm.application_log == [  # the stop came before SvcDoRun began; nothing said the pipeline runs
        (w.EVENTLOG_INFORMATION_TYPE,
         "The edr service is stopping: stop requested while starting, the pipeline is not started."),
        (w.EVENTLOG_INFORMATION_TYPE, f"The edr service is starting with the configuration {lab.config}."),
        (w.EVENTLOG_INFORMATION_TYPE,
         "The edr service has stopped: stopped: the pipeline drained and every alert was written."),
    ]
    assert "stop requested while starting: the graph was not started" in lab.oplog()
    assert read(lab.logs, "alerts*.json*") == []


def test_a_stop_drains_the_pipeline_and_writes_the_alerts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    records = all_recorded()
    holder: dict[str, Lab] = {}

    def feed() -> Iterator[tuple[int, dict[str, Any]]]:
        # The stop comes the moment the last record is in the source's bridge: none of them has been
        # normalized, let alone alerted, unless the stop drains the pipeline.
        yield from records
        holder["lab"].stop_from_the_manager()

    lab = holder["lab"] = Lab(monkeypatch, tmp_path, feed=feed)
    lab.scm.host(SERVICE_NAME)
    assert lab.scm.wait_stopped(SERVICE_NAME, 120)
    lab.service.thread.join(10)

    alerts = read(lab.logs, "alerts*.json*")
    assert [a["rule.name"] for a in alerts] == ["cmd started by PowerShell at high integrity"]
    assert alerts[0]["process.pid"] == 7004 and alerts[0]["process.parent.pid"] == 6340
    events = read(lab.logs, "events.json*")
    assert len(events) == 24  # every recorded event normalized and written after the stop
    assert lab.sessions.log[-1] == ("stop", "edr-etw") and lab.sessions.running == {}
    assert lab.states() == [w.SERVICE_START_PENDING, w.SERVICE_RUNNING, w.SERVICE_STOP_PENDING,
                            w.SERVICE_STOP_PENDING, w.SERVICE_STOPPED]
    assert lab.service.status[3:5] == (0, 0)
    assert lab.scm.log_lines()[-1] == \
        "The edr service has stopped: stopped: the pipeline drained and every alert was written."
    assert lab.scm.application_log[:2] == [
        (w.EVENTLOG_INFORMATION_TYPE, f"The edr service is starting with the configuration {lab.config}."),
        (w.EVENTLOG_INFORMATION_TYPE, "The edr service has started: the pipeline runs."),
    ]
    assert [kind for kind, _ in lab.scm.application_log] == [w.EVENTLOG_INFORMATION_TYPE] * 3
    assert "service stop: stopping sources, draining the pipeline (at most 20.0s)" in lab.oplog()


SECOND_RULE = RULE.replace("cmd started by PowerShell at high integrity", "cmd started by PowerShell").replace(
    "5f0c7f6e-6f1e-4d6b-9a49-3d2a3c0e0101", "5f0c7f6e-6f1e-4d6b-9a49-3d2a3c0e0102").replace(
    "        IntegrityLevel: High\n", "")


def _wait(pred: Any, secs: float) -> bool:
    import time

    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


def test_the_reload_control_swaps_the_rules_while_the_service_runs(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    """PARAMCHANGE (what `edr reload` sends on Windows) reloads the rules as SIGHUP does on Linux."""
    records = all_recorded()
    done = threading.Event()

    def feed() -> Iterator[tuple[int, dict[str, Any]]]:
        yield from records
        done.wait(120)  # the session stays open until the test has reloaded

    lab = Lab(monkeypatch, tmp_path, feed=feed)
    lab.scm.host(SERVICE_NAME)
    try:
        assert _wait(lambda: "edr started" in lab.oplog(), 120), lab.oplog()[-2000:]
        (tmp_path / "rules" / "second.yml").write_text(textwrap.dedent(SECOND_RULE))
        control = threading.Thread(target=lab.scm.control, args=(SERVICE_NAME, w.SERVICE_CONTROL_PARAMCHANGE))
        control.start()
        control.join(10)
        assert not control.is_alive(), "the control handler blocked"
        assert _wait(lambda: "rule set #2 in force (was #1)" in lab.oplog(), 60), lab.oplog()[-3000:]
        swapped = next(line for line in lab.oplog().splitlines() if "rule set #2 in force" in line)
        assert "sigma rules 1 -> 2" in swapped, swapped
        assert (w.EVENTLOG_INFORMATION_TYPE, "edr: rule reload requested (reloading)") in lab.scm.application_log
    finally:
        lab.stop_from_the_manager()
        done.set()
    assert lab.scm.wait_stopped(SERVICE_NAME, 120)
    lab.service.thread.join(10)
    assert lab.service.status[3:5] == (0, 0)


def test_an_agent_that_fails_by_itself_stops_the_service_with_an_error(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    # enabling a provider is refused (as EnableTraceEx2 can be): the source fails, the graph stops, exit 1
    lab = Lab(monkeypatch, tmp_path, fail_provider="Microsoft-Windows-Kernel-Registry")
    lab.scm.host(SERVICE_NAME)
    assert lab.scm.wait_stopped(SERVICE_NAME, 120)
    lab.service.thread.join(10)

    # ERROR_SERVICE_SPECIFIC_ERROR: a failure, so the recovery actions restart the service
    assert lab.service.status[1] == w.SERVICE_STOPPED and lab.service.status[3] == w.ERROR_SERVICE_SPECIFIC_ERROR
    errors = [text for kind, text in lab.scm.application_log if kind == w.EVENTLOG_ERROR_TYPE]
    assert errors[0] == ("edr: ended without a stop request, exit code 1: an actor failed or alerts were not "
                         "written (see edr's log); the service's recovery actions restart it")
    assert errors[1].startswith("The instance's SvcRun() method failed: ServiceFailed(")
    assert lab.sessions.running == {}  # the session that was started is stopped all the same


def test_a_bad_configuration_is_a_fatal_start_error_in_the_application_log(monkeypatch: pytest.MonkeyPatch,
                                                                           tmp_path: Path) -> None:
    lab = Lab(monkeypatch, tmp_path)
    lab.config.write_text(lab.config.read_text() + "[nonsense]\nkey = 1\n")
    lab.scm.host(SERVICE_NAME)
    assert lab.scm.wait_stopped(SERVICE_NAME, 60)
    lab.service.thread.join(10)

    assert lab.service.status[3] == w.ERROR_SERVICE_SPECIFIC_ERROR
    kind, text = lab.scm.application_log[1]
    assert kind == w.EVENTLOG_ERROR_TYPE and text.startswith("edr: cannot start: ")
    assert str(lab.config) in text and "nonsense" in text  # the file and the key, as `edr run` says them
    assert lab.sessions.log == []


def test_the_service_class_reads_its_configuration_option(tmp_path: Path) -> None:
    scm = ServiceControlManager()
    su, ws, sm, _ = scm.modules()
    cls = make_service_class(su, ws, sm)
    su.InstallService("x.Y", SERVICE_NAME, "edr")
    instance = cls([SERVICE_NAME])
    assert instance.config_path.endswith("\\edr\\config.toml")  # the installed layout's, without the option
    su.SetServiceCustomOption(SERVICE_NAME, CONFIG_OPTION, "D:\\edr\\agent.toml")
    assert cls([SERVICE_NAME]).config_path == "D:\\edr\\agent.toml"
    # stop and shutdown are accepted, and only once running (pywin32 accepts nothing while START_PENDING)
    assert instance.GetAcceptedControls() == (w.SERVICE_ACCEPT_STOP | w.SERVICE_ACCEPT_SHUTDOWN
                                            | w.SERVICE_ACCEPT_PARAMCHANGE)


def test_the_service_module_builds_its_class_from_pywin32_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    scm = ServiceControlManager()
    su, ws, sm, _ = scm.modules()
    for name, module in (("win32serviceutil", su), ("win32service", ws), ("servicemanager", sm)):
        monkeypatch.setitem(sys.modules, name, module)
    module = importlib.import_module("edr.service.windows_service")
    monkeypatch.delitem(module.__dict__, "EdrService", raising=False)
    cls = module.EdrService  # what pythonservice.exe does with PythonClass
    assert issubclass(cls, su.ServiceFramework) and cls._svc_name_ == "edr"
    assert module.EdrService is cls
    with pytest.raises(AttributeError):
        _ = module.NoSuchThing
