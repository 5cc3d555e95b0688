"""Test support: stand-ins for pywin32's service modules over a simulated service control manager.

Written from pywin32's documentation and sources (``win32/Lib/win32serviceutil.py``,
``win32/src/win32service.i``, ``win32/src/PythonService.cpp``) and the
Win32 service API, for what edr calls:

- ``win32serviceutil``: ``ServiceFramework`` (the constructor registers the
  control handler through ``servicemanager.RegisterServiceCtrlHandler``;
  ``ReportServiceStatus`` accepts no control while ``START_PENDING``;
  ``SvcRun`` reports ``RUNNING``, calls ``SvcDoRun``, then reports
  ``STOP_PENDING``; the control handler dispatches STOP to ``SvcStop`` and
  SHUTDOWN to ``SvcShutdown``), ``InstallService``, ``ChangeServiceConfig``,
  ``RemoveService``, ``StartService``, ``StopService``,
  ``QueryServiceStatus`` (the 7-tuple), ``Set/GetServiceCustomOption``,
  ``LocatePythonServiceExe``;
- ``win32service``: the constants with their Windows values,
  ``OpenSCManager``/``OpenService``/``CloseServiceHandle``,
  ``ChangeServiceConfig2``/``QueryServiceConfig2`` for the delayed start and
  failure actions, ``QueryServiceConfig`` (the 9-tuple), ``SetServiceStatus``;
- ``servicemanager``: ``LogMsg``/``LogErrorMsg``/``LogInfoMsg`` (recorded
  as the Application log would hold them), ``RegisterServiceCtrlHandler``,
  ``SetEventSourceName``, the ``PYS_*`` message ids and ``EVENTLOG_*`` types;
- errors as ``pywintypes.error(winerror, funcname, strerror)``.

:class:`ServiceControlManager` holds the services. :meth:`~ServiceControlManager.host`
does what pythonservice.exe's ``service_main`` does when the manager starts
the service: instantiate the class, report START_PENDING, call ``SvcRun``
on a thread of its own, and report STOPPED afterwards, with
``ERROR_SERVICE_SPECIFIC_ERROR`` if ``SvcRun`` raised. :meth:`~ServiceControlManager.control`
calls the registered handler from the calling thread, as the manager's
dispatcher thread does.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable
from typing import Any

# winerror.h / winsvc.h values
ERROR_ACCESS_DENIED = 5
ERROR_SERVICE_ALREADY_RUNNING = 1056
ERROR_SERVICE_DOES_NOT_EXIST = 1060
ERROR_SERVICE_NOT_ACTIVE = 1062
ERROR_SERVICE_SPECIFIC_ERROR = 1066
ERROR_SERVICE_EXISTS = 1073
ERROR_SERVICE_CANNOT_ACCEPT_CTRL = 1061

SERVICE_WIN32_OWN_PROCESS = 0x10
SERVICE_AUTO_START, SERVICE_DEMAND_START, SERVICE_DISABLED = 2, 3, 4
SERVICE_STOPPED, SERVICE_START_PENDING, SERVICE_STOP_PENDING, SERVICE_RUNNING = 1, 2, 3, 4
SERVICE_CONTINUE_PENDING, SERVICE_PAUSE_PENDING, SERVICE_PAUSED = 5, 6, 7
SERVICE_CONTROL_STOP, SERVICE_CONTROL_PAUSE, SERVICE_CONTROL_CONTINUE = 1, 2, 3
SERVICE_CONTROL_INTERROGATE, SERVICE_CONTROL_SHUTDOWN, SERVICE_CONTROL_PARAMCHANGE = 4, 5, 6
SERVICE_ACCEPT_STOP, SERVICE_ACCEPT_PAUSE_CONTINUE, SERVICE_ACCEPT_SHUTDOWN = 1, 2, 4
SERVICE_ACCEPT_PARAMCHANGE = 8
SERVICE_CONFIG_DESCRIPTION, SERVICE_CONFIG_FAILURE_ACTIONS = 1, 2
SERVICE_CONFIG_DELAYED_AUTO_START_INFO, SERVICE_CONFIG_FAILURE_ACTIONS_FLAG = 3, 4
SC_ACTION_NONE, SC_ACTION_RESTART, SC_ACTION_REBOOT, SC_ACTION_RUN_COMMAND = 0, 1, 2, 3
SC_MANAGER_CONNECT, SC_MANAGER_ALL_ACCESS = 0x0001, 0xF003F
SERVICE_QUERY_CONFIG, SERVICE_CHANGE_CONFIG, SERVICE_QUERY_STATUS, SERVICE_ALL_ACCESS = 0x1, 0x2, 0x4, 0xF01FF
EVENTLOG_ERROR_TYPE, EVENTLOG_WARNING_TYPE, EVENTLOG_INFORMATION_TYPE = 1, 2, 4
PYS_SERVICE_STARTING, PYS_SERVICE_STARTED, PYS_SERVICE_STOPPING, PYS_SERVICE_STOPPED = 0x1000, 0x1002, 0x1003, 0x1004
PYS_E_GENERIC_ERROR = 0xFF
# PythonServiceMessages.mc: "%1" is the service name, "%2" the text LogMsg's caller appends
_MESSAGES = {PYS_SERVICE_STARTING: "The {} service is starting{}.",
             PYS_SERVICE_STARTED: "The {} service has started{}.",
             PYS_SERVICE_STOPPING: "The {} service is stopping{}.",
             PYS_SERVICE_STOPPED: "The {} service has stopped{}."}


class error(Exception):
    """pywintypes.error: ``(winerror, funcname, strerror)``."""

    def __init__(self, winerror: int, funcname: str, strerror: str) -> None:
        super().__init__(winerror, funcname, strerror)
        self.winerror = winerror
        self.funcname = funcname
        self.strerror = strerror


class Service:
    """One registered service, as the manager (and its registry key) holds it."""

    def __init__(self, name: str, display: str, start_type: int, command: str) -> None:
        self.name = name
        self.display = display
        self.start_type = start_type
        self.command = command
        self.python_class = ""
        self.description: str | None = None
        self.delayed = False
        self.failure_actions: dict[str, Any] = {"ResetPeriod": 0, "RebootMsg": "", "Command": "", "Actions": ()}
        self.failure_flag = False
        self.options: dict[str, Any] = {}
        # SERVICE_STATUS: (type, state, accepted, win32 exit code, service exit code, checkpoint, wait hint)
        self.status: tuple[int, ...] = (SERVICE_WIN32_OWN_PROCESS, SERVICE_STOPPED, 0, 0, 0, 0, 0)
        self.statuses: list[tuple[int, ...]] = []
        self.handler: Callable[[int, int, Any], Any] | None = None
        self.thread: threading.Thread | None = None
        self.deleted = False


class ServiceControlManager:
    """The machine's services; ``calls`` records every call the stand-ins receive, in order.

    ``service_class`` is what pythonservice.exe would load from a service's
    ``PythonClass``: a test passes the class it built; ``start`` hosts it.
    ``on_status(service, status)`` is called on every SetServiceStatus
    (from the reporting thread), so a test can act at a precise moment.
    """

    def __init__(self, *, exe: str = "C:\\Python312\\pythonservice.exe") -> None:
        self.services: dict[str, Service] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.application_log: list[tuple[int, str]] = []
        self.exe = exe
        self.lock = threading.RLock()
        self.service_class: type | None = None
        self.on_status: Callable[[Service, tuple[int, ...]], None] | None = None
        self.denied: set[str] = set()  # function names that fail with ERROR_ACCESS_DENIED
        self.stopped = threading.Condition(self.lock)

    # -- what the manager itself does -------------------------------------------------------------------

    def _get(self, name: str, func: str) -> Service:
        if func in self.denied:
            raise error(ERROR_ACCESS_DENIED, func, "Access is denied.")
        service = self.services.get(name)
        if service is None or service.deleted:
            raise error(ERROR_SERVICE_DOES_NOT_EXIST, func, "The specified service does not exist as an installed "
                        "service.")
        return service

    def set_status(self, service: Service, status: tuple[int, ...]) -> None:
        with self.lock:
            service.status = tuple(status)
            service.statuses.append(tuple(status))
            if status[1] == SERVICE_STOPPED:
                self.stopped.notify_all()
        if self.on_status is not None:
            self.on_status(service, tuple(status))

    def host(self, name: str) -> threading.Thread:
        """What pythonservice.exe's service_main does for a start: the service runs on a thread of its own."""
        service = self._get(name, "StartService")
        cls = self.service_class
        assert cls is not None, "no service class loaded"

        def service_main() -> None:
            instance = cls([name])
            self.set_status(service, (SERVICE_WIN32_OWN_PROCESS, SERVICE_START_PENDING, 0, 0, 0, 0, 0))
            try:
                instance.SvcRun()
            except Exception as exc:
                self.application_log.append((EVENTLOG_ERROR_TYPE, f"The instance's SvcRun() method failed: {exc!r}"))
                self.set_status(service, (SERVICE_WIN32_OWN_PROCESS, SERVICE_STOPPED, 0,
                                          ERROR_SERVICE_SPECIFIC_ERROR, 0x20000001, 0, 0))
            else:
                self.set_status(service, (SERVICE_WIN32_OWN_PROCESS, SERVICE_STOPPED, 0, 0, 0, 0, 0))

        thread = threading.Thread(target=service_main, name=f"service-main-{name}", daemon=True)
        service.thread = thread
        thread.start()
        return thread

    def control(self, name: str, code: int) -> Any:
        """ControlService from the calling thread: the registered handler runs here."""
        with self.lock:
            service = self._get(name, "ControlService")
            state, accepted = service.status[1], service.status[2]
            handler = service.handler
        if state == SERVICE_STOPPED:
            raise error(ERROR_SERVICE_NOT_ACTIVE, "ControlService", "The service has not been started.")
        wanted = {SERVICE_CONTROL_STOP: SERVICE_ACCEPT_STOP, SERVICE_CONTROL_SHUTDOWN: SERVICE_ACCEPT_SHUTDOWN,
                  SERVICE_CONTROL_PARAMCHANGE: SERVICE_ACCEPT_PARAMCHANGE}
        if code in wanted and not accepted & wanted[code]:
            raise error(ERROR_SERVICE_CANNOT_ACCEPT_CTRL, "ControlService",
                        "The service cannot accept control messages at this time.")
        assert handler is not None
        return handler(code, 0, None)

    def wait_stopped(self, name: str, timeout: float) -> bool:
        with self.stopped:
            return self.stopped.wait_for(lambda: self.services[name].status[1] == SERVICE_STOPPED, timeout)

    def log_lines(self) -> list[str]:
        return [text for _, text in self.application_log]

    # -- the modules --------------------------------------------------------------------------------------

    def modules(self) -> tuple[types.ModuleType, types.ModuleType, types.ModuleType, types.ModuleType]:
        """``(win32serviceutil, win32service, servicemanager, pywintypes)`` over this manager."""
        scm = self
        pywintypes = types.ModuleType("pywintypes")
        pywintypes.error = error  # type: ignore[attr-defined]

        ws = types.ModuleType("win32service")
        for key, value in globals().items():
            if key.startswith(("SERVICE_", "SC_")):
                setattr(ws, key, value)
        ws.error = error  # type: ignore[attr-defined]

        class Handle:
            def __init__(self, kind: str, name: str | None, access: int) -> None:
                self.kind, self.name, self.access, self.closed = kind, name, access, False

        def OpenSCManager(machine: str | None, database: str | None, access: int) -> Handle:
            scm.calls.append(("OpenSCManager", access))
            if "OpenSCManager" in scm.denied:
                raise error(ERROR_ACCESS_DENIED, "OpenSCManager", "Access is denied.")
            return Handle("scm", None, access)

        def OpenService(hscm: Handle, name: str, access: int) -> Handle:
            scm.calls.append(("OpenService", name, access))
            scm._get(name, "OpenService")
            return Handle("service", name, access)

        def CloseServiceHandle(handle: Handle) -> None:
            assert not handle.closed, "handle closed twice"
            handle.closed = True
            scm.calls.append(("CloseServiceHandle", handle.kind))

        def ChangeServiceConfig2(handle: Handle, level: int, info: Any) -> None:
            scm.calls.append(("ChangeServiceConfig2", handle.name, level, info))
            assert handle.access & SERVICE_CHANGE_CONFIG, "ChangeServiceConfig2 needs SERVICE_CHANGE_CONFIG"
            service = scm._get(handle.name or "", "ChangeServiceConfig2")
            if level == SERVICE_CONFIG_DESCRIPTION:
                service.description = info
            elif level == SERVICE_CONFIG_DELAYED_AUTO_START_INFO:
                service.delayed = bool(info)
            elif level == SERVICE_CONFIG_FAILURE_ACTIONS:
                # pywin32 parses the dictionary strictly (PyArg_ParseTupleAndKeywords over its four keys)
                assert set(info) == {"ResetPeriod", "RebootMsg", "Command", "Actions"}, info
                actions = tuple((int(t), int(d)) for t, d in info["Actions"])
                service.failure_actions = {**info, "Actions": actions}
            elif level == SERVICE_CONFIG_FAILURE_ACTIONS_FLAG:
                service.failure_flag = bool(info)
            else:
                raise NotImplementedError(level)

        def QueryServiceConfig2(handle: Handle, level: int) -> Any:
            service = scm._get(handle.name or "", "QueryServiceConfig2")
            return {SERVICE_CONFIG_DESCRIPTION: service.description,
                    SERVICE_CONFIG_DELAYED_AUTO_START_INFO: service.delayed,
                    SERVICE_CONFIG_FAILURE_ACTIONS: dict(service.failure_actions),
                    SERVICE_CONFIG_FAILURE_ACTIONS_FLAG: service.failure_flag}[level]

        def QueryServiceConfig(handle: Handle) -> tuple[Any, ...]:
            service = scm._get(handle.name or "", "QueryServiceConfig")
            return (SERVICE_WIN32_OWN_PROCESS, service.start_type, 1, service.command, "", 0, [], "LocalSystem",
                    service.display)

        def SetServiceStatus(handle: Service, status: tuple[int, ...]) -> None:
            assert len(status) == 7
            scm.set_status(handle, status)

        for f in (OpenSCManager, OpenService, CloseServiceHandle, ChangeServiceConfig2, QueryServiceConfig2,
                  QueryServiceConfig, SetServiceStatus):
            setattr(ws, f.__name__, f)

        sm = types.ModuleType("servicemanager")
        for key, value in globals().items():
            if key.startswith(("PYS_", "EVENTLOG_")):
                setattr(sm, key, value)

        def LogMsg(kind: int, msg_id: int, inserts: tuple[str, ...] = ()) -> None:
            scm.application_log.append((kind, _MESSAGES[msg_id].format(*inserts)))

        def LogErrorMsg(text: str) -> None:
            scm.application_log.append((EVENTLOG_ERROR_TYPE, text))

        def LogInfoMsg(text: str) -> None:
            scm.application_log.append((EVENTLOG_INFORMATION_TYPE, text))

        def RegisterServiceCtrlHandler(name: str, handler: Callable[[int, int, Any], Any], ex: bool = False) -> Service:
            service = scm._get(name, "RegisterServiceCtrlHandler")
            service.handler = handler
            return service  # the status handle: SetServiceStatus gets it back

        def SetEventSourceName(name: str) -> None:
            scm.calls.append(("SetEventSourceName", name))

        for f in (LogMsg, LogErrorMsg, LogInfoMsg, RegisterServiceCtrlHandler, SetEventSourceName):
            setattr(sm, f.__name__, f)

        su = types.ModuleType("win32serviceutil")
        su.error = RuntimeError  # type: ignore[attr-defined]

        class ServiceFramework:
            _svc_deps_: Any = None
            _exe_name_: Any = None
            _exe_args_: Any = None
            _svc_description_: Any = None

            def __init__(self, args: list[str]) -> None:
                self.ssh = sm.RegisterServiceCtrlHandler(args[0], self.ServiceCtrlHandlerEx, True)
                sm.SetEventSourceName(self._svc_name_)  # type: ignore[attr-defined]
                self.checkPoint = 0

            def GetAcceptedControls(self) -> int:
                accepted = 0
                if hasattr(self, "SvcStop"):
                    accepted |= SERVICE_ACCEPT_STOP
                if hasattr(self, "SvcShutdown"):
                    accepted |= SERVICE_ACCEPT_SHUTDOWN
                return accepted

            def ReportServiceStatus(self, serviceStatus: int, waitHint: int = 5000, win32ExitCode: int = 0,
                                    svcExitCode: int = 0) -> None:
                accepted = 0 if serviceStatus == SERVICE_START_PENDING else self.GetAcceptedControls()
                if serviceStatus in (SERVICE_RUNNING, SERVICE_STOPPED):
                    check = 0
                else:
                    self.checkPoint += 1
                    check = self.checkPoint
                ws.SetServiceStatus(self.ssh, (SERVICE_WIN32_OWN_PROCESS, serviceStatus, accepted, win32ExitCode,
                                               svcExitCode, check, waitHint))

            def ServiceCtrlHandlerEx(self, control: int, event_type: int, data: Any) -> Any:
                if control == SERVICE_CONTROL_STOP:
                    return self.SvcStop()  # type: ignore[attr-defined]
                if control == SERVICE_CONTROL_SHUTDOWN:
                    return self.SvcShutdown()  # type: ignore[attr-defined]
                if control == SERVICE_CONTROL_INTERROGATE:
                    return self.ReportServiceStatus(SERVICE_RUNNING)
                return self.SvcOtherEx(control, event_type, data)

            def SvcOtherEx(self, control: int, event_type: int, data: Any) -> Any:
                return self.SvcOther(control)

            def SvcOther(self, control: int) -> Any:
                return None

            def SvcRun(self) -> None:
                self.ReportServiceStatus(SERVICE_RUNNING)
                self.SvcDoRun()  # type: ignore[attr-defined]
                self.ReportServiceStatus(SERVICE_STOP_PENDING)

        su.ServiceFramework = ServiceFramework  # type: ignore[attr-defined]

        def InstallService(pythonClassString: str, serviceName: str, displayName: str, startType: int | None = None,
                           errorControl: int | None = None, bRunInteractive: int = 0, serviceDeps: Any = None,
                           userName: str | None = None, password: str | None = None, exeName: str | None = None,
                           perfMonIni: Any = None, perfMonDll: Any = None, exeArgs: str | None = None,
                           description: str | None = None, delayedstart: bool | None = None) -> None:
            scm.calls.append(("InstallService", pythonClassString, serviceName, startType, exeName, delayedstart))
            if "InstallService" in scm.denied:
                raise error(ERROR_ACCESS_DENIED, "OpenSCManager", "Access is denied.")
            with scm.lock:
                old = scm.services.get(serviceName)
                if old is not None and not old.deleted:
                    raise error(ERROR_SERVICE_EXISTS, "CreateService", "The specified service already exists.")
                service = Service(serviceName, displayName,
                                  SERVICE_DEMAND_START if startType is None else startType,
                                  f'"{exeName or scm.exe}"')
                service.python_class = pythonClassString
                service.description = description
                if delayedstart is not None:
                    service.delayed = bool(delayedstart)
                scm.services[serviceName] = service

        def ChangeServiceConfig(pythonClassString: str, serviceName: str, startType: int | None = None,
                                errorControl: int | None = None, bRunInteractive: int = 0, serviceDeps: Any = None,
                                userName: str | None = None, password: str | None = None, exeName: str | None = None,
                                displayName: str | None = None, perfMonIni: Any = None, perfMonDll: Any = None,
                                exeArgs: str | None = None, description: str | None = None,
                                delayedstart: bool | None = None) -> None:
            scm.calls.append(("ChangeServiceConfig", pythonClassString, serviceName, startType, exeName,
                              delayedstart))
            service = scm._get(serviceName, "ChangeServiceConfig")
            if startType is not None:
                service.start_type = startType
            if displayName is not None:
                service.display = displayName
            service.command = f'"{exeName or scm.exe}"'
            service.python_class = pythonClassString
            if description is not None:
                service.description = description
            if delayedstart is not None:
                service.delayed = bool(delayedstart)

        def RemoveService(serviceName: str) -> None:
            scm.calls.append(("RemoveService", serviceName))
            service = scm._get(serviceName, "OpenService")
            service.deleted = True

        def StartService(serviceName: str, args: Any = None, machine: str | None = None) -> None:
            scm.calls.append(("StartService", serviceName))
            service = scm._get(serviceName, "OpenService")
            if service.status[1] != SERVICE_STOPPED:
                raise error(ERROR_SERVICE_ALREADY_RUNNING, "StartService",
                            "An instance of the service is already running.")
            if service.start_type == SERVICE_DISABLED:
                raise error(1058, "StartService", "The service cannot be started, because it is disabled.")
            scm.host(serviceName)

        def StopService(serviceName: str, machine: str | None = None) -> tuple[int, ...]:
            scm.calls.append(("StopService", serviceName))
            scm.control(serviceName, SERVICE_CONTROL_STOP)
            return scm._get(serviceName, "ControlService").status

        def ControlService(serviceName: str, code: int, machine: str | None = None) -> tuple[int, ...]:
            scm.calls.append(("ControlService", serviceName, code))
            scm.control(serviceName, code)
            return scm._get(serviceName, "ControlService").status

        def QueryServiceStatus(serviceName: str, machine: str | None = None) -> tuple[int, ...]:
            return scm._get(serviceName, "OpenService").status

        def SetServiceCustomOption(serviceName: str, option: str, value: Any) -> None:
            scm.calls.append(("SetServiceCustomOption", serviceName, option, value))
            scm._get(serviceName, "RegCreateKey").options[option] = value

        def GetServiceCustomOption(serviceName: str, option: str, defaultValue: Any = None) -> Any:
            service = scm.services.get(serviceName)
            if service is None:
                return defaultValue
            return service.options.get(option, defaultValue)

        def LocatePythonServiceExe(exe: str | None = None) -> str:
            return exe or scm.exe

        for f in (InstallService, ChangeServiceConfig, RemoveService, StartService, StopService, ControlService,
                  QueryServiceStatus, SetServiceCustomOption, GetServiceCustomOption, LocatePythonServiceExe):
            setattr(su, f.__name__, f)
        return su, ws, sm, pywintypes
