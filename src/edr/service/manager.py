"""``edr service install|uninstall|start|stop|restart|status``: the verbs every platform's service manager offers.

The CLI calls a :class:`ServiceManager` and prints what it returns: an
:class:`ActionReport` (what was done, or with ``dry_run`` what would be) or a
:class:`ServiceStatus`.  Failures raise :class:`ServiceError`, whose message
says what went wrong and what to do, and whose ``exit_code`` is the CLI's.
Linux has :class:`edr.service.systemd_manager.SystemdManager`, Windows
:class:`edr.service.windows_manager.WindowsServiceManager` (pywin32's
service control manager).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs

if TYPE_CHECKING:
    from edr.config import Config

#: Exit codes of ``edr service`` (as ``edr.cli``'s): done / failed / unusable here.
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_UNAVAILABLE: Final = 3
VERBS: Final = ("install", "uninstall", "start", "stop", "restart", "status")
#: Where an installation keeps its configuration and its ``edr`` (see edr.service.systemd_unit).
DEFAULT_CONFIG: Final = Path("/etc/edr/config.toml")
DEFAULT_EXECUTABLE: Final = Path("/usr/local/bin/edr")


class ServiceError(Exception):
    """A verb that could not be carried out; the message says why and what to do."""

    exit_code: int = EXIT_FAILED


class ServiceManagerUnavailable(ServiceError):
    """This host's service manager is not running (e.g. no systemd as PID 1)."""

    exit_code = EXIT_UNAVAILABLE


@attrs.frozen
class ActionReport:
    """What one verb did, step by step; with ``dry_run``, what it would have done."""

    action: str
    steps: tuple[str, ...]
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {"action": self.action, "dry_run": self.dry_run, "steps": list(self.steps)}

    def render(self) -> str:
        """For a terminal: one line per step; in a dry run the commands say they were not run (files under
        its root were written: those steps read as done)."""
        return "\n".join(f"would {step}" if self.dry_run and step.startswith("run ") else step
                         for step in self.steps)


@attrs.frozen
class ServiceStatus:
    """The service as the manager sees it.

    ``installed``: the unit (or service entry) exists; ``current``: it is the
    one this version of edr generates (None when not installed);
    ``enabled``/``active``/``sub_state``/``main_pid``/``result``: the manager's
    words, None when it cannot be asked (not running, or ``--root``).
    ``problem`` says why the manager could not be asked.
    """

    name: str
    location: str
    installed: bool
    current: bool | None = None
    enabled: str | None = None
    active: str | None = None
    sub_state: str | None = None
    main_pid: int | None = None
    result: str | None = None
    problem: str | None = None

    @property
    def running(self) -> bool:
        """Whether the agent is up (active, or reloading)."""
        return self.active in ("active", "reloading")

    @property
    def exit_code(self) -> int:
        """0 running, 1 not running (or not installed), 3 the manager cannot be asked here."""
        if self.problem is not None:
            return EXIT_UNAVAILABLE
        return EXIT_OK if self.running else EXIT_FAILED

    def to_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {**attrs.asdict(self), "running": self.running}

    def render(self) -> str:
        """For a terminal."""
        lines = [f"{self.name}: {'installed' if self.installed else 'not installed'} ({self.location})"]
        if self.installed and self.current is False:
            lines.append("  the installed unit differs from the one this edr generates: "
                         "`edr service install` rewrites it")
        if self.problem:
            lines.append(f"  {self.problem}")
        if self.active is not None:
            state = f"{self.active} ({self.sub_state})" if self.sub_state else self.active
            pid = f", pid {self.main_pid}" if self.main_pid else ""
            lines.append(f"  {state}{pid}; {self.enabled or 'unknown'} at boot")
            if self.result and self.result != "success":
                lines.append(f"  last result: {self.result}")
        return "\n".join(lines)


class ServiceManager(Protocol):
    """The service verbs of one platform.

    Each verb either completes and says what it did, or raises
    :class:`ServiceError` having changed nothing it could avoid changing.
    """

    def install(self) -> ActionReport:
        """Register the agent as a service started at boot (not started now)."""

    def uninstall(self) -> ActionReport:
        """Stop the service and remove its registration; nothing to do when not installed."""

    def start(self) -> ActionReport:
        """Start the installed service."""

    def stop(self) -> ActionReport:
        """Stop the service (an orderly stop: the pipeline drains, alerts are flushed)."""

    def restart(self) -> ActionReport:
        """Stop, then start the service."""

    def status(self) -> ServiceStatus:
        """What the service manager says about the service."""


def default_executable() -> Path:
    """The installed ``edr``: /usr/local/bin/edr, else the ``edr`` on PATH; raises ServiceError if neither.

    On Windows: pywin32's service host (``pythonservice.exe``) beside this Python, which runs
    :mod:`edr.service.windows_service`.
    """
    if sys.platform == "win32":
        from edr.service.windows_manager import python_service_exe

        return Path(python_service_exe())
    if DEFAULT_EXECUTABLE.exists():
        return DEFAULT_EXECUTABLE
    found = shutil.which("edr")
    if found:
        return Path(found).absolute()
    raise ServiceError(f"no edr executable at {DEFAULT_EXECUTABLE} or on PATH: name it with --executable")


def service_manager(config: Config, *, config_path: str | os.PathLike[str], executable: str | os.PathLike[str],
                    root: str | os.PathLike[str] | None = None) -> ServiceManager:
    """This platform's manager for an agent running ``executable`` with the configuration at ``config_path``.

    ``config`` is that configuration, loaded: the directories it writes stay
    writable to the service.  ``root`` makes every verb a dry run under it
    (on Windows: a dry run that calls nothing; ``executable`` is pywin32's
    service host there).
    """
    if sys.platform == "win32":
        from edr.service.windows_manager import WindowsServiceManager

        return WindowsServiceManager(os.path.abspath(config_path), service_exe=os.fspath(executable),
                                     dry_run=root is not None)
    from edr.service.systemd_manager import SystemdManager
    from edr.service.systemd_unit import UnitError, facts_from_config, kernel_lacks_bpf_capabilities

    try:
        facts = facts_from_config(config, config_path=Path(config_path).absolute(),
                                  executable=Path(executable).absolute(),
                                  legacy_kernel=kernel_lacks_bpf_capabilities(os.uname().release))
    except UnitError as exc:
        raise ServiceError(f"cannot generate the unit: {exc}") from exc
    return SystemdManager(facts, root=root)


def perform(manager: ServiceManager, verb: str, *, as_json: bool = False) -> tuple[str, int]:
    """Run ``verb`` (one of :data:`VERBS`); the text to print and the exit code.

    A :class:`ServiceError` becomes its message (``{"error": ...}`` with
    ``as_json``) and its exit code, so the CLI only prints.
    """
    if verb not in VERBS:
        raise ValueError(f"unknown service verb {verb!r} (one of {', '.join(VERBS)})")
    try:
        outcome: ActionReport | ServiceStatus = getattr(manager, verb)()
    except ServiceError as exc:
        text = json.dumps({"action": verb, "error": str(exc)}) if as_json else f"edr: service {verb}: {exc}"
        return text, exc.exit_code
    code = outcome.exit_code if isinstance(outcome, ServiceStatus) else EXIT_OK
    return (json.dumps(outcome.to_dict(), indent=2) if as_json else outcome.render()), code
