"""Apply a systemd unit's sandbox without systemd, then exec a command (a test helper).

systemd-run needs systemd as PID 1, which the test machine does not have, so
this does what the service manager would do for the directives the tests
check, with the same kernel mechanisms:

``mounts SPEC -- ARGV``
    run inside ``unshare --mount --uts --propagation private``: bind the
    writable paths, make every other mount read-only (ProtectSystem=strict),
    /sys and /proc/sys read-only (ProtectKernelTunables, ProtectControlGroups),
    /proc/kallsyms, /proc/kcore, /proc/kmsg and /dev/kmsg inaccessible
    (ProtectKernelTunables, ProtectKernelLogs), /usr/lib/modules inaccessible
    when the spec asks for ProtectKernelModules; then exec ``setpriv`` to bound
    the capabilities and set no_new_privs, which execs the ``seccomp`` stage.
``seccomp SPEC -- ARGV``
    load seccomp filters as systemd 252 does, one per directive
    (SystemCallFilter= with SystemCallErrorNumber=, RestrictAddressFamilies=,
    MemoryDenyWriteExecute=, RestrictNamespaces=), then exec ARGV.

Self-contained (standard library and libseccomp through ctypes) because it
runs by path, before anything of the repository is importable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile

SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
SCMP_CMP_GE = 5
SCMP_CMP_MASKED_EQ = 7
PROT_WRITE, PROT_EXEC = 0x2, 0x4
SHM_EXEC = 0o100000
AF_MAX = 46
CLONE_NEW = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080)
FAMILIES = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16, "AF_PACKET": 17}


def scmp_act_errno(value: int) -> int:
    return 0x00050000 | (value & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


class Filter:
    """One seccomp filter built with libseccomp and loaded into this process."""

    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]

    def __init__(self, default: int) -> None:
        self.ctx = self.lib.seccomp_init(default)
        if not self.ctx:
            raise OSError("seccomp_init failed")

    def rule(self, action: int, name: str, *cmps: tuple[int, int, int, int]) -> bool:
        nr = self.lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            return False  # not a system call of this architecture
        arr = (ArgCmp * max(len(cmps), 1))(*[ArgCmp(*c) for c in cmps])
        rc = self.lib.seccomp_rule_add_array(self.ctx, action, nr, len(cmps), arr)
        if rc < 0:
            raise OSError(-rc, f"seccomp_rule_add {name}: {os.strerror(-rc)}")
        return True

    def load(self) -> None:
        rc = self.lib.seccomp_load(self.ctx)
        self.lib.seccomp_release(self.ctx)
        if rc < 0:
            raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")


def load_filters(spec: dict) -> None:
    """The seccomp filters of the spec, one per directive, in the order systemd installs them."""
    if spec.get("address_families") is not None:
        allowed = {FAMILIES[a] for a in spec["address_families"]}
        f = Filter(SCMP_ACT_ALLOW)
        for fam in range(AF_MAX):
            if fam not in allowed:
                f.rule(scmp_act_errno(errno.EAFNOSUPPORT), "socket", (0, SCMP_CMP_EQ, fam, 0))
        f.rule(scmp_act_errno(errno.EAFNOSUPPORT), "socket", (0, SCMP_CMP_GE, AF_MAX, 0))
        f.load()
    if spec.get("memory_deny_write_execute"):
        f = Filter(SCMP_ACT_ALLOW)
        wx = PROT_WRITE | PROT_EXEC
        f.rule(scmp_act_errno(errno.EPERM), "mmap", (2, SCMP_CMP_MASKED_EQ, wx, wx))
        f.rule(scmp_act_errno(errno.EPERM), "mprotect", (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
        f.rule(scmp_act_errno(errno.EPERM), "pkey_mprotect", (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
        f.rule(scmp_act_errno(errno.EPERM), "shmat", (2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
        f.load()
    if spec.get("restrict_namespaces"):
        f = Filter(SCMP_ACT_ALLOW)
        f.rule(scmp_act_errno(errno.ENOSYS), "clone3")  # so glibc falls back to clone, whose flags are visible
        f.rule(scmp_act_errno(errno.EPERM), "setns")
        for flag in CLONE_NEW:
            f.rule(scmp_act_errno(errno.EPERM), "unshare", (0, SCMP_CMP_MASKED_EQ, flag, flag))
            f.rule(scmp_act_errno(errno.EPERM), "clone", (0, SCMP_CMP_MASKED_EQ, flag, flag))
        f.load()
    # Last, as systemd does: the allow list does not allow seccomp(2) itself.
    if spec.get("syscalls") is not None:
        num = spec.get("errno")
        f = Filter(scmp_act_errno(num) if num else SCMP_ACT_KILL_PROCESS)
        for name in spec["syscalls"]:
            f.rule(SCMP_ACT_ALLOW, name)
        f.load()


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _mountpoints() -> list[str]:
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            mp = line.split()[4]
            out.append(mp.encode().decode("unicode_escape"))
    return out


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def apply_mounts(spec: dict) -> None:
    """The file-system directives, in this (private) mount namespace."""
    scratch = tempfile.mkdtemp(prefix="edr-sandbox-")
    empty_file = os.path.join(scratch, "reg")
    open(empty_file, "w").close()
    os.chmod(empty_file, 0)
    empty_dir = os.path.join(scratch, "dir")
    os.mkdir(empty_dir, 0)
    writable = [os.path.realpath(p) for p in spec["writable"]]
    for p in writable:
        _mount("--bind", p, p)
    hidden_files = []
    if spec.get("protect_kernel_tunables"):
        hidden_files += ["/proc/kallsyms", "/proc/kcore"]
    if spec.get("protect_kernel_logs"):
        hidden_files += ["/proc/kmsg", "/dev/kmsg"]
    for p in hidden_files:
        if os.path.exists(p):
            _mount("--bind", empty_file, p)
    if spec.get("protect_kernel_modules"):
        _mount("--bind", empty_dir, "/usr/lib/modules")
    if spec.get("protect_kernel_tunables"):
        for p in ("/proc/sys", "/proc/sysrq-trigger"):
            if not os.path.exists(p):
                continue  # systemd skips the entries a kernel does not have
            _mount("--bind", p, p)
            _mount("-o", "remount,bind,ro", p)
    for mp in _mountpoints():
        if any(_under(mp, w) for w in writable) or _under(mp, "/proc") or _under(mp, "/dev"):
            continue
        if _under(mp, "/sys"):
            if not (spec.get("protect_kernel_tunables") or spec.get("protect_control_groups")):
                continue
            if not spec.get("protect_kernel_tunables") and not _under(mp, "/sys/fs/cgroup"):
                continue
        elif not spec.get("protect_system_strict"):
            continue
        subprocess.run(["mount", "-o", "remount,bind,ro", mp], check=False, stderr=subprocess.DEVNULL)


def main(argv: list[str]) -> int:
    stage, spec_json, sep, *command = argv
    if sep != "--" or not command:
        print("usage: sandbox_exec.py mounts|seccomp SPEC -- ARGV", file=sys.stderr)
        return 2
    spec = json.loads(spec_json)
    for key, value in spec.get("environment", {}).items():
        os.environ[key] = value
    if stage == "mounts":
        apply_mounts(spec)
        caps = ",".join(["-all", *("+" + c for c in spec["capabilities"])])
        setpriv = [shutil.which("setpriv") or "setpriv", f"--bounding-set={caps}", "--inh-caps=-all"]
        if spec.get("no_new_privileges"):
            setpriv.append("--no-new-privs")
        os.execv(setpriv[0], [*setpriv, "--", sys.executable, os.path.abspath(__file__), "seccomp", spec_json,
                              "--", *command])
    if stage == "seccomp":
        load_filters(spec)
        os.execvp(command[0], command)
    print(f"unknown stage {stage!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
