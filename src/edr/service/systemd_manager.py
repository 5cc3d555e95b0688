"""The service verbs on Linux: the generated unit, managed through ``systemctl``.

:class:`SystemdManager` writes ``edr.service`` (see
:mod:`edr.service.systemd_unit`) under ``/etc/systemd/system`` and runs
``systemctl`` through an injectable :data:`Runner`, so tests replace the
command runner and point ``root`` at a temporary directory.  With ``root``
given the manager is a dry run: it writes the unit (and the directories the
unit needs) under that directory and reports the ``systemctl`` commands it
would run without running any.

Without ``root``, every verb first checks that systemd is the running service
manager (``/run/systemd/system`` exists, as ``sd_booted(3)`` checks) and
raises :class:`~edr.service.manager.ServiceManagerUnavailable` otherwise,
before changing anything.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import attrs

from edr.platform.private_files import PrivateDir, UnsafePath
from edr.service.manager import ActionReport, ServiceError, ServiceManagerUnavailable, ServiceStatus
from edr.service.systemd_unit import UnitFacts, render_unit, split_writable

UNIT_NAME: Final = "edr.service"
UNIT_DIR: Final = Path("etc/systemd/system")
BOOTED_MARKER: Final = Path("/run/systemd/system")
UNIT_MODE: Final = 0o644
#: How long one systemctl call may take (a stop waits for the agent's drain).
SYSTEMCTL_TIMEOUT_SECS: Final = 120.0
_STATUS_PROPERTIES: Final = ("LoadState", "ActiveState", "SubState", "UnitFileState", "MainPID", "Result")


@attrs.frozen
class CommandResult:
    """What a command printed and how it ended."""

    returncode: int
    stdout: str = ""
    stderr: str = ""


#: Runs one command (argv) to completion; the default is :func:`run_command`.
Runner = Callable[[Sequence[str]], CommandResult]


def run_command(argv: Sequence[str]) -> CommandResult:
    """Run ``argv`` and capture its output; a missing program or a timeout becomes a failed result."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT_SECS,
                              check=False)
    except FileNotFoundError:
        return CommandResult(127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return CommandResult(124, "", f"{' '.join(argv)}: no answer within {SYSTEMCTL_TIMEOUT_SECS:.0f} s")
    return CommandResult(done.returncode, done.stdout, done.stderr)


def systemd_booted() -> bool:
    """Whether systemd is the running service manager (``sd_booted(3)``)."""
    return BOOTED_MARKER.is_dir()


class SystemdManager:
    """``edr service`` on a systemd host (see the module docstring).

    ``facts`` say what the unit runs and which directories it keeps writable;
    ``root`` is where the files go (``/`` by default) and makes every verb a
    dry run unless ``dry_run=False`` says otherwise; ``runner`` and ``booted``
    replace the command runner and the systemd check (tests).
    """

    def __init__(self, facts: UnitFacts, *, root: str | os.PathLike[str] | None = None,
                 dry_run: bool | None = None, runner: Runner = run_command,
                 booted: Callable[[], bool] = systemd_booted, systemctl: str = "systemctl") -> None:
        self.facts = facts
        self.root = Path(root) if root is not None else None
        #: No command runs and systemd is not needed; files are still written under ``root``.
        self.dry_run = self.root is not None if dry_run is None else dry_run
        self.runner = runner
        self.booted = booted
        self.systemctl = systemctl

    @property
    def unit_path(self) -> Path:
        """Where the unit file goes."""
        return (self.root or Path("/")) / UNIT_DIR / UNIT_NAME

    def _under_root(self, path: str | os.PathLike[str]) -> Path:
        return (self.root or Path("/")) / Path(path).relative_to("/")

    # -- the verbs ------------------------------------------------------------

    def install(self) -> ActionReport:
        """Write the unit and the directories it names, reload systemd, enable the unit at boot."""
        self._require_systemd()
        steps = [*self._make_read_write_paths(), self._write_unit()]
        steps += self._systemctl("daemon-reload")
        steps += self._systemctl("enable", UNIT_NAME)
        return ActionReport("install", tuple(steps), self.dry_run)

    def uninstall(self) -> ActionReport:
        """Stop and disable the unit, remove it, reload systemd; the agent's data and logs stay."""
        self._require_systemd()
        if not self.unit_path.exists():
            return ActionReport("uninstall", (f"nothing to do: {self.unit_path} is not installed",), self.dry_run)
        steps = self._systemctl("disable", "--now", UNIT_NAME)
        if self.dry_run:
            steps.append(f"remove {self.unit_path}")
        else:
            self.unit_path.unlink()
            steps.append(f"removed {self.unit_path}")
        steps += self._systemctl("daemon-reload")
        return ActionReport("uninstall", tuple(steps), self.dry_run)

    def start(self) -> ActionReport:
        """``systemctl start edr.service``."""
        return self._simple("start")

    def stop(self) -> ActionReport:
        """``systemctl stop edr.service``: SIGTERM, the agent drains and exits."""
        return self._simple("stop")

    def restart(self) -> ActionReport:
        """``systemctl restart edr.service``."""
        return self._simple("restart")

    def status(self) -> ServiceStatus:
        """The unit file's presence and freshness, and what systemd says about the unit."""
        installed = self.unit_path.is_file()
        current = None
        if installed:
            try:
                current = self.unit_path.read_text() == render_unit(self.facts)
            except (OSError, UnicodeDecodeError):
                current = False
        base = ServiceStatus(name=UNIT_NAME, location=str(self.unit_path), installed=installed, current=current)
        if self.dry_run:
            return attrs.evolve(base, problem=f"dry run under {self.root or '/'}: systemd is not asked")
        if not self.booted():
            return attrs.evolve(base, problem=self._not_booted_message())
        result = self.runner([self.systemctl, "show", UNIT_NAME, "--property=" + ",".join(_STATUS_PROPERTIES)])
        if result.returncode != 0:
            raise ServiceError(f"systemctl show {UNIT_NAME} failed: {_reason(result)}")
        props = dict(line.partition("=")[::2] for line in result.stdout.splitlines() if "=" in line)
        try:
            pid = int(props.get("MainPID", "0")) or None
        except ValueError:
            pid = None
        return attrs.evolve(
            base, installed=installed or props.get("LoadState") == "loaded",
            enabled=props.get("UnitFileState") or None, active=props.get("ActiveState") or None,
            sub_state=props.get("SubState") or None, main_pid=pid, result=props.get("Result") or None)

    # -- helpers --------------------------------------------------------------

    def _not_booted_message(self) -> str:
        return (f"systemd is not running on this host (no {BOOTED_MARKER}): `edr service` manages a systemd unit "
                "and needs systemd as PID 1; `--root DIR` writes the unit under DIR without it")

    def _require_systemd(self) -> None:
        if not self.dry_run and not self.booted():
            raise ServiceManagerUnavailable(self._not_booted_message())

    def _simple(self, verb: str) -> ActionReport:
        self._require_systemd()
        if verb != "stop" and not self.unit_path.is_file():
            raise ServiceError(f"{UNIT_NAME} is not installed ({self.unit_path} is missing): "
                               "run `edr service install` first")
        return ActionReport(verb, tuple(self._systemctl(verb, UNIT_NAME)), self.dry_run)

    def _systemctl(self, *args: str) -> list[str]:
        argv = [self.systemctl, *args]
        line = "run " + " ".join(argv)
        if self.dry_run:
            return [line]
        result = self.runner(argv)
        if result.returncode != 0:
            hint = f"; see `journalctl -u {UNIT_NAME}`" if args and args[0] in ("start", "restart") else ""
            raise ServiceError(f"{' '.join(argv)} failed: {_reason(result)}{hint}")
        return ["ran " + " ".join(argv)]

    def _make_read_write_paths(self) -> list[str]:
        """Create the ReadWritePaths= directories (0700): systemd refuses to start a unit naming a missing one.

        The StateDirectory=/LogsDirectory= ones are systemd's to create.
        """
        _managed, other = split_writable((self.facts.state_directory, *self.facts.writable))
        steps = []
        for path in other:
            target = self._under_root(path)
            if target.is_dir():
                continue
            try:
                PrivateDir(target).fd()  # creates it and every missing parent 0700, refusing unsafe links
            except (OSError, UnsafePath) as exc:
                raise ServiceError(f"cannot create {target}, which the unit keeps writable: {exc}") from exc
            steps.append(f"created {target} (mode 0700)")
        return steps

    def _write_unit(self) -> str:
        """Replace the unit file in one step (new file beside it, fsync, rename), without following links."""
        text = render_unit(self.facts)
        path = self.unit_path
        try:
            if path.is_file() and not path.is_symlink() and path.read_text() == text:
                return f"{path} is up to date"
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                tmp = f".{path.name}.{os.urandom(8).hex()}.tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, UNIT_MODE,
                             dir_fd=dirfd)
                try:
                    try:
                        os.fchmod(fd, UNIT_MODE)  # whatever the umask
                        os.write(fd, text.encode())
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    os.replace(tmp, path.name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
                except BaseException:
                    os.unlink(tmp, dir_fd=dirfd)
                    raise
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
        except OSError as exc:
            raise ServiceError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return f"wrote {path}"


def _reason(result: CommandResult) -> str:
    lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    return " ".join(lines) if lines else f"exit status {result.returncode}"
