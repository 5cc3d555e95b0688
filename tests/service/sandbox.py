"""The sandbox a unit declares, read from its text, and how to run a command inside it (test helper).

:func:`sandbox_spec` reads the ``[Service]`` directives the tests emulate;
:func:`sandboxed` turns a command into one that runs under them through
``unshare``, ``setpriv`` and ``sandbox_exec.py`` (see there for what each
stage does and what systemd would do instead).
"""

from __future__ import annotations

import ctypes.util
import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

EXEC = Path(__file__).with_name("sandbox_exec.py")
MANAGED_ROOTS = {"StateDirectory": "/var/lib", "CacheDirectory": "/var/cache", "LogsDirectory": "/var/log"}


def missing_tools() -> str | None:
    """Why the sandbox cannot be built here, or None."""
    for tool in ("unshare", "setpriv", "mount", "systemd-analyze"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    if ctypes.util.find_library("seccomp") is None:
        return "libseccomp not found"
    return None


def service_directives(unit: str) -> dict[str, list[str]]:
    """Every ``Key=Value`` of the ``[Service]`` section, values in order of appearance."""
    out: dict[str, list[str]] = {}
    section = None
    for raw in unit.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@functools.cache
def syscall_groups() -> dict[str, list[str]]:
    """systemd's system-call groups (``@system-service`` ...) as this systemd defines them."""
    text = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"], capture_output=True,
                          text=True, check=True).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if raw.startswith("@"):  # a group's name is not indented, its members are
            current = groups.setdefault(line.split()[0], [])
        elif line and not line.startswith("#") and current is not None:
            current.append(line.split()[0])
    return groups


def expand(names: list[str], seen: frozenset[str] = frozenset()) -> set[str]:
    """System-call names with the ``@group`` entries resolved."""
    out: set[str] = set()
    for name in names:
        if name.startswith("@"):
            if name not in seen:
                out |= expand(syscall_groups()[name], seen | {name})
        else:
            out.add(name)
    return out


def _yes(directives: dict[str, list[str]], key: str) -> bool:
    return directives.get(key, ["no"])[-1] in ("yes", "true", "1", "on", "strict")


def sandbox_spec(unit: str, *, errno: bool = True) -> dict[str, Any]:
    """What ``sandbox_exec.py`` applies for ``unit``.

    ``errno=False`` kills the process on a forbidden system call instead of
    failing the call with SystemCallErrorNumber=, so a test sees any call the
    filter would refuse rather than a quietly degraded agent.
    """
    d = service_directives(unit)
    allowed: set[str] | None = None
    for value in d.get("SystemCallFilter", []):
        if value.startswith("~"):
            if allowed is not None:
                allowed -= expand(value[1:].split())
        else:
            allowed = (allowed or expand(["@default"])) | expand(value.split())
    caps = [c.removeprefix("CAP_").lower() for c in " ".join(d.get("CapabilityBoundingSet", [])).split()]
    writable: list[str] = []
    for key, root in MANAGED_ROOTS.items():
        writable += [f"{root}/{name}" for v in d.get(key, []) for name in v.split()]
    writable += [p.lstrip("-") for v in d.get("ReadWritePaths", []) for p in v.split()]
    env = {}
    for v in d.get("Environment", []):
        key, _, value = v.partition("=")
        env[key] = value
    return {
        "capabilities": caps,
        "syscalls": sorted(allowed) if allowed is not None else None,
        "errno": 1 if errno and d.get("SystemCallErrorNumber", [""])[-1] == "EPERM" else None,
        "address_families": " ".join(d["RestrictAddressFamilies"]).split() if "RestrictAddressFamilies" in d else None,
        "memory_deny_write_execute": _yes(d, "MemoryDenyWriteExecute"),
        "restrict_namespaces": _yes(d, "RestrictNamespaces"),
        "no_new_privileges": _yes(d, "NoNewPrivileges"),
        "protect_system_strict": d.get("ProtectSystem", [""])[-1] == "strict",
        "protect_kernel_tunables": _yes(d, "ProtectKernelTunables"),
        "protect_kernel_logs": _yes(d, "ProtectKernelLogs"),
        "protect_kernel_modules": _yes(d, "ProtectKernelModules"),
        "protect_control_groups": _yes(d, "ProtectControlGroups"),
        "protect_hostname": _yes(d, "ProtectHostname"),
        "writable": writable,
        "environment": env,
    }


def sandboxed(spec: dict[str, Any], argv: list[str]) -> list[str]:
    """``argv`` run under ``spec``: a private mount (and UTS) namespace, bounded capabilities, seccomp."""
    ns = ["--mount", "--propagation", "private"]
    if spec["protect_hostname"]:
        ns.append("--uts")
    return [shutil.which("unshare") or "unshare", *ns, "--", sys.executable, str(EXEC), "mounts",
            json.dumps(spec), "--", *argv]
