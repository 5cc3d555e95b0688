"""The agent as a Windows service: pywin32's ``win32serviceutil.ServiceFramework``.

``edr service install`` (:mod:`edr.service.windows_manager`) registers
:data:`CLASS_STRING` with the service control manager; pywin32's service
host (``pythonservice.exe``) imports this module and instantiates
``EdrService`` when the service starts. That class is made on first use
(:func:`make_service_class`, through the module's ``__getattr__``) from
the pywin32 modules, so this module imports anywhere and tests build the
class over stand-ins for them.

The life of one start, and why it is shaped so:

- ``SvcRun`` (pywin32's) reports ``SERVICE_RUNNING`` at once, then calls
  ``SvcDoRun``. The configuration, the rules and the sensor load after
  that, and may take seconds: reported ``SERVICE_START_PENDING`` instead,
  the service would accept no control (the manager refuses a stop to a
  starting service), so an operator could not stop it while it loads.
- ``SvcDoRun`` runs :func:`edr.agent.run_live` exactly as ``edr run`` does,
  with a :class:`~edr.service.windows_stop.ServiceStop` in place of the
  signals; start, stop and fatal errors go to the Application event log
  (``servicemanager.LogMsg``/``LogErrorMsg``), the details to edr's own log.
- ``SvcStop`` and ``SvcShutdown`` (the manager's thread) report
  ``SERVICE_STOP_PENDING`` with the stop timeout as the wait hint and hand
  the stop over: before the graph runs it is not started; once it runs,
  the supervisor's ``stop`` drains the pipeline, as SIGTERM does on Linux.
- How the run ended decides the service's end (:func:`judge`): a stop that
  was asked for ends cleanly (exit 0 to the manager, even when the stop
  could not write everything: that is logged as an error, and restarting a
  service the operator stopped would be wrong); an end nobody asked for is
  a failure: ``SvcDoRun`` raises :class:`ServiceFailed`, pywin32 reports the
  stop with ``ERROR_SERVICE_SPECIFIC_ERROR``, and the recovery actions that
  ``install`` set (restart) start the agent again.
"""

from __future__ import annotations

import logging
import traceback
import types
from typing import Any, Final

import attrs

from edr.service.windows_stop import PENDING, ServiceStop

log = logging.getLogger("edr")

SERVICE_NAME: Final = "edr"
DISPLAY_NAME: Final = "edr endpoint detection and response"
DESCRIPTION: Final = ("Endpoint detection and response agent: ETW and Event Log telemetry, Sigma, YARA and IOC "
                      "detection, ECS alerts, active response.")
#: What pywin32's service host imports (``PythonClass`` under the service's registry key).
CLASS_STRING: Final = "edr.service.windows_service.EdrService"
#: The service's custom option (``Parameters`` key) that names its configuration file.
CONFIG_OPTION: Final = "config"
#: Wait hint (ms) of the stop when the configuration sets no stop timeout: long enough for a drain.
DEFAULT_STOP_WAIT_MS: Final = 30_000


class ServiceFailed(Exception):
    """The agent ended without being asked to; raised from ``SvcDoRun`` so the manager sees a failure."""


@attrs.frozen
class Outcome:
    """How a run of the agent ends the service: the Application log line, and whether it failed."""

    message: str
    error: bool
    failed: bool


#: Why ``edr run`` exits with each code (see edr.cli), as the Application log says it.
_REASONS: Final = {
    0: "the pipeline ended by itself",
    1: "an actor failed or alerts were not written (see edr's log)",
    2: "another agent runs on this configuration, or its state directory is unusable (see edr's log)",
    3: "the live sensor cannot start here (see edr's log)",
}


def judge(code: int, stop_requested: bool) -> Outcome:
    """How a run that returned ``code`` ends the service (pure: see the module's notes)."""
    if stop_requested:
        if code == 0:
            return Outcome("stopped: the pipeline drained and every alert was written", error=False, failed=False)
        return Outcome(f"stopped, with exit code {code}: {_REASONS.get(code, 'see edr log')}",
                       error=True, failed=False)
    return Outcome(f"ended without a stop request, exit code {code}: {_REASONS.get(code, 'see edr log')}; "
                   "the service's recovery actions restart it", error=True, failed=True)


def run_agent(config_path: str, stop: ServiceStop) -> int:
    """``edr run --config config_path --no-console``, with stops from ``stop``; the exit code.

    Raises :class:`edr.config.ConfigError` (a bad or untrusted configuration)
    before anything runs.
    """
    from edr.agent import run_live
    from edr.config import load_config
    from edr.oplog import setup_logging
    from edr.rule_trust import check_config_file

    loaded = load_config(config_path)
    warning = check_config_file(loaded)
    lc = loaded.config.logging
    setup_logging(lc.level, lc.directory, lc.filename, False)  # a service has no console
    if warning:
        log.warning("%s", warning)
    return run_live(loaded, service_stop=stop)


def stop_wait_hint_ms(config_path: str) -> int:
    """The stop's wait hint for the manager: the configured stop timeout plus a second, in ms."""
    from edr.config import ConfigError, load_config

    try:
        secs = load_config(config_path).config.agent.stop_timeout_secs
    except (ConfigError, OSError):
        return DEFAULT_STOP_WAIT_MS
    return int((secs + 1.0) * 1000)


def make_service_class(win32serviceutil: types.ModuleType, win32service: types.ModuleType,
                       servicemanager: types.ModuleType) -> type:
    """The ``EdrService`` class over these pywin32 modules (the real ones, or a test's stand-ins)."""

    class EdrService(win32serviceutil.ServiceFramework):  # type: ignore[name-defined,misc]
        """edr as a Windows service (see :mod:`edr.service.windows_service`)."""

        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = DISPLAY_NAME
        _svc_description_ = DESCRIPTION

        def __init__(self, args: Any) -> None:
            super().__init__(args)
            self.stop_requests = ServiceStop(on_running=self._running)
            self.config_path: str = win32serviceutil.GetServiceCustomOption(self._svc_name_, CONFIG_OPTION,
                                                                           _installed_config())

        def _running(self) -> None:
            servicemanager.LogMsg(servicemanager.EVENTLOG_INFORMATION_TYPE, servicemanager.PYS_SERVICE_STARTED,
                                  (self._svc_name_, ": the pipeline runs"))

        def SvcStop(self) -> None:
            """The manager's stop (its thread): report STOP_PENDING, hand the stop to the agent."""
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING,
                                     waitHint=stop_wait_hint_ms(self.config_path))
            if self.stop_requests.request() != PENDING:
                return
            servicemanager.LogMsg(servicemanager.EVENTLOG_INFORMATION_TYPE, servicemanager.PYS_SERVICE_STOPPING,
                                  (self._svc_name_, ": stop requested while starting, the pipeline is not started"))

        def SvcShutdown(self) -> None:
            """Windows is shutting down: the same orderly stop (alerts flushed)."""
            self.SvcStop()

        def GetAcceptedControls(self) -> int:
            """Stop and shutdown (pywin32's, from the methods above) and PARAMCHANGE: the reload control."""
            accepted: int = super().GetAcceptedControls()
            return accepted | win32service.SERVICE_ACCEPT_PARAMCHANGE

        def SvcOther(self, control: int) -> None:
            """PARAMCHANGE (``edr reload``, ``sc control edr paramchange``): reload the rules, as SIGHUP does."""
            if control != win32service.SERVICE_CONTROL_PARAMCHANGE:
                return
            outcome = self.stop_requests.request_reload()
            servicemanager.LogInfoMsg(f"{self._svc_name_}: rule reload requested ({outcome})")

        def SvcDoRun(self) -> None:
            """Run the agent until it is stopped; raises ServiceFailed when it ends by itself."""
            from edr.config import ConfigError

            servicemanager.LogMsg(servicemanager.EVENTLOG_INFORMATION_TYPE, servicemanager.PYS_SERVICE_STARTING,
                                  (self._svc_name_, f" with the configuration {self.config_path}"))
            try:
                try:
                    code = run_agent(self.config_path, self.stop_requests)
                finally:
                    self.stop_requests.detach()  # a stop from now on finds the run over, whatever ended it
            except ConfigError as exc:
                servicemanager.LogErrorMsg(f"{self._svc_name_}: cannot start: {exc}")
                raise ServiceFailed(f"cannot start: {exc}") from exc
            except Exception as exc:
                servicemanager.LogErrorMsg(f"{self._svc_name_}: the agent failed:\n{traceback.format_exc()}")
                raise ServiceFailed(f"the agent failed: {exc!r}") from exc
            outcome = judge(code, self.stop_requests.requested)
            if outcome.error:
                servicemanager.LogErrorMsg(f"{self._svc_name_}: {outcome.message}")
            else:
                servicemanager.LogMsg(servicemanager.EVENTLOG_INFORMATION_TYPE, servicemanager.PYS_SERVICE_STOPPED,
                                      (self._svc_name_, f": {outcome.message}"))
            if outcome.failed:
                raise ServiceFailed(outcome.message)

    return EdrService


def _installed_config() -> str:
    from edr.config import installed_layout

    return installed_layout("windows").config_file


def __getattr__(name: str) -> Any:
    # pywin32's service host looks EdrService up by name: build it from the real modules then, once.
    if name == "EdrService":
        import servicemanager
        import win32service
        import win32serviceutil

        cls = make_service_class(win32serviceutil, win32service, servicemanager)
        globals()["EdrService"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
