"""The service verbs on Windows: the service control manager, through pywin32.

:class:`WindowsServiceManager` registers :data:`~edr.service.windows_service.CLASS_STRING`
with pywin32's service host (``pythonservice.exe``) as the ``edr``
service, and starts, stops, removes and asks about it with
``win32serviceutil`` and ``win32service``. The pywin32 modules are passed
in (:class:`Pywin32`; :func:`pywin32` imports the real ones), so tests run
every verb against a stand-in service control manager.

What ``install`` sets, and why:

- automatic start, delayed (``SERVICE_CONFIG_DELAYED_AUTO_START_INFO``):
  the agent starts at every boot without slowing the boot down;
- recovery actions (``SERVICE_CONFIG_FAILURE_ACTIONS``): restart after
  :data:`RESTART_DELAYS_MS`, the failure count reset after a day; and
  ``SERVICE_CONFIG_FAILURE_ACTIONS_FLAG`` so that they also apply when the
  agent ends by itself with an error (the service reports
  ``ERROR_SERVICE_SPECIFIC_ERROR``, see :mod:`edr.service.windows_service`),
  not only when the process crashes;
- the configuration file as the service's custom option
  :data:`~edr.service.windows_service.CONFIG_OPTION`, which the service
  reads when it starts.

With ``dry_run`` nothing is called: the report lists what would be.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable
from typing import Any, Final

import attrs

from edr.service.manager import ActionReport, ServiceError, ServiceManagerUnavailable, ServiceStatus
from edr.service.windows_service import (
    CLASS_STRING,
    CONFIG_OPTION,
    DESCRIPTION,
    DISPLAY_NAME,
    SERVICE_NAME,
    stop_wait_hint_ms,
)

#: Win32 error codes the verbs tell apart (winerror.h).
ERROR_ACCESS_DENIED: Final = 5
ERROR_SERVICE_ALREADY_RUNNING: Final = 1056
ERROR_SERVICE_DOES_NOT_EXIST: Final = 1060
ERROR_SERVICE_NOT_ACTIVE: Final = 1062
ERROR_SERVICE_MARKED_FOR_DELETE: Final = 1072
#: Recovery: restart after 5 s, then 30 s, then every minute; a day without failure resets the count.
RESTART_DELAYS_MS: Final = (5_000, 30_000, 60_000)
RESET_PERIOD_SECS: Final = 86_400
#: How long ``start`` waits for the service to report running (rules load first).
START_WAIT_SECS: Final = 120.0
_POLL_SECS: Final = 0.25


@attrs.frozen
class Pywin32:
    """The pywin32 modules the manager calls: ``win32serviceutil``, ``win32service`` and ``pywintypes``."""

    win32serviceutil: types.ModuleType
    win32service: types.ModuleType
    pywintypes: types.ModuleType


def pywin32() -> Pywin32:
    """The real pywin32 modules; raises ServiceManagerUnavailable when pywin32 is not installed."""
    try:
        import pywintypes
        import win32service
        import win32serviceutil
    except ImportError as exc:
        raise ServiceManagerUnavailable(f"pywin32 is not importable ({exc}): pip install pywin32, then run "
                                        "`python Scripts/pywin32_postinstall.py -install` as Administrator") from exc
    return Pywin32(win32serviceutil, win32service, pywintypes)


def python_service_exe() -> str:
    """pywin32's service host beside this Python (``pythonservice.exe``); raises ServiceError when absent."""
    m = pywin32()
    try:
        return str(m.win32serviceutil.LocatePythonServiceExe())
    except (m.pywintypes.error, OSError, RuntimeError) as exc:
        raise ServiceError(f"pywin32's pythonservice.exe was not found ({exc}): run "
                           "`python Scripts/pywin32_postinstall.py -install`, or name it with --executable") from exc


def failure_actions(win32service: types.ModuleType) -> dict[str, Any]:
    """The ``SERVICE_FAILURE_ACTIONS`` dictionary ``install`` sets (pywin32's shape)."""
    return {"ResetPeriod": RESET_PERIOD_SECS, "RebootMsg": "", "Command": "",
            "Actions": tuple((win32service.SC_ACTION_RESTART, delay) for delay in RESTART_DELAYS_MS)}


#: QueryServiceStatus's dwCurrentState -> (active, sub_state), in ServiceStatus's (systemd's) words.
def _states(ws: types.ModuleType) -> dict[int, tuple[str, str]]:
    return {
        ws.SERVICE_STOPPED: ("inactive", "stopped"),
        ws.SERVICE_START_PENDING: ("activating", "start pending"),
        ws.SERVICE_STOP_PENDING: ("deactivating", "stop pending"),
        ws.SERVICE_RUNNING: ("active", "running"),
        ws.SERVICE_CONTINUE_PENDING: ("activating", "continue pending"),
        ws.SERVICE_PAUSE_PENDING: ("deactivating", "pause pending"),
        ws.SERVICE_PAUSED: ("inactive", "paused"),
    }


class WindowsServiceManager:
    """``edr service`` on Windows (see the module docstring).

    ``config_path``: the configuration the service runs with; ``service_exe``:
    pywin32's service host (None: the one pywin32 finds beside this Python);
    ``modules``: pywin32 (None: the real modules, imported on first use);
    ``sleep`` waits between status polls (tests).
    """

    def __init__(self, config_path: str, *, service_exe: str | None = None, modules: Pywin32 | None = None,
                 dry_run: bool = False, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config_path = config_path
        self.service_exe = service_exe
        self.dry_run = dry_run
        self._modules = modules
        self._sleep = sleep

    @property
    def modules(self) -> Pywin32:
        """pywin32, imported on first use."""
        if self._modules is None:
            self._modules = pywin32()
        return self._modules

    # -- the verbs ---------------------------------------------------------------------------------------

    def install(self) -> ActionReport:
        """Register (or update) the service: delayed automatic start, restart on failure, its configuration."""
        steps = []
        if self.dry_run:
            return ActionReport("install", (
                f"run InstallService {SERVICE_NAME} ({CLASS_STRING}, automatic delayed start)",
                f"run SetServiceCustomOption {SERVICE_NAME} {CONFIG_OPTION}={self.config_path}",
                f"run ChangeServiceConfig2 {SERVICE_NAME} failure actions: {self._describe_recovery()}",
            ), dry_run=True)
        m = self.modules
        ws = m.win32service
        with self._errors("install"):
            if self._installed():
                m.win32serviceutil.ChangeServiceConfig(
                    CLASS_STRING, SERVICE_NAME, startType=ws.SERVICE_AUTO_START, exeName=self.service_exe,
                    displayName=DISPLAY_NAME, description=DESCRIPTION, delayedstart=True)
                steps.append(f"updated service {SERVICE_NAME} ({CLASS_STRING}, automatic delayed start)")
            else:
                m.win32serviceutil.InstallService(
                    CLASS_STRING, SERVICE_NAME, DISPLAY_NAME, startType=ws.SERVICE_AUTO_START,
                    exeName=self.service_exe, description=DESCRIPTION, delayedstart=True)
                steps.append(f"registered service {SERVICE_NAME} ({CLASS_STRING}, automatic delayed start)")
            m.win32serviceutil.SetServiceCustomOption(SERVICE_NAME, CONFIG_OPTION, self.config_path)
            steps.append(f"set its configuration to {self.config_path}")
            with self._service(ws.SERVICE_CHANGE_CONFIG) as handle:
                ws.ChangeServiceConfig2(handle, ws.SERVICE_CONFIG_FAILURE_ACTIONS, failure_actions(ws))
                ws.ChangeServiceConfig2(handle, ws.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, True)
            steps.append(f"set its recovery: {self._describe_recovery()}")
        return ActionReport("install", tuple(steps))

    def uninstall(self) -> ActionReport:
        """Stop the service if it runs, then delete it; nothing to do when it is not installed."""
        if self.dry_run:
            return ActionReport("uninstall", (f"run StopService {SERVICE_NAME}", f"run RemoveService {SERVICE_NAME}"),
                                dry_run=True)
        if not self._installed():
            return ActionReport("uninstall", (f"service {SERVICE_NAME} is not installed: nothing to do",))
        steps = list(self.stop().steps)
        with self._errors("uninstall"):
            self.modules.win32serviceutil.RemoveService(SERVICE_NAME)
        steps.append(f"removed service {SERVICE_NAME}")
        return ActionReport("uninstall", tuple(steps))

    def start(self) -> ActionReport:
        """Start the service and wait until it reports running."""
        if self.dry_run:
            return ActionReport("start", (f"run StartService {SERVICE_NAME}",), dry_run=True)
        m = self.modules
        with self._errors("start"):
            try:
                m.win32serviceutil.StartService(SERVICE_NAME)
            except m.pywintypes.error as exc:
                if exc.winerror != ERROR_SERVICE_ALREADY_RUNNING:
                    raise
                return ActionReport("start", (f"service {SERVICE_NAME} is already running",))
            self._wait_for(m.win32service.SERVICE_RUNNING, START_WAIT_SECS, "start")
        return ActionReport("start", (f"started service {SERVICE_NAME}",))

    def stop(self) -> ActionReport:
        """Ask the service to stop and wait until it has (the pipeline drains first)."""
        if self.dry_run:
            return ActionReport("stop", (f"run StopService {SERVICE_NAME}",), dry_run=True)
        m = self.modules
        with self._errors("stop"):
            try:
                m.win32serviceutil.StopService(SERVICE_NAME)
            except m.pywintypes.error as exc:
                if exc.winerror != ERROR_SERVICE_NOT_ACTIVE:
                    raise
                return ActionReport("stop", (f"service {SERVICE_NAME} is not running",))
            # the service's own wait hint is its stop timeout: wait that long, and a little more
            self._wait_for(m.win32service.SERVICE_STOPPED, stop_wait_hint_ms(self.config_path) / 1000 + 5.0, "stop")
        return ActionReport("stop", (f"stopped service {SERVICE_NAME}",))

    def reload(self) -> ActionReport:
        """Ask the running service to reload its rules (the PARAMCHANGE control; its log says the outcome)."""
        if self.dry_run:
            return ActionReport("reload", (f"run ControlService {SERVICE_NAME} PARAMCHANGE",), dry_run=True)
        m = self.modules
        with self._errors("reload"):
            m.win32serviceutil.ControlService(SERVICE_NAME, m.win32service.SERVICE_CONTROL_PARAMCHANGE)
        return ActionReport("reload", (f"reload requested from service {SERVICE_NAME}; its log says what was "
                                       "reloaded",))

    def restart(self) -> ActionReport:
        """Stop, then start the service."""
        stopped = self.stop()
        started = self.start()
        return ActionReport("restart", stopped.steps + started.steps, dry_run=self.dry_run)

    def status(self) -> ServiceStatus:
        """The service control manager's view: state, start type, and whether ``install`` would change it."""
        location = f"service {SERVICE_NAME} ({CLASS_STRING})"
        if self.dry_run:
            return ServiceStatus(name=SERVICE_NAME, location=location, installed=False,
                                 problem="dry run: the service control manager is not asked")
        m = self.modules
        ws = m.win32service
        with self._errors("status"):
            try:
                state = m.win32serviceutil.QueryServiceStatus(SERVICE_NAME)
            except m.pywintypes.error as exc:
                if exc.winerror != ERROR_SERVICE_DOES_NOT_EXIST:
                    raise
                return ServiceStatus(name=SERVICE_NAME, location=location, installed=False)
            with self._service(ws.SERVICE_QUERY_CONFIG) as handle:
                config = ws.QueryServiceConfig(handle)
                delayed = bool(ws.QueryServiceConfig2(handle, ws.SERVICE_CONFIG_DELAYED_AUTO_START_INFO))
                recovery = ws.QueryServiceConfig2(handle, ws.SERVICE_CONFIG_FAILURE_ACTIONS)
                recovery_flag = bool(ws.QueryServiceConfig2(handle, ws.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG))
            configured = m.win32serviceutil.GetServiceCustomOption(SERVICE_NAME, CONFIG_OPTION)
        start_type = config[1]
        enabled = {ws.SERVICE_AUTO_START: "enabled", ws.SERVICE_DEMAND_START: "manual",
                   ws.SERVICE_DISABLED: "disabled"}.get(start_type, f"start type {start_type}")
        wanted = failure_actions(ws)
        current = (start_type == ws.SERVICE_AUTO_START and delayed and recovery_flag and configured == self.config_path
                   and tuple(map(tuple, recovery.get("Actions") or ())) == wanted["Actions"]
                   and recovery.get("ResetPeriod") == wanted["ResetPeriod"])
        active, sub_state = _states(ws).get(state[1], ("unknown", f"state {state[1]}"))
        result = None
        if state[1] == ws.SERVICE_STOPPED and state[3]:
            result = f"exit code {state[3]}" + (f" (service-specific {state[4]})" if state[4] else "")
        return ServiceStatus(name=SERVICE_NAME, location=location, installed=True, current=current,
                             enabled=enabled, active=active, sub_state=sub_state, result=result)

    # -- helpers -----------------------------------------------------------------------------------------

    def _describe_recovery(self) -> str:
        delays = ", ".join(f"{ms // 1000} s" for ms in RESTART_DELAYS_MS)
        return f"restart after {delays}, also when the agent ends with an error; count reset after a day"

    def _installed(self) -> bool:
        m = self.modules
        try:
            m.win32serviceutil.QueryServiceStatus(SERVICE_NAME)
        except m.pywintypes.error as exc:
            if exc.winerror == ERROR_SERVICE_DOES_NOT_EXIST:
                return False
            raise self._error("query", exc) from exc
        return True

    def _wait_for(self, state: int, secs: float, verb: str) -> None:
        m = self.modules
        deadline = time.monotonic() + secs
        while True:
            status = m.win32serviceutil.QueryServiceStatus(SERVICE_NAME)
            if status[1] == state:
                return
            if status[1] == m.win32service.SERVICE_STOPPED:  # it stopped while we waited to see it run
                raise ServiceError(f"service {SERVICE_NAME} stopped while starting (exit code {status[3]}, "
                                   f"service-specific {status[4]}): see the Application event log and edr's log")
            if time.monotonic() >= deadline:
                raise ServiceError(f"service {SERVICE_NAME} did not {verb} within {secs:.0f} s "
                                   f"(state {_states(m.win32service).get(status[1], ('?', status[1]))[1]})")
            self._sleep(_POLL_SECS)

    def _service(self, access: int) -> _ServiceHandle:
        return _ServiceHandle(self.modules.win32service, access)

    def _errors(self, verb: str) -> _Errors:
        return _Errors(self, verb)

    def _error(self, verb: str, exc: Any) -> ServiceError:
        winerror = getattr(exc, "winerror", None)
        text = getattr(exc, "strerror", None) or str(exc)
        func = getattr(exc, "funcname", None)
        where = f"{func}: " if func else ""
        if winerror == ERROR_ACCESS_DENIED:
            return ServiceError(f"{where}{text}: run it from an elevated (Administrator) prompt")
        if winerror == ERROR_SERVICE_DOES_NOT_EXIST:
            return ServiceError(f"service {SERVICE_NAME} is not installed: run `edr service install`")
        if winerror == ERROR_SERVICE_MARKED_FOR_DELETE:
            return ServiceError(f"service {SERVICE_NAME} is marked for deletion: close the Services console "
                                "(or reboot), then try again")
        return ServiceError(f"{where}{text} (error {winerror})")


class _ServiceHandle:
    """``OpenSCManager`` + ``OpenService`` for the edr service, both closed on exit."""

    def __init__(self, ws: types.ModuleType, access: int) -> None:
        self._ws = ws
        self._access = access

    def __enter__(self) -> Any:
        self._scm = self._ws.OpenSCManager(None, None, self._ws.SC_MANAGER_CONNECT)
        try:
            self._handle = self._ws.OpenService(self._scm, SERVICE_NAME, self._access)
        except BaseException:
            self._ws.CloseServiceHandle(self._scm)
            raise
        return self._handle

    def __exit__(self, *exc: object) -> None:
        try:
            self._ws.CloseServiceHandle(self._handle)
        finally:
            self._ws.CloseServiceHandle(self._scm)


class _Errors:
    """pywintypes.error inside a verb becomes a ServiceError saying what to do."""

    def __init__(self, manager: WindowsServiceManager, verb: str) -> None:
        self._manager = manager
        self._verb = verb

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is not None and isinstance(exc, self._manager.modules.pywintypes.error):
            raise self._manager._error(self._verb, exc) from exc
