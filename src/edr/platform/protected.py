"""The processes the responder must never terminate, as the system shows them now.

A rule that matches the agent's own supervisors must not make the agent kill
them: that would stop the agent (or the host) on an attacker's cue. What is
protected, and how each is known:

- **the agent** itself: ``os.getpid()``.
- **its parent and every ancestor** up to the top of its PID namespace (PID 1
  on the host, the container's init in a container): walked with psutil
  (``/proc/<pid>/stat`` on Linux, a process snapshot on Windows), one step at
  a time, and a step is kept only when the parent started no later than its
  child, so a dead parent's PID taken by a newer process ends the walk
  instead of being protected. ``os.getppid()`` is added even if /proc cannot
  be read.
- **its service manager**: a system service under systemd is a child of PID 1
  (the system manager), so it is in the chain; a user service gets
  ``$MANAGERPID``, the PID of its ``systemd --user`` instance, which is
  accepted when that process exists and started before the agent (an older
  value inherited from elsewhere, or a PID since reused, is ignored). Under
  Windows the service control manager (``services.exe``) is a service's
  parent, in the chain.
- **PID 1** (Linux): init, the system manager, whoever the agent's parent is.

Not knowable this way, so not protected: a supervisor that is not an ancestor
(a watchdog started from cron that restarts the agent, an orchestrator on
another host). PIDs 0-4 are protected separately by
:class:`edr.response.decision.ResponsePolicy`.

The set changes: the agent is reparented when its parent dies (to PID 1 or
to a subreaper). The responder therefore gathers it again before every
decision (about a millisecond of /proc reads, in a worker thread), never
trusting a list made at start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

import attrs

from edr.platform.facade import current

if TYPE_CHECKING:
    import psutil

AGENT: Final = "agent"
PARENT: Final = "parent"
ANCESTOR: Final = "ancestor"
SERVICE_MANAGER: Final = "service-manager"
INIT: Final = "init"

#: Longest parent chain walked (a real one is a handful of processes deep).
MAX_DEPTH: Final = 256


@attrs.frozen
class ProtectedProcess:
    """One protected process: its PID, why it is protected (roles), and its name for the log."""

    pid: int
    roles: tuple[str, ...]
    name: str = ""


def describe(protected: tuple[ProtectedProcess, ...]) -> str:
    """``"4242 agent (python3), 4100 parent (bash), 1 ancestor+init (systemd)"`` for the log."""
    return ", ".join(f"{p.pid} {'+'.join(p.roles)}" + (f" ({p.name})" if p.name else "") for p in protected)


def roles_by_pid(protected: tuple[ProtectedProcess, ...]) -> dict[int, str]:
    """PID -> roles joined by ``+``: what :meth:`ResponsePolicy.protect` takes."""
    return {p.pid: "+".join(p.roles) for p in protected}


def _name(proc: psutil.Process) -> str:
    import psutil

    try:
        return proc.name()
    except psutil.Error:
        return ""


def _manager_pid(environ: Mapping[str, str], agent: psutil.Process | None) -> int | None:
    """``$MANAGERPID`` when it names a live process that started no later than the agent."""
    import psutil

    text = environ.get("MANAGERPID", "").strip()
    if not text.isdigit() or agent is None:
        return None
    try:
        manager = psutil.Process(int(text))
        if manager.create_time() <= agent.create_time():
            return manager.pid
    except (psutil.Error, ValueError, OverflowError):
        return None
    return None


def gather_protected(environ: Mapping[str, str] | None = None) -> tuple[ProtectedProcess, ...]:
    """This platform's protected set (:meth:`~edr.platform.facade.Platform.protected_processes`)."""
    return current().protected_processes(environ)


def walk_protected(environ: Mapping[str, str] | None, init_pid: int | None) -> tuple[ProtectedProcess, ...]:
    """The agent, its ancestors, its service manager and ``init_pid``, in that order (blocking: reads /proc).

    ``init_pid`` is the platform's init process (PID 1 on Linux; None on
    Windows, whose service manager is an ancestor). Never raises: a process
    that vanishes or cannot be read ends the walk there, and what was found
    so far is returned (the agent and its parent's PID at least).
    """
    # imported here, not with the module: every command imports this one through the platform, and
    # only the responder walks processes (psutil costs ~8 ms of each start of `edr replay`)
    import psutil

    env = os.environ if environ is None else environ
    roles: dict[int, list[str]] = {}
    names: dict[int, str] = {}

    def add(pid: int, role: str, name: str = "") -> None:
        if pid <= 0:
            return
        have = roles.setdefault(pid, [])
        if role not in have:
            have.append(role)
        if name and not names.get(pid):
            names[pid] = name

    agent: psutil.Process | None = None
    try:
        agent = psutil.Process(os.getpid())
    except psutil.Error:
        agent = None
    add(os.getpid(), AGENT, _name(agent) if agent is not None else "")
    add(os.getppid(), PARENT)
    if agent is not None:
        proc, walked = agent, {agent.pid}
        for depth in range(MAX_DEPTH):
            try:
                # psutil's parent() checks that the parent started no later than the child.
                parent = proc.parent()
            except psutil.Error:
                break
            if parent is None or parent.pid in walked:
                break
            walked.add(parent.pid)
            add(parent.pid, PARENT if depth == 0 else ANCESTOR, _name(parent))
            proc = parent
    manager = _manager_pid(env, agent)
    if manager is not None:
        add(manager, SERVICE_MANAGER)
    if init_pid is not None:
        if manager is None and env.get("INVOCATION_ID"):
            add(init_pid, SERVICE_MANAGER)  # a systemd system service: its manager is PID 1
        add(init_pid, INIT)
    for pid in roles:
        if not names.get(pid):
            try:
                names[pid] = psutil.Process(pid).name()
            except psutil.Error:
                names[pid] = ""
    return tuple(ProtectedProcess(pid, tuple(r), names.get(pid, "")) for pid, r in roles.items())
