"""Compile ``bpf/sensor.c`` with bcc in a short-lived child and hand the result back as data.

``python -m edr.sources.ebpf.compile`` reads a JSON request (``{"cflags":
[...], "key": "..."}``) on stdin, compiles the sensor with bcc exactly as
the agent used to (``loader.cflags``), and writes a
:class:`~edr.sources.ebpf.objfile.CompiledObject` (JSON) on stdout.  It loads
and attaches nothing: bcc's constructor would load every ``tracepoint__*``
function and attach it, and detaching 90 tracepoints when the child exits
costs seconds of kernel time (see :meth:`EbpfSensor.close`).  The maps bcc
creates while compiling (their descriptors are baked into the instructions)
are only read back from the kernel and die with the child.

Why a child: ``import bcc`` maps libbcc, LLVM and clang into the process
(62 MiB of RSS before compiling anything, 130 MiB after), and the agent keeps
its RSS for its whole life.  The child pays for it and exits; the agent
(:func:`compile_in_child`) only reads its output.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

from edr.sources.ebpf import bpf_syscall, kernel_btf, loader, objfile
from edr.sources.ebpf.errors import SensorUnavailable

#: A compile takes 3 s here; a child that takes this long is stuck.
CHILD_TIMEOUT_S = 300.0
#: Exit status of a child that ran but could not build the object (its stderr says why).
FAILED = 3


#: Program type and expected attach type of each function that is not a tracepoint program.
_HOOKS: dict[str, tuple[int, int]] = {
    name: (bpf_syscall.PROG_TYPES[prog_type], attach) for name, prog_type, attach in loader.CGROUP_HOOKS}


def build(cflags: list[str], key: str) -> objfile.CompiledObject:
    """Compile the sensor with bcc in this process, attach nothing, and extract it (imports bcc).

    The running kernel's struct offsets the sensor needs (:func:`kernel_btf.euid_cflags`) are
    added here rather than by the agent: reading them takes a tenth of a second, and a cached
    object needs no compile, so only a compile pays.  The cache key already names the kernel
    build they were read from.
    """
    cflags = [*cflags, *kernel_btf.euid_cflags()]
    bcc = loader.import_bcc()
    lib = bcc.libbcc.lib
    lib.bpf_table_name.restype = ctypes.c_char_p   # libbcc.py leaves it an int
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_ulonglong]

    class Unattached(bcc.BPF):  # type: ignore[misc,name-defined]
        """bcc's BPF, without loading and attaching the ``tracepoint__*`` functions."""

        def _trace_autoload(self) -> None:
            pass

    try:
        bpf = Unattached(text=loader.SOURCE_PATH.read_bytes(), cflags=cflags)
    except Exception as exc:
        raise SensorUnavailable(
            f"the BPF programs failed to compile or load ({exc}); check the kernel headers "
            "(scripts/setup_host.sh) and that the kernel has BPF and syscall tracepoints") from exc
    module = bpf.module
    maps: list[objfile.MapSpec] = []
    fd_names: dict[int, str] = {}
    btf_ids: set[int] = set()
    for i in range(lib.bpf_num_tables(module)):
        name = lib.bpf_table_name(module, i).decode()
        fd = lib.bpf_table_fd_id(module, i)
        info = bpf_syscall.map_info(fd)
        if info.btf_id:
            btf_ids.add(info.btf_id)
        maps.append(objfile.MapSpec(
            name=name, type=info.type, key_size=info.key_size, value_size=info.value_size,
            max_entries=info.max_entries, flags=info.flags,
            btf_key_type_id=info.btf_key_type_id if info.btf_id else 0,
            btf_value_type_id=info.btf_value_type_id if info.btf_id else 0))
        fd_names[fd] = name
    if len(btf_ids) > 1:
        raise objfile.ObjectError(f"the maps refer to {len(btf_ids)} BTF objects; one was expected")
    btf = _btf_data(btf_ids.pop()) if btf_ids else b""
    license_ = lib.bpf_module_license(module).decode()
    programs: list[objfile.ProgramSpec] = []
    for i in range(lib.bpf_num_functions(module)):
        name = lib.bpf_function_name(module, i).decode()
        tracepoint = objfile.tracepoint_of(name)
        if tracepoint:
            prog_type, attach = bpf_syscall.BPF_PROG_TYPE_TRACEPOINT, 0
        elif name in _HOOKS:
            prog_type, attach = _HOOKS[name]
        else:
            continue  # a function nothing loads (bcc lists every non-static function)
        raw = ctypes.string_at(lib.bpf_function_start(module, name.encode()),
                               lib.bpf_function_size(module, name.encode()))
        insns, relocations = objfile.relocate(raw, fd_names, name)
        programs.append(objfile.ProgramSpec(name=name, type=prog_type, license=license_, insns=insns,
                                            relocations=relocations, expected_attach_type=attach,
                                            tracepoint=tracepoint))
    obj = objfile.CompiledObject(version=objfile.FORMAT_VERSION, key=key, maps=maps, programs=programs, btf=btf)
    objfile.check(obj)
    return obj


def _btf_data(btf_id: int) -> bytes:
    """The raw BTF bcc loaded for the maps.

    Read through the descriptor bcc holds (the only BTF object open in this
    child): ``BPF_BTF_GET_FD_BY_ID`` needs CAP_SYS_ADMIN, which the agent's
    systemd unit does not keep, while reading an object through a
    descriptor one holds needs nothing more.
    """
    held = [int(fd) for fd in os.listdir("/proc/self/fd") if _is_btf(int(fd))]
    if len(held) == 1:
        return bpf_syscall.btf_data(held[0])
    fd = bpf_syscall.btf_get_fd_by_id(btf_id)   # several (or no) BTF objects open: ask by id
    try:
        return bpf_syscall.btf_data(fd)
    finally:
        os.close(fd)


def _is_btf(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:btf"
    except OSError:
        return False


def compile_in_child(cflags: list[str], key: str, *, timeout: float = CHILD_TIMEOUT_S) -> objfile.CompiledObject:
    """Run ``python -m edr.sources.ebpf.compile`` and decode what it prints.

    Blocks for the compile (seconds).  Raises :class:`SensorUnavailable`
    with the child's own message when it fails (bcc missing, kernel headers
    missing, a compile error), and when what it printed is not a valid object.
    """
    request = json.dumps({"cflags": cflags, "key": key}).encode()
    try:
        # -P: ``-m`` would put the working directory first on the child's sys.path, so an ``edr``
        # package in the directory root started the agent from would run as root
        done = subprocess.run([sys.executable, "-P", "-m", "edr.sources.ebpf.compile"], input=request,
                              capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SensorUnavailable(f"compiling the BPF programs took more than {timeout:.0f} s") from exc
    except OSError as exc:
        raise SensorUnavailable(f"cannot start the BPF compile child {sys.executable}: {exc}") from exc
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        raise SensorUnavailable(detail[-1] if done.returncode == FAILED and detail else
                                f"the BPF compile child exited with status {done.returncode}: "
                                + "\n".join(detail[-20:]))
    try:
        return objfile.decode(done.stdout)
    except objfile.ObjectError as exc:
        raise SensorUnavailable(f"the BPF compile child printed an unusable object: {exc}") from exc


def main() -> int:
    """The child: request on stdin, object on stdout, a one-line reason on stderr (exit 3) when it fails."""
    try:
        request = json.loads(sys.stdin.buffer.read())
        cflags, key = request["cflags"], request["key"]
        if not (isinstance(cflags, list) and all(isinstance(f, str) for f in cflags) and isinstance(key, str)):
            raise ValueError("cflags must be a list of strings and key a string")
    except (ValueError, KeyError, TypeError) as exc:
        print(f"bad compile request on stdin: {exc}", file=sys.stderr)
        return 2
    try:
        obj = build(cflags, key)
    except (SensorUnavailable, objfile.ObjectError, OSError) as exc:
        print(str(exc).replace("\n", " "), file=sys.stderr)
        return FAILED
    sys.stdout.buffer.write(objfile.encode(obj))
    sys.stdout.flush()
    # skip bcc's atexit cleanup and the interpreter's teardown of LLVM: nothing is attached
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
