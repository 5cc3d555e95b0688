"""Pre-flight checks and compilation of ``bpf/sensor.c`` with bcc.

Each check that fails raises :class:`SensorUnavailable` naming what is
missing and the command that fixes it, so ``edr run`` can print it and exit.
"""

from __future__ import annotations

import ctypes
import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from edr.sources.ebpf.errors import SensorUnavailable
from edr.sources.ebpf.records import FAMILIES, PROCESS

SOURCE_PATH = Path(__file__).with_name("bpf") / "sensor.c"

CAP_PERFMON = 38
CAP_BPF = 39


def _effective_caps() -> int:
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def check_privileges() -> None:
    """Root, or CAP_BPF and CAP_PERFMON."""
    if os.geteuid() == 0:
        return
    caps = _effective_caps()
    if caps & (1 << CAP_BPF) and caps & (1 << CAP_PERFMON):
        return
    raise SensorUnavailable(
        "the eBPF sensor needs root (or CAP_BPF and CAP_PERFMON): run as root, e.g. `sudo edr run`"
    )


def import_bcc() -> ModuleType:
    """The ``bcc`` module, or why it cannot be imported."""
    try:
        return importlib.import_module("bcc")
    except Exception as exc:
        raise SensorUnavailable(
            f"bcc is not importable ({exc}): install it with `apt install python3-bpfcc` and use a "
            "virtualenv created with --system-site-packages (or run scripts/setup_host.sh)"
        ) from exc


def check_kernel_headers(release: str | None = None) -> None:
    """A kernel header tree bcc can compile against (or the kheaders module)."""
    release = release or os.uname().release
    for sub in ("build", "source"):
        if Path(f"/lib/modules/{release}/{sub}/include").is_dir():
            return
    if Path("/sys/kernel/kheaders.tar.xz").exists():
        return
    raise SensorUnavailable(
        f"no usable kernel headers for {release} (/lib/modules/{release}/build/include is missing): "
        "run scripts/setup_host.sh as root (installs linux-headers and links them), "
        "or `modprobe kheaders`"
    )


def check_tracefs() -> None:
    """tracefs mounted (tracepoint formats and ids live there)."""
    for root in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if Path(root, "events", "syscalls").is_dir():
            return
    raise SensorUnavailable(
        "tracefs is not mounted (no /sys/kernel/tracing/events/syscalls): "
        "`mount -t tracefs nodev /sys/kernel/tracing` (scripts/setup_host.sh does it); "
        "the kernel also needs CONFIG_FTRACE_SYSCALLS"
    )


def preflight() -> ModuleType:
    """Run every check; return the bcc module."""
    check_privileges()
    bcc = import_bcc()
    check_kernel_headers()
    check_tracefs()
    return bcc


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


def attach_cgroup_hooks(bcc: ModuleType, bpf: Any, cgroup_root: str) -> list[int]:
    """Load the cgroup socket hooks and link them to the cgroup v2 root; the link fds.

    Through BPF links (``bpf_link_create``), not ``bpf_prog_attach``: a link
    belongs to its file descriptor, so the hooks are detached when the fds
    are closed, including when the agent dies without cleaning up, and never
    pile up on the cgroup across restarts.  The links are additive: other
    programs attached to the cgroup keep running.  Raises
    :class:`SensorUnavailable` saying why (then nothing stays attached).
    """
    if not cgroup_root:
        raise SensorUnavailable("no cgroup v2 hierarchy is mounted")
    lib = bcc.libbcc.lib   # libbpf's bpf_link_create, through libbcc's dependencies
    lib.bpf_link_create.restype = ctypes.c_int
    lib.bpf_link_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    links: list[int] = []
    try:
        root = os.open(cgroup_root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise SensorUnavailable(f"cannot open the cgroup v2 root {cgroup_root}: {exc.strerror}") from exc
    try:
        for name, prog_type, attach_type in CGROUP_HOOKS:
            try:
                fn = bpf.load_func(name.encode(), getattr(bcc.BPF, prog_type), attach_type=attach_type)
            except Exception as exc:
                raise SensorUnavailable(f"the kernel refused {name} ({exc})") from exc
            link = lib.bpf_link_create(fn.fd, root, attach_type, None)
            if link < 0:
                raise SensorUnavailable(f"cannot link {name} to {cgroup_root}: {os.strerror(-link)}")
            links.append(link)
    except BaseException:
        for fd in links:
            os.close(fd)
        raise
    finally:
        os.close(root)
    return links


def compile_programs(bcc: ModuleType, flags: list[str]) -> Any:
    """Compile and attach every TRACEPOINT_PROBE; compiler or verifier errors become SensorUnavailable."""
    text = SOURCE_PATH.read_bytes()
    try:
        return bcc.BPF(text=text, cflags=flags)
    except Exception as exc:
        raise SensorUnavailable(
            f"the BPF programs failed to compile or load ({exc}); check the kernel headers "
            "(scripts/setup_host.sh) and that the kernel has BPF and syscall tracepoints"
        ) from exc
