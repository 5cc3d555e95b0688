"""Pre-flight checks of the eBPF sensor, its compile flags and its cgroup hooks.

bcc and the kernel headers are needed only to compile ``bpf/sensor.c``,
which happens in a child process when the cached build is missing or stale
(:mod:`edr.sources.ebpf.objcache`, :mod:`edr.sources.ebpf.compile`); the
agent itself loads the compiled programs without bcc
(:mod:`edr.sources.ebpf.objload`).

Each check that fails raises :class:`SensorUnavailable` naming what is
missing and the command that fixes it, so ``edr run`` can print it and exit.
The ``probe_*`` functions behind the checks return a :class:`Probe` instead
(what was found, or the problem and its fix), for ``edr doctor``.
"""

from __future__ import annotations

import importlib
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Final, NamedTuple

from edr.sources.ebpf.errors import SensorUnavailable
from edr.sources.ebpf.records import FAMILIES, PROCESS

SOURCE_PATH = Path(__file__).with_name("bpf") / "sensor.c"

#: Capability numbers (``linux/capability.h``) of what the agent keeps (see edr.service.systemd_unit).
CAP_DAC_READ_SEARCH = 2
CAP_KILL = 5
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
CAP_SYS_RESOURCE = 24
CAP_PERFMON = 38
CAP_BPF = 39
CAPABILITY_BITS: Final[dict[str, int]] = {
    "CAP_DAC_READ_SEARCH": CAP_DAC_READ_SEARCH, "CAP_KILL": CAP_KILL, "CAP_SYS_PTRACE": CAP_SYS_PTRACE,
    "CAP_SYS_ADMIN": CAP_SYS_ADMIN, "CAP_SYS_RESOURCE": CAP_SYS_RESOURCE, "CAP_PERFMON": CAP_PERFMON,
    "CAP_BPF": CAP_BPF,
}
#: Where tracefs is looked for: its own mount point, then debugfs's automount of it.
TRACEFS_ROOTS: Final = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
BTF_PATH: Final = "/sys/kernel/btf/vmlinux"
#: What bcc and the kernel headers are for, since the agent loads a cached build of the sensor.
COMPILE_ONLY: Final = "needed to compile the sensor when its cached build is missing or stale"
#: BPF ring buffers (every family's ``rb_*`` map) arrived in Linux 5.8.
RINGBUF_SINCE: Final = (5, 8)


class Probe(NamedTuple):
    """One precondition of the sensor as found on this host (what ``edr doctor`` reports).

    ``found`` says what was found, ``problem`` (when ``ok`` is False) what is
    missing and ``fix`` the command that fixes it; :attr:`message` is the
    text :class:`SensorUnavailable` carries.
    """

    name: str
    ok: bool
    found: str
    problem: str = ""
    fix: str = ""

    @property
    def message(self) -> str:
        """``problem: fix``."""
        return f"{self.problem}: {self.fix}" if self.fix else self.problem

    def require(self) -> None:
        """Raise :class:`SensorUnavailable` with :attr:`message` unless the precondition holds."""
        if not self.ok:
            raise SensorUnavailable(self.message)


def effective_capabilities() -> int | None:
    """This process's effective capability set (``CapEff``) as a bit mask; None when it cannot be read."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _effective_caps() -> int:
    return effective_capabilities() or 0


def probe_privileges() -> Probe:
    """Root, or CAP_BPF and CAP_PERFMON."""
    if os.geteuid() == 0:
        return Probe("privileges", True, "running as root")
    caps = _effective_caps()
    if caps & (1 << CAP_BPF) and caps & (1 << CAP_PERFMON):
        return Probe("privileges", True, f"uid {os.geteuid()} with CAP_BPF and CAP_PERFMON")
    return Probe("privileges", False, f"uid {os.geteuid()} without CAP_BPF and CAP_PERFMON",
                 "the eBPF sensor needs root (or CAP_BPF and CAP_PERFMON)", "run as root, e.g. `sudo edr run`")


def check_privileges() -> None:
    """Root, or CAP_BPF and CAP_PERFMON."""
    probe_privileges().require()


def import_bcc() -> ModuleType:
    """The ``bcc`` module, or why it cannot be imported."""
    try:
        return importlib.import_module("bcc")
    except Exception as exc:
        raise SensorUnavailable(_bcc_probe(exc).message) from exc


def _bcc_probe(exc: Exception) -> Probe:
    return Probe("bcc", False, "not importable", f"bcc is not importable ({exc})",
                 "install it with `apt install python3-bpfcc` and use a virtualenv created with "
                 "--system-site-packages (or run scripts/setup_host.sh)")


def probe_bcc() -> Probe:
    """Whether ``bcc`` imports, and which one (needed to compile the sensor when its cached build is missing
    or stale; imports bcc: for ``edr doctor``, not the agent)."""
    try:
        bcc = importlib.import_module("bcc")
    except Exception as exc:
        return _bcc_probe(exc)
    version = getattr(bcc, "__version__", "") or "(version unknown)"
    return Probe("bcc", True, f"bcc {version} from {os.path.dirname(getattr(bcc, '__file__', '') or '?')} "
                 f"({COMPILE_ONLY})")


def probe_kernel_headers(release: str | None = None) -> Probe:
    """A kernel header tree bcc can compile against (or the kheaders module).

    Needed to compile the sensor when its cached build is missing or stale.
    """
    release = release or os.uname().release
    for sub in ("build", "source"):
        include = Path(f"/lib/modules/{release}/{sub}/include")
        if include.is_dir():
            return Probe("kernel headers", True, f"{include} ({os.path.realpath(include)}; {COMPILE_ONLY})")
    if Path("/sys/kernel/kheaders.tar.xz").exists():
        return Probe("kernel headers", True, f"/sys/kernel/kheaders.tar.xz (the kheaders module; {COMPILE_ONLY})")
    return Probe("kernel headers", False, f"none for {release}",
                 f"no usable kernel headers for {release} (/lib/modules/{release}/build/include is missing)",
                 "run scripts/setup_host.sh as root (installs linux-headers and links them), "
                 "or `modprobe kheaders`")


def check_kernel_headers(release: str | None = None) -> None:
    """A kernel header tree bcc can compile against (or the kheaders module)."""
    probe_kernel_headers(release).require()


def probe_tracefs(roots: tuple[str, ...] = TRACEFS_ROOTS) -> Probe:
    """tracefs mounted (tracepoint formats and ids live there) and readable by this process."""
    denied: list[tuple[str, OSError]] = []
    for root in roots:
        try:
            if stat.S_ISDIR(os.stat(os.path.join(root, "events", "syscalls")).st_mode):
                return Probe("tracefs", True, f"mounted at {root}")
        except PermissionError as exc:  # tracefs is root's (0700): EACCES is not "not mounted"
            denied.append((root, exc))
        except OSError:
            continue
    if denied:
        root, err = denied[0]
        return Probe("tracefs", False, "not readable",
                     f"tracefs at {root} cannot be read by uid {os.geteuid()} ({err.strerror})",
                     "run the agent as root (tracefs is root's, mode 0700)")
    return Probe("tracefs", False, "not mounted",
                 f"tracefs is not mounted (no {roots[0] if roots else TRACEFS_ROOTS[0]}/events/syscalls)",
                 "`mount -t tracefs nodev /sys/kernel/tracing` (scripts/setup_host.sh does it); "
                 "the kernel also needs CONFIG_FTRACE_SYSCALLS")


def check_tracefs() -> None:
    """tracefs mounted (tracepoint formats and ids live there)."""
    probe_tracefs().require()


def probe_btf(path: str = BTF_PATH) -> Probe:
    """The kernel's own BTF (CONFIG_DEBUG_INFO_BTF). Not a precondition of the sensor: see ``found``."""
    if Path(path).is_file():
        return Probe("BTF", True, f"{path} present")
    return Probe("BTF", False, f"{path} absent", f"the kernel has no BTF ({path} is missing)",
                 "not needed by the sensor, whose programs use tracepoints and helpers only; "
                 "a kernel built with CONFIG_DEBUG_INFO_BTF=y provides it")


def kernel_version(release: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a ``uname -r`` release, None when it does not start with them."""
    match = re.match(r"(\d+)\.(\d+)", release)
    return (int(match[1]), int(match[2])) if match else None


def probe_kernel_version(release: str | None = None) -> Probe:
    """A kernel with BPF ring buffers (5.8 or later), which every sensor family writes to."""
    release = release or os.uname().release
    version = kernel_version(release)
    since = ".".join(map(str, RINGBUF_SINCE))
    if version is None:
        return Probe("kernel", False, release, f"kernel release {release!r} does not start with MAJOR.MINOR",
                     f"run a Linux {since} or later kernel")
    if version < RINGBUF_SINCE:
        return Probe("kernel", False, f"Linux {release}",
                     f"Linux {release} predates BPF ring buffers ({since}), which the sensor writes to",
                     f"upgrade to Linux {since} or later")
    return Probe("kernel", True, f"Linux {release}")


def preflight_probes() -> tuple[Probe, ...]:
    """Every check :func:`preflight` makes, and those of a compile (bcc, kernel headers), in order, each run."""
    return (probe_privileges(), probe_bcc(), probe_kernel_headers(), probe_tracefs())


def preflight() -> None:
    """The checks every start needs (privileges, tracefs); bcc and headers only matter on a cache miss."""
    check_privileges()
    check_tracefs()


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def cflags(families: frozenset[str], max_args: int, max_arg_bytes: int, page_count: int) -> list[str]:
    """The -D flags selecting families and bounds for ``sensor.c``."""
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown sensor families: {sorted(unknown)} (known: {list(FAMILIES)})")
    if not 1 <= max_args <= 128:
        raise ValueError("max_args must be within 1..128")
    if not 64 <= max_arg_bytes <= 12288:
        # the exec record (2 x argv bytes + header) must fit one per-CPU map value (32 KiB)
        raise ValueError("max_arg_bytes must be within 64..12288")
    # ring buffer sizes must be a power-of-two number of pages
    pages = _pow2_at_least(max(page_count, 1))
    flags = ["-w", f"-DMAX_ARGS={max_args}", f"-DARGS_SIZE={max_arg_bytes}"]
    for fam in FAMILIES:
        # process events are the lifecycle lane: the process cache breaks
        # without them, so their ring gets 4x the room
        flags.append(f"-DRB_PAGES_{fam.upper()}={pages * 4 if fam == PROCESS else pages}")
        if fam in families:
            flags.append(f"-DFAM_{fam.upper()}")
    return flags


#: The cgroup socket hooks of ``sensor.c`` (FAM_NETWORK): function, program
#: type (bcc's ``BPF.*``) and attach type (``enum bpf_attach_type``).
CGROUP_HOOKS: tuple[tuple[str, str, int], ...] = (
    ("edr_udp_connect4", "CGROUP_SOCK_ADDR", 10),   # BPF_CGROUP_INET4_CONNECT
    ("edr_udp_connect6", "CGROUP_SOCK_ADDR", 11),   # BPF_CGROUP_INET6_CONNECT
    ("edr_udp_sendmsg4", "CGROUP_SOCK_ADDR", 14),   # BPF_CGROUP_UDP4_SENDMSG
    ("edr_udp_sendmsg6", "CGROUP_SOCK_ADDR", 15),   # BPF_CGROUP_UDP6_SENDMSG
    ("edr_udp_egress", "CGROUP_SKB", 1),            # BPF_CGROUP_INET_EGRESS
    ("edr_udp_release", "CGROUP_SOCK", 34),         # BPF_CGROUP_INET_SOCK_RELEASE
)


def attach_cgroup_hooks(load: Callable[[str, int, int], int], cgroup_root: str,
                        link: Callable[[int, int, int], int] | None = None) -> list[int]:
    """Load the cgroup socket hooks and link them to the cgroup v2 root; the link fds.

    ``load(name, prog_type, attach_type)`` loads a hook and returns its
    program fd (:meth:`edr.sources.ebpf.objload.LoadedObject.load_program`,
    which keeps it); ``link`` defaults to
    :func:`edr.sources.ebpf.bpf_syscall.link_create`.  Through BPF links
    (``BPF_LINK_CREATE``), not ``bpf_prog_attach``: a link belongs to its
    file descriptor, so the hooks are detached when the fds are closed,
    including when the agent dies without cleaning up, and never pile up on
    the cgroup across restarts.  The links are additive: other programs
    attached to the cgroup keep running.  Raises :class:`SensorUnavailable`
    saying why (then nothing stays attached).
    """
    from edr.sources.ebpf import bpf_syscall  # it imports this module's TRACEFS_ROOTS

    if link is None:
        link = bpf_syscall.link_create
    if not cgroup_root:
        raise SensorUnavailable("no cgroup v2 hierarchy is mounted")
    links: list[int] = []
    try:
        root = os.open(cgroup_root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise SensorUnavailable(f"cannot open the cgroup v2 root {cgroup_root}: {exc.strerror}") from exc
    try:
        for name, prog_type, attach_type in CGROUP_HOOKS:
            try:
                fd = load(name, bpf_syscall.PROG_TYPES[prog_type], attach_type)
            except SensorUnavailable:
                raise
            except Exception as exc:
                raise SensorUnavailable(f"the kernel refused {name} ({exc})") from exc
            try:
                links.append(link(fd, root, attach_type))
            except OSError as exc:
                raise SensorUnavailable(f"cannot link {name} to {cgroup_root}: {exc.strerror}") from exc
    except BaseException:
        for fd in links:
            os.close(fd)
        raise
    finally:
        os.close(root)
    return links
