"""The agent's systemd unit, generated from the facts of an installation (sans-IO).

:func:`render_unit` is a pure function from :class:`UnitFacts` (where the
``edr`` executable and the configuration file are, which directories the
agent writes, which user it runs as) to the text of ``edr.service``.  Nothing
here touches the file system or runs a command: writing the unit and calling
``systemctl`` is :mod:`edr.service.systemd_manager`'s job.

The hardening keeps exactly what an eBPF agent needs and says, in the unit
itself, why each directive that cannot be used is left out.  Each choice was
checked against the running agent (``tests/service/test_sandbox_live.py``
runs ``edr run`` under the capabilities, system-call filter, W^X rule,
address families and read-only file system this unit declares).

Run ``python -m edr.service.systemd_unit > conf/edr.service`` to regenerate
the repository's copy (a test fails when it is stale).
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Final

import attrs

if TYPE_CHECKING:
    from edr.config import Config

#: Without a ping for this long, systemd restarts the agent (the event loop pings every half of it).
DEFAULT_WATCHDOG_SECS: Final = 60

#: The exit codes of ``edr run`` that a restart cannot fix (see :mod:`edr.cli`):
#: 2 is a configuration error, 3 a sensor that cannot start on this host.
EXIT_CONFIG: Final = 2
EXIT_UNAVAILABLE: Final = 3

#: Capabilities the agent keeps, and why.  Everything else is dropped from the
#: bounding set, so not even a compromised agent running as root can regain it.
#: Each one was checked by running the agent without it (tests/service).
CAPABILITIES: Final[tuple[tuple[str, str], ...]] = (
    ("CAP_BPF", "load the BPF programs, create their maps and ring buffers"),
    ("CAP_PERFMON", "attach the programs to tracepoints (perf_event_open)"),
    ("CAP_SYS_PTRACE", "other users' /proc/PID/{exe,cwd,fd,mem}, pidfd_getfd(2) of their sockets"),
    ("CAP_DAC_READ_SEARCH", "read and hash any file the scanner is asked to look at"),
    ("CAP_KILL", "active response: signal processes of other users"),
)

#: Kernels older than 5.8 have neither CAP_BPF nor CAP_PERFMON: there bpf(2)
#: and perf_event_open(2) need CAP_SYS_ADMIN.  Newer kernels do not, so the
#: unit grants it only where the kernel leaves no choice.
LEGACY_BPF_CAPABILITY: Final = ("CAP_SYS_ADMIN", "bpf(2) and perf_event_open(2) on kernels older than 5.8")
BPF_CAPABILITIES_SINCE: Final = (5, 8)


def kernel_lacks_bpf_capabilities(release: str) -> bool:
    """Whether a kernel of this release (``uname -r``) predates CAP_BPF and CAP_PERFMON."""
    match = re.match(r"(\d+)\.(\d+)", release)
    if match is None:
        raise UnitError(f"kernel release {release!r} does not start with MAJOR.MINOR")
    return (int(match[1]), int(match[2])) < BPF_CAPABILITIES_SINCE


#: System calls beyond @system-service that the sensor needs.
EXTRA_SYSCALLS: Final[tuple[tuple[str, str], ...]] = (
    ("bpf", "load programs, create and read maps"),
    ("perf_event_open", "attach programs to tracepoints"),
    ("pidfd_getfd", "borrow a socket from the process that owns it to name its addresses"),
)

#: Socket families: AF_UNIX for sd_notify and the name service, AF_INET and
#: AF_INET6 for alert outputs that ship over the network.
ADDRESS_FAMILIES: Final = ("AF_UNIX", "AF_INET", "AF_INET6")

#: systemd creates these directories (mode 0700) at every start and keeps them
#: writable under ProtectSystem=strict; other writable paths need ReadWritePaths=.
_MANAGED_ROOTS: Final = (
    ("StateDirectory", PurePosixPath("/var/lib")),
    ("CacheDirectory", PurePosixPath("/var/cache")),
    ("LogsDirectory", PurePosixPath("/var/log")),
)

#: Characters a path in the unit may hold without quoting or specifier escapes.
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+@:/-]*$")
_SAFE_USER = re.compile(r"^[a-z_][a-z0-9_-]*\$?$")


class UnitError(ValueError):
    """A fact that cannot go into the unit; the message names the fact and the value."""


def _check_path(name: str, path: PurePosixPath) -> None:
    text = str(path)
    if not path.is_absolute():
        raise UnitError(f"{name} must be an absolute path, not {text!r}")
    if not _SAFE_PATH.match(text) or ".." in path.parts:
        raise UnitError(f"{name} {text!r}: use a path of letters, digits and ._+@:/- only "
                        "(no spaces, quotes, '%', '$' or '..')")


def _paths(values: Iterable[str | PurePosixPath]) -> tuple[PurePosixPath, ...]:
    return tuple(PurePosixPath(v) for v in values)


@attrs.frozen
class UnitFacts:
    """What the unit is generated from: the facts of one installation.

    ``state_directory`` and ``writable`` are every directory the agent
    writes (its state, the compiled-rule cache, the operational log, alerts,
    events); everything else is read-only to it.  ``user`` is the account the
    agent runs as: ``root`` (the default) keeps uid 0 with only
    :data:`CAPABILITIES`; any other user gets them as ambient capabilities.
    ``legacy_kernel`` (see :func:`kernel_lacks_bpf_capabilities`) adds
    CAP_SYS_ADMIN for kernels older than 5.8.  The durations are in seconds;
    ``watchdog_secs=None`` leaves the watchdog off (the agent then sends no
    pings, and a WatchdogSec= would have it killed).
    """

    executable: PurePosixPath = attrs.field(converter=PurePosixPath)
    config: PurePosixPath = attrs.field(converter=PurePosixPath)
    state_directory: PurePosixPath = attrs.field(converter=PurePosixPath)
    writable: tuple[PurePosixPath, ...] = attrs.field(default=(), converter=_paths)
    user: str = "root"
    legacy_kernel: bool = False
    watchdog_secs: int | None = DEFAULT_WATCHDOG_SECS
    start_timeout_secs: int = 300
    stop_timeout_secs: int = 30
    restart_secs: int = 5

    def __attrs_post_init__(self) -> None:
        _check_path("executable", self.executable)
        _check_path("config", self.config)
        for p in (self.state_directory, *self.writable):
            _check_path("writable directory", p)
            if p == PurePosixPath("/"):
                raise UnitError("writable directory '/' would undo ProtectSystem=strict")
        if not _SAFE_USER.match(self.user):
            raise UnitError(f"user {self.user!r} is not a valid user name")
        for name in ("watchdog_secs", "start_timeout_secs", "stop_timeout_secs", "restart_secs"):
            value = getattr(self, name)
            if name == "watchdog_secs" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UnitError(f"{name} must be a positive whole number of seconds, not {value!r}")


#: The recommended installed layout: a venv made with --system-site-packages
#: (bcc comes from the distribution) in /opt/edr, its ``edr`` script linked as
#: /usr/local/bin/edr, the configuration in /etc/edr, data in /var/lib/edr and
#: logs, alerts and events in /var/log/edr.
DEFAULT_FACTS: Final = UnitFacts(
    executable="/usr/local/bin/edr",
    config="/etc/edr/config.toml",
    state_directory="/var/lib/edr",
    writable=("/var/log/edr",),
)


def facts_from_config(config: Config, *, config_path: str | PurePosixPath, executable: str | PurePosixPath,
                      user: str = "root", legacy_kernel: bool = False) -> UnitFacts:
    """The facts for the directories ``config`` writes to.

    Relative directories are taken relative to the configuration file's
    directory, which is also the unit's ``WorkingDirectory``: the two agree
    whether the agent resolves them against its working directory or against
    its configuration file.  systemd's stop timeout leaves 20 s beyond the
    agent's own (``agent.stop_timeout_secs``); the watchdog follows
    ``health.watchdog``.
    """
    base = PurePosixPath(config_path).parent
    dirs = [config.logging.directory, config.alerts.directory, config.events.directory]
    if config.sigma.cache_dir:
        dirs.append(config.sigma.cache_dir)
    return UnitFacts(executable=executable, config=config_path, user=user, legacy_kernel=legacy_kernel,
                     stop_timeout_secs=math.ceil(config.agent.stop_timeout_secs) + 20,
                     watchdog_secs=DEFAULT_WATCHDOG_SECS if config.health.watchdog else None,
                     state_directory=base / config.agent.state_directory,
                     writable=tuple(base / d for d in dirs))


def _outermost(paths: Iterable[PurePosixPath]) -> list[PurePosixPath]:
    """The paths that are not inside another of them, sorted and without duplicates."""
    out: list[PurePosixPath] = []
    for p in sorted(set(paths)):
        if not any(p.is_relative_to(q) for q in out):
            out.append(p)
    return out


def split_writable(writable: Iterable[PurePosixPath]) -> tuple[dict[str, list[str]], list[str]]:
    """``({"StateDirectory": ["edr"], ...}, [other paths])``: what systemd manages, what it must leave writable."""
    managed: dict[str, list[str]] = {}
    other: list[str] = []
    for p in _outermost(writable):
        for directive, root in _MANAGED_ROOTS:
            if p.is_relative_to(root) and p != root:
                managed.setdefault(directive, []).append(str(p.relative_to(root)))
                break
        else:
            other.append(str(p))
    return managed, other


def render_unit(facts: UnitFacts) -> str:
    """The text of ``edr.service`` for ``facts``."""
    kept = (*CAPABILITIES, LEGACY_BPF_CAPABILITY) if facts.legacy_kernel else CAPABILITIES
    caps = " ".join(name for name, _why in kept)
    cap_lines = "\n".join(f"#   {name:<20} {why}" for name, why in kept)
    sys_lines = "\n".join(f"#   {name:<16} {why}" for name, why in EXTRA_SYSCALLS)
    not_kept = ("# Not kept: CAP_SYS_RESOURCE (BPF maps are charged to the memory cgroup since\n"
                "# Linux 5.11; before that, LimitMEMLOCK below is all they need).")
    if not facts.legacy_kernel:
        not_kept = ("# Not kept: CAP_SYS_ADMIN (CAP_BPF and CAP_PERFMON cover the sensor since\n"
                    "# Linux 5.8) and CAP_SYS_RESOURCE (BPF maps are charged to the memory cgroup\n"
                    "# since 5.11; before that, LimitMEMLOCK below is all they need).")
    watchdog = ("# The event loop pings every WatchdogSec/2; a loop stuck longer is restarted.\n"
                f"WatchdogSec={facts.watchdog_secs}")
    if facts.watchdog_secs is None:
        watchdog = "# No WatchdogSec=: health.watchdog is off in the configuration, the agent sends no pings."
    managed, other = split_writable((facts.state_directory, *facts.writable))
    dirs = []
    for directive, _root in _MANAGED_ROOTS:
        if directive in managed:
            prefix = directive.removesuffix("Directory")
            dirs.append(f"{directive}={' '.join(managed[directive])}\n{prefix}DirectoryMode=0700")
    if other:
        dirs.append("ReadWritePaths=" + " ".join(other))
    if facts.user == "root":
        user = ("# uid 0, but with only the capabilities below: `edr run` wants uid 0 before it loads\n"
                "# the sensor, and the files it trusts (configuration, rules) are root's.\n"
                "User=root")
        ambient = ""
    else:
        user = f"User={facts.user}\nGroup={facts.user}"
        ambient = f"AmbientCapabilities={caps}\n"
    return _TEMPLATE.format(
        exe=facts.executable, config=facts.config, workdir=facts.config.parent, user=user,
        state=facts.state_directory,
        watchdog=watchdog, start_timeout=facts.start_timeout_secs,
        stop_timeout=facts.stop_timeout_secs, restart=facts.restart_secs,
        exit_config=EXIT_CONFIG, exit_unavailable=EXIT_UNAVAILABLE,
        caps=caps, cap_lines=cap_lines, ambient=ambient, not_kept=not_kept, sys_lines=sys_lines,
        syscalls=" ".join(name for name, _why in EXTRA_SYSCALLS),
        families=" ".join(ADDRESS_FAMILIES), directories="\n".join(dirs),
    )


_TEMPLATE: Final = """\
# Generated by edr (edr.service.systemd_unit); `edr service install` writes it.
# Edit the installation's facts and regenerate rather than this file.
[Unit]
Description=edr endpoint detection and response agent
After=local-fs.target network.target
# Host set-up (bcc, kernel headers, tracefs) belongs to installation, not to
# every start: a start never installs packages.

[Service]
Type=notify
NotifyAccess=main
ExecStart={exe} run --config {config} --no-console
# SIGHUP reloads the rules and the reloadable configuration; the agent sends
# RELOADING=1 and, once the new rules are in place, READY=1.
ExecReload=/bin/kill -HUP $MAINPID
WorkingDirectory={workdir}
# A cold start compiles the whole Sigma rule set before READY=1.
TimeoutStartSec={start_timeout}
# SIGTERM drains the pipeline and flushes the alerts before the exit.
TimeoutStopSec={stop_timeout}
{watchdog}
Restart=on-failure
RestartSec={restart}
# Exit {exit_config}: the configuration is wrong; exit {exit_unavailable}: the sensor cannot run on this
# host (no BTF, headers or tracefs). A restart fixes neither: stay down and say so.
RestartPreventExitStatus={exit_config} {exit_unavailable}
UMask=0077
{directories}

# --- Privileges -------------------------------------------------------------
{user}
# Kept, all others dropped from the bounding set:
{cap_lines}
CapabilityBoundingSet={caps}
{ambient}{not_kept}
LimitMEMLOCK=infinity
NoNewPrivileges=yes
KeyringMode=private

# --- File system --------------------------------------------------------------
# Everything read-only but the directories above; the scanner and the sensor
# still read the whole tree.
ProtectSystem=strict
PrivateMounts=yes
# /sys read-only (bcc only reads tracefs) and /proc/kallsyms hidden (bcc looks
# there for features tracepoint programs do not use).
ProtectKernelTunables=yes
ProtectControlGroups=yes
ProtectKernelLogs=yes
ProtectClock=yes
ProtectHostname=yes
# No device node is needed: BPF, perf and pidfds are anonymous inodes.
DevicePolicy=closed
# Not used, on purpose:
#   PrivateTmp, ProtectHome    would hide /tmp, /var/tmp and /home from the
#                              scanner, the usual places a dropper writes to.
#   ProtectProc, ProcSubset    would hide other processes' /proc entries, which
#                              name the processes and sockets of every event.
#   PrivateDevices             would replace /dev/shm, another dropper favourite,
#                              with an empty one the scanner cannot see into.
#   ProtectKernelModules       also makes /usr/lib/modules inaccessible, where bcc
#                              finds the kernel headers it compiles the sensor
#                              against; module loading stays impossible anyway
#                              (no CAP_SYS_MODULE, @module is not allowed below).
#   PrivateNetwork, IPAddressDeny
#                              would cut off alert outputs to a SIEM.
#   PrivateUsers, DynamicUser  capabilities in a user namespace do not reach the
#                              kernel's BPF and perf checks.

# --- Kernel interfaces --------------------------------------------------------
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
RestrictAddressFamilies={families}
SystemCallArchitectures=native
# The usual service set, plus what the sensor needs beyond it:
{sys_lines}
SystemCallFilter=@system-service {syscalls}
SystemCallFilter=~@obsolete @swap @reboot @raw-io @cpu-emulation @module @mount
SystemCallErrorNumber=EPERM
# bcc's LLVM emits BPF byte code, not native code: it needs no writable and
# executable memory.  ctypes' callbacks (bcc's ring-buffer readers) ask for it:
# libffi tries an anonymous W+X page and, refused, maps a memfd twice, once
# writable and once executable, which this allows.  Should the memfd fail,
# libffi uses a file in LIBFFI_TMPDIR instead: the agent's own directory, not
# the first writable one it finds (/dev/shm, often mounted noexec).
MemoryDenyWriteExecute=yes
Environment=LIBFFI_TMPDIR={state}

[Install]
WantedBy=multi-user.target
"""


def main() -> int:
    """Print the unit for :data:`DEFAULT_FACTS` (``python -m edr.service.systemd_unit``)."""
    sys.stdout.write(render_unit(DEFAULT_FACTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
