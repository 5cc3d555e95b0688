"""The ``bpf()`` and ``perf_event_open()`` system calls through ctypes, without bcc or libbpf.

Just enough of the kernel's interface to create maps, load programs the
agent already has as instructions, and attach them to tracepoints and
cgroups.  Every call is a thin, blocking wrapper around one system call:
no state is kept here, the caller owns (and closes, with ``os.close``) every
file descriptor returned.

The attribute blocks follow ``union bpf_attr`` of ``linux/bpf.h`` and
``struct perf_event_attr`` of ``linux/perf_event.h``, one ``ctypes``
structure per command holding only the fields up to the last one used.  The
kernel copies ``size`` bytes and treats the rest as zero, and rejects a
non-zero byte past the fields a command knows, so every block is zero-filled
(ctypes does that) and its own size is passed.

Failures raise :class:`BpfError`, an ``OSError`` whose message names the
operation (and, for a program the verifier refused or BTF the kernel did
not accept, ends with the tail of the kernel's log).
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import fcntl
import os
import platform
from collections.abc import Callable
from typing import Final, NamedTuple

from edr.sources.ebpf.loader import TRACEFS_ROOTS

# --- system call numbers -----------------------------------------------------

#: (bpf, perf_event_open) per machine: x86_64 has its own table, the newer
#: ports share the generic one (include/uapi/asm-generic/unistd.h).
_SYSCALLS: Final[dict[str, tuple[int, int]]] = {
    "x86_64": (321, 298),
    "amd64": (321, 298),
    "aarch64": (280, 241),
    "arm64": (280, 241),
    "riscv64": (280, 241),
    "loongarch64": (280, 241),
}


def _syscall_numbers(machine: str) -> tuple[int, int]:
    try:
        return _SYSCALLS[machine.lower()]
    except KeyError:
        raise OSError(errno_mod.ENOSYS, f"bpf(): no system call numbers known for the {machine} machine") from None


SYS_BPF, SYS_PERF_EVENT_OPEN = _syscall_numbers(platform.machine())

# --- constants (enum bpf_cmd, bpf_map_type, bpf_prog_type, bpf_attach_type) -----

BPF_MAP_CREATE: Final = 0
BPF_MAP_LOOKUP_ELEM: Final = 1
BPF_MAP_UPDATE_ELEM: Final = 2
BPF_MAP_DELETE_ELEM: Final = 3
BPF_MAP_GET_NEXT_KEY: Final = 4
BPF_PROG_LOAD: Final = 5
BPF_OBJ_GET_INFO_BY_FD: Final = 15
BPF_BTF_LOAD: Final = 18
BPF_BTF_GET_FD_BY_ID: Final = 19
BPF_LINK_CREATE: Final = 28

BPF_MAP_TYPE_HASH: Final = 1
BPF_MAP_TYPE_ARRAY: Final = 2
BPF_MAP_TYPE_PROG_ARRAY: Final = 3
BPF_MAP_TYPE_PERF_EVENT_ARRAY: Final = 4
BPF_MAP_TYPE_PERCPU_HASH: Final = 5
BPF_MAP_TYPE_PERCPU_ARRAY: Final = 6
BPF_MAP_TYPE_LRU_HASH: Final = 9
BPF_MAP_TYPE_LRU_PERCPU_HASH: Final = 10
BPF_MAP_TYPE_SK_STORAGE: Final = 24
BPF_MAP_TYPE_RINGBUF: Final = 27

BPF_PROG_TYPE_SOCKET_FILTER: Final = 1
BPF_PROG_TYPE_KPROBE: Final = 2
BPF_PROG_TYPE_TRACEPOINT: Final = 5
BPF_PROG_TYPE_CGROUP_SKB: Final = 8
BPF_PROG_TYPE_CGROUP_SOCK: Final = 9
BPF_PROG_TYPE_RAW_TRACEPOINT: Final = 17
BPF_PROG_TYPE_CGROUP_SOCK_ADDR: Final = 18
BPF_PROG_TYPE_TRACING: Final = 26

#: Program types by the names loader.CGROUP_HOOKS uses (bcc's ``BPF.*``).
PROG_TYPES: Final[dict[str, int]] = {
    "SOCKET_FILTER": BPF_PROG_TYPE_SOCKET_FILTER,
    "KPROBE": BPF_PROG_TYPE_KPROBE,
    "TRACEPOINT": BPF_PROG_TYPE_TRACEPOINT,
    "CGROUP_SKB": BPF_PROG_TYPE_CGROUP_SKB,
    "CGROUP_SOCK": BPF_PROG_TYPE_CGROUP_SOCK,
    "RAW_TRACEPOINT": BPF_PROG_TYPE_RAW_TRACEPOINT,
    "CGROUP_SOCK_ADDR": BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
    "TRACING": BPF_PROG_TYPE_TRACING,
}

BPF_CGROUP_INET_INGRESS: Final = 0
BPF_CGROUP_INET_EGRESS: Final = 1
BPF_CGROUP_INET_SOCK_CREATE: Final = 2
BPF_CGROUP_INET4_CONNECT: Final = 10
BPF_CGROUP_INET6_CONNECT: Final = 11
BPF_CGROUP_UDP4_SENDMSG: Final = 14
BPF_CGROUP_UDP6_SENDMSG: Final = 15
BPF_CGROUP_INET_SOCK_RELEASE: Final = 34
BPF_PERF_EVENT: Final = 41

#: map_update flags
BPF_ANY: Final = 0
BPF_NOEXIST: Final = 1
BPF_EXIST: Final = 2

#: map_create flags
BPF_F_NO_PREALLOC: Final = 1

PERF_TYPE_TRACEPOINT: Final = 2
PERF_SAMPLE_RAW: Final = 1 << 10
PERF_FLAG_FD_CLOEXEC: Final = 1 << 3
#: _IO('$', 0) and _IOW('$', 8, __u32)
PERF_EVENT_IOC_ENABLE: Final = 0x2400
PERF_EVENT_IOC_SET_BPF: Final = 0x40042408

BPF_OBJ_NAME_LEN: Final = 16

# --- attribute blocks ---------------------------------------------------------

_u32 = ctypes.c_uint32
_u64 = ctypes.c_uint64


class _MapCreateAttr(ctypes.Structure):
    _fields_ = [
        ("map_type", _u32), ("key_size", _u32), ("value_size", _u32), ("max_entries", _u32),
        ("map_flags", _u32), ("inner_map_fd", _u32), ("numa_node", _u32),
        ("map_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("map_ifindex", _u32), ("btf_fd", _u32), ("btf_key_type_id", _u32), ("btf_value_type_id", _u32),
    ]


class _BtfLoadAttr(ctypes.Structure):
    _fields_ = [("btf", _u64), ("btf_log_buf", _u64), ("btf_size", _u32), ("btf_log_size", _u32),
                ("btf_log_level", _u32)]


class _GetFdByIdAttr(ctypes.Structure):
    _fields_ = [("id", _u32), ("next_id", _u32), ("open_flags", _u32)]


class _MapElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", _u32), ("_pad", _u32), ("key", _u64), ("value", _u64), ("flags", _u64)]


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [
        ("prog_type", _u32), ("insn_cnt", _u32), ("insns", _u64), ("license", _u64),
        ("log_level", _u32), ("log_size", _u32), ("log_buf", _u64),
        ("kern_version", _u32), ("prog_flags", _u32),
        ("prog_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("prog_ifindex", _u32), ("expected_attach_type", _u32),
    ]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", _u32), ("info_len", _u32), ("info", _u64)]


class _LinkCreateAttr(ctypes.Structure):
    _fields_ = [("prog_fd", _u32), ("target_fd", _u32), ("attach_type", _u32), ("flags", _u32),
                ("bpf_cookie", _u64)]   # link_create.perf_event.bpf_cookie


class _MapInfo(ctypes.Structure):
    _fields_ = [
        ("type", _u32), ("id", _u32), ("key_size", _u32), ("value_size", _u32),
        ("max_entries", _u32), ("map_flags", _u32), ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("ifindex", _u32), ("btf_vmlinux_value_type_id", _u32), ("netns_dev", _u64), ("netns_ino", _u64),
        ("btf_id", _u32), ("btf_key_type_id", _u32), ("btf_value_type_id", _u32),
    ]


class _BtfInfo(ctypes.Structure):
    _fields_ = [("btf", _u64), ("btf_size", _u32), ("id", _u32)]


class _ProgInfo(ctypes.Structure):
    _fields_ = [
        ("type", _u32), ("id", _u32), ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", _u32), ("xlated_prog_len", _u32),
        ("jited_prog_insns", _u64), ("xlated_prog_insns", _u64), ("load_time", _u64),
        ("created_by_uid", _u32), ("nr_map_ids", _u32), ("map_ids", _u64),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
    ]


class _PerfEventAttr(ctypes.Structure):
    """``struct perf_event_attr`` up to ``config3`` (PERF_ATTR_SIZE_VER8, 136 bytes)."""

    _fields_ = [
        ("type", _u32), ("size", _u32), ("config", _u64), ("sample_period", _u64),
        ("sample_type", _u64), ("read_format", _u64), ("flags", _u64),
        ("wakeup_events", _u32), ("bp_type", _u32), ("config1", _u64), ("config2", _u64),
        ("branch_sample_type", _u64), ("sample_regs_user", _u64), ("sample_stack_user", _u32),
        ("clockid", ctypes.c_int32), ("sample_regs_intr", _u64), ("aux_watermark", _u32),
        ("sample_max_stack", ctypes.c_uint16), ("_reserved_2", ctypes.c_uint16),
        ("aux_sample_size", _u32), ("_reserved_3", _u32), ("sig_data", _u64), ("config3", _u64),
    ]


# --- errors -------------------------------------------------------------------


class BpfError(OSError):
    """A ``bpf()`` or ``perf_event_open()`` call failed.

    ``errno`` and ``strerror`` are the kernel's; ``operation`` names the
    command and its object (``"BPF_MAP_UPDATE_ELEM fd 7"``); ``log`` is the
    tail of the kernel's log when it refused a program (the verifier's
    reason) or BTF ('' otherwise).
    """

    def __init__(self, operation: str, err: int, log: str = "") -> None:
        super().__init__(err, os.strerror(err))
        self.operation = operation
        self.log = log

    def __str__(self) -> str:
        text = f"{self.operation}: {self.strerror} (errno {self.errno})"
        if self.log:
            text += f"; the kernel's log (tail):\n{self.log}"
        return text


# --- the calls ----------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _bpf(cmd: int, attr: ctypes.Structure, operation: str) -> int:
    ret: int = _syscall(ctypes.c_long(SYS_BPF), ctypes.c_int(cmd), ctypes.byref(attr),
                        ctypes.c_uint(ctypes.sizeof(attr)))
    if ret < 0:
        raise BpfError(operation, ctypes.get_errno())
    return ret


def _bpf_unless_absent(cmd: int, attr: ctypes.Structure, operation: str) -> bool:
    """:func:`_bpf`, False instead of an error when the kernel says ENOENT (no such key, no next key)."""
    try:
        _bpf(cmd, attr, operation)
    except BpfError as exc:
        if exc.errno == errno_mod.ENOENT:
            return False
        raise
    return True


def _name(name: str) -> bytes:
    # the kernel keeps BPF_OBJ_NAME_LEN - 1 characters and a NUL
    return name.encode()[:BPF_OBJ_NAME_LEN - 1]


def _address(buf: ctypes.Array[ctypes.c_char]) -> int:
    return ctypes.addressof(buf)


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int,
               flags: int = 0, name: str = "", *, btf_fd: int = 0, btf_key_type_id: int = 0,
               btf_value_type_id: int = 0) -> int:
    """Create a map; its file descriptor (close it with ``os.close``).

    A ring buffer (``BPF_MAP_TYPE_RINGBUF``) takes key and value sizes 0 and
    its size in bytes, a power of two and a multiple of the page size, as
    ``max_entries``.  ``name`` is cut to 15 bytes (letters, digits, '_', '.').
    The BTF arguments describe key and value by type ids of a loaded BTF
    object (:func:`btf_load`); socket storage maps cannot be made without.
    """
    attr = _MapCreateAttr(map_type=map_type, key_size=key_size, value_size=value_size,
                          max_entries=max_entries, map_flags=flags, map_name=_name(name),
                          btf_fd=btf_fd, btf_key_type_id=btf_key_type_id, btf_value_type_id=btf_value_type_id)
    return _bpf(BPF_MAP_CREATE, attr, f"BPF_MAP_CREATE {name or 'map'} (type {map_type})")


def map_update(fd: int, key: bytes, value: bytes, flags: int = 0) -> None:
    """Set ``key`` to ``value`` (``flags``: BPF_ANY, BPF_NOEXIST, BPF_EXIST).

    For a per-CPU map, ``value`` holds every possible CPU's value, each
    padded to 8 bytes (see :func:`percpu_value_size`).
    """
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value, len(value))
    attr = _MapElemAttr(map_fd=fd, key=_address(k), value=_address(v), flags=flags)
    _bpf(BPF_MAP_UPDATE_ELEM, attr, f"BPF_MAP_UPDATE_ELEM fd {fd}")


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    """The value of ``key`` (``value_size`` bytes), or None when the map has no such key.

    For a per-CPU map, pass :func:`percpu_value_size` and split the result
    per CPU.
    """
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value_size)
    attr = _MapElemAttr(map_fd=fd, key=_address(k), value=_address(v))
    return v.raw if _bpf_unless_absent(BPF_MAP_LOOKUP_ELEM, attr, f"BPF_MAP_LOOKUP_ELEM fd {fd}") else None


def map_delete(fd: int, key: bytes) -> bool:
    """Remove ``key``; whether it was there."""
    k = ctypes.create_string_buffer(key, len(key))
    attr = _MapElemAttr(map_fd=fd, key=_address(k))
    return _bpf_unless_absent(BPF_MAP_DELETE_ELEM, attr, f"BPF_MAP_DELETE_ELEM fd {fd}")


def map_next_key(fd: int, key: bytes | None, key_size: int) -> bytes | None:
    """The key after ``key`` (the first with None), or None after the last one."""
    k = ctypes.create_string_buffer(key, len(key)) if key is not None else None
    nxt = ctypes.create_string_buffer(key_size)
    attr = _MapElemAttr(map_fd=fd, key=_address(k) if k is not None else 0, value=_address(nxt))
    return nxt.raw if _bpf_unless_absent(BPF_MAP_GET_NEXT_KEY, attr, f"BPF_MAP_GET_NEXT_KEY fd {fd}") else None


def possible_cpus(path: str = "/sys/devices/system/cpu/possible") -> int:
    """How many CPUs the kernel may ever bring up (the number of values of a per-CPU map).

    The file holds ranges such as ``0-3,8-11``; per-CPU maps are indexed up
    to the highest possible CPU, so this is that number plus one.
    """
    with open(path, encoding="ascii") as f:
        text = f.read().strip()
    highest = -1
    for part in text.split(","):
        last = part.rpartition("-")[2]
        highest = max(highest, int(last))
    return highest + 1


def percpu_value_size(value_size: int, cpus: int | None = None) -> int:
    """The size of a per-CPU map's value buffer: ``value_size`` rounded up to 8, times the CPUs."""
    return ((value_size + 7) & ~7) * (possible_cpus() if cpus is None else cpus)


class MapInfo(NamedTuple):
    """What the kernel says of a map (``struct bpf_map_info``)."""

    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str
    btf_id: int = 0
    btf_key_type_id: int = 0
    btf_value_type_id: int = 0


class ProgInfo(NamedTuple):
    """What the kernel says of a program (``struct bpf_prog_info``)."""

    type: int
    id: int
    name: str
    tag: bytes


def _info(fd: int, info: ctypes.Structure) -> None:
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr, f"BPF_OBJ_GET_INFO_BY_FD fd {fd}")


def map_info(fd: int) -> MapInfo:
    """Type, id, sizes, flags and name of the map behind ``fd``."""
    info = _MapInfo()
    _info(fd, info)
    return MapInfo(info.type, info.id, info.key_size, info.value_size, info.max_entries,
                   info.map_flags, info.name.decode(errors="replace"),
                   info.btf_id, info.btf_key_type_id, info.btf_value_type_id)


def prog_info(fd: int) -> ProgInfo:
    """Type, id, name and tag of the program behind ``fd``."""
    info = _ProgInfo()
    _info(fd, info)
    return ProgInfo(info.type, info.id, info.name.decode(errors="replace"), bytes(info.tag))


def prog_load(prog_type: int, insns: bytes, license: str = "GPL", *, expected_attach_type: int = 0,
              name: str = "", log_size: int = 1 << 20) -> int:
    """Load a program (``insns``: 8-byte ``struct bpf_insn``, map fds already patched in); its fd.

    Loads without a log first (the verifier's log costs time and memory even
    when it succeeds); when the kernel refuses, loads again with a log of
    ``log_size`` bytes and raises :class:`BpfError` carrying the log's tail,
    the verifier's reason.  A refusal that leaves no log (a bad attribute,
    missing privileges) raises with the first attempt's errno.
    """
    if len(insns) % 8 or not insns:
        raise ValueError(f"program {name or '?'}: {len(insns)} bytes is not a whole number of instructions")
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    attr = _ProgLoadAttr(prog_type=prog_type, insn_cnt=len(insns) // 8, insns=_address(code),
                         license=_address(lic), prog_name=_name(name),
                         expected_attach_type=expected_attach_type)
    operation = f"BPF_PROG_LOAD {name or 'program'} (type {prog_type})"

    def with_log(log: ctypes.Array[ctypes.c_char]) -> None:
        attr.log_level, attr.log_size, attr.log_buf = 1, len(log), _address(log)

    return _load(BPF_PROG_LOAD, attr, operation, log_size, with_log)


def _load(cmd: int, attr: ctypes.Structure, operation: str, log_size: int,
          with_log: Callable[[ctypes.Array[ctypes.c_char]], None]) -> int:
    """Run a loading command quietly, and again with a log (set by ``with_log``) when it fails."""
    try:
        return _bpf(cmd, attr, operation)
    except BpfError as first:
        if log_size <= 0:
            raise
        err = first
    log = ctypes.create_string_buffer(log_size)
    with_log(log)
    try:
        # loads after all when the first refusal was passing (e.g. EAGAIN)
        return _bpf(cmd, attr, operation)
    except BpfError as second:
        text = log.value.decode(errors="replace").strip()
        if text:
            err = second
        raise BpfError(operation, err.errno or errno_mod.EINVAL, _tail(text)) from None


def btf_load(data: bytes, log_size: int = 1 << 16) -> int:
    """Load a BTF object (the raw ``.BTF`` section: header, types, strings); its fd.

    Like :func:`prog_load`, quietly first, then again with a log whose tail
    goes into the :class:`BpfError`.
    """
    blob = ctypes.create_string_buffer(data, len(data))
    attr = _BtfLoadAttr(btf=_address(blob), btf_size=len(data))

    def with_log(log: ctypes.Array[ctypes.c_char]) -> None:
        attr.btf_log_level, attr.btf_log_size, attr.btf_log_buf = 1, len(log), _address(log)

    return _load(BPF_BTF_LOAD, attr, f"BPF_BTF_LOAD ({len(data)} bytes)", log_size, with_log)


def btf_get_fd_by_id(btf_id: int) -> int:
    """A new fd on the loaded BTF object ``btf_id`` (e.g. a map's ``MapInfo.btf_id``)."""
    return _bpf(BPF_BTF_GET_FD_BY_ID, _GetFdByIdAttr(id=btf_id), f"BPF_BTF_GET_FD_BY_ID {btf_id}")


def btf_data(btf_fd: int) -> bytes:
    """The raw BTF of the object behind ``btf_fd``, as it was loaded."""
    info = _BtfInfo()
    _info(btf_fd, info)   # with no buffer the kernel only says the size
    blob = ctypes.create_string_buffer(info.btf_size)
    info = _BtfInfo(btf=_address(blob), btf_size=len(blob))
    _info(btf_fd, info)
    return blob.raw[:info.btf_size]


def _tail(log: str, lines: int = 20) -> str:
    return "\n".join(log.splitlines()[-lines:])


def tracepoint_id(category: str, event: str, roots: tuple[str, ...] = TRACEFS_ROOTS) -> int:
    """The id of tracepoint ``category:event`` (tracefs's ``events/<category>/<event>/id``)."""
    for root in roots:
        path = os.path.join(root, "events", category, event, "id")
        try:
            with open(path, encoding="ascii") as f:
                return int(f.read())
        except FileNotFoundError:
            continue
    raise BpfError(f"tracepoint {category}:{event} (not under {', '.join(roots)})", errno_mod.ENOENT)


def perf_event_open_tracepoint(tp_id: int, cpu: int = 0) -> int:
    """Open a perf event on tracepoint ``tp_id`` for every process (pid -1) on ``cpu``; its fd.

    One event is enough for a BPF program: the program attaches to the
    tracepoint itself and runs on every CPU, whatever the event's CPU.
    """
    attr = _PerfEventAttr(type=PERF_TYPE_TRACEPOINT, size=ctypes.sizeof(_PerfEventAttr), config=tp_id,
                          sample_period=1, sample_type=PERF_SAMPLE_RAW, wakeup_events=1)
    ret: int = _syscall(ctypes.c_long(SYS_PERF_EVENT_OPEN), ctypes.byref(attr), ctypes.c_int(-1),
                        ctypes.c_int(cpu), ctypes.c_int(-1), ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC))
    if ret < 0:
        raise BpfError(f"perf_event_open tracepoint {tp_id} cpu {cpu}", ctypes.get_errno())
    return ret


def link_create(prog_fd: int, target_fd: int, attach_type: int, flags: int = 0) -> int:
    """Link a program to a target (a cgroup's fd, a perf event's); the link's fd.

    The program stays attached while the link's fd is open, and is detached
    when it is closed, also when the process dies without cleaning up.
    """
    attr = _LinkCreateAttr(prog_fd=prog_fd, target_fd=target_fd, attach_type=attach_type, flags=flags)
    operation = f"BPF_LINK_CREATE prog fd {prog_fd} to fd {target_fd} (attach type {attach_type})"
    return _bpf(BPF_LINK_CREATE, attr, operation)


def attach_perf_event(prog_fd: int, perf_fd: int) -> int | None:
    """Run a program on a perf event (a tracepoint's); the link's fd, or None without perf links.

    With perf links (Linux 5.15+) closing the returned link detaches the
    program; on older kernels the program is set on the event with
    ``PERF_EVENT_IOC_SET_BPF`` and stays until the perf fd is closed.  The
    event is enabled either way.
    """
    link: int | None
    try:
        link = link_create(prog_fd, perf_fd, BPF_PERF_EVENT)
    except BpfError as exc:
        # kernels before perf links refuse the attach type
        if exc.errno not in (errno_mod.EINVAL, errno_mod.EOPNOTSUPP, errno_mod.ENOTSUP):
            raise
        link = None
        try:
            fcntl.ioctl(perf_fd, PERF_EVENT_IOC_SET_BPF, prog_fd)
        except OSError as err:
            raise BpfError(f"PERF_EVENT_IOC_SET_BPF prog fd {prog_fd} on perf fd {perf_fd}",
                           err.errno or errno_mod.EINVAL) from None
    try:
        fcntl.ioctl(perf_fd, PERF_EVENT_IOC_ENABLE, 0)
    except OSError as err:
        if link is not None:
            os.close(link)
        raise BpfError(f"PERF_EVENT_IOC_ENABLE perf fd {perf_fd}", err.errno or errno_mod.EINVAL) from None
    return link
