"""Load a compiled sensor into the kernel without bcc: maps, programs, tracepoint attachments.

:class:`LoadedObject` owns every descriptor it makes (BTF, maps, programs,
perf events, links) and :meth:`LoadedObject.close` releases them in the
order that stops the programs at once and lets the agent exit quickly (see
there).  Blocking: each call is a system call, loading a program runs the
kernel's verifier on it (milliseconds each).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

from edr.sources.ebpf import bpf_syscall as sys_bpf
from edr.sources.ebpf import loader, objfile
from edr.sources.ebpf.errors import SensorUnavailable

#: Descriptors closed at once at most (threads of :func:`close_concurrently`).
CLOSE_THREADS = 32


def close_concurrently(fds: list[int]) -> None:
    """Close ``fds`` from several threads at once; returns when all are closed.

    Why: closing the BPF link of a tracepoint program waits until the
    kernel has retired the program from the tracepoint (~35 ms each here,
    Linux 6.18).  One after the other, the sensor's 91 links took 3.3 s;
    closed concurrently the waits overlap: 0.10-0.15 s on this machine,
    also under a load average of 25.  ``os.close`` releases the
    GIL, so plain threads are enough.
    """
    if len(fds) <= 1:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        return

    def close(fd: int) -> None:
        with contextlib.suppress(OSError):
            os.close(fd)

    with ThreadPoolExecutor(max_workers=min(CLOSE_THREADS, len(fds)), thread_name_prefix="edr-bpf-close") as pool:
        list(pool.map(close, fds))


#: Where the releasing child's program is looked for (coreutils' cat), in order.
CAT_PATHS: tuple[str, ...] = ("/usr/bin/cat", "/bin/cat")
#: The children that took perf event descriptors at a close and may still be exiting (reaped later).
_releasers: list[subprocess.Popen[bytes]] = []


def release_in_child(fds: list[int]) -> subprocess.Popen[bytes] | None:
    """Hand ``fds`` to a child that exits once ours are closed; close ours; return without waiting.

    Why: the last close of a tracepoint's perf event unregisters the
    tracepoint, and the kernel serializes that (``event_mutex`` and a
    tracepoint RCU synchronization per event, ~38 ms each when no other
    process uses the tracepoint; concurrent closes do not help): 90 events,
    3.5 s.  Once the BPF links are closed none of our programs runs, so
    nothing is lost by letting another process pay for the unregistering.
    The child (``cat``) inherits the descriptors and keeps them until its
    stdin ends, which is after ours are closed here (so ours are never the
    last references, however the child is scheduled); the kernel tears the
    events down as the child exits, while or after the agent exits.  Nobody
    waits for it: a later call reaps it, or init once the agent has gone.
    (Under systemd the child is in the unit's cgroup: ``systemctl stop``
    returns once it has gone too, seconds after the agent itself exited.)
    None when there was nothing to hand over or the child could not be
    started (the descriptors are then closed here, slowly).
    """
    for done in [p for p in _releasers if p.poll() is not None]:
        _releasers.remove(done)
    if not fds:
        return None
    child: subprocess.Popen[bytes] | None = None
    try:
        # an absolute path: root does not run whatever "cat" comes first on an inherited PATH
        cat = next((path for path in CAT_PATHS if os.access(path, os.X_OK)), None)
        if cat is None:
            raise FileNotFoundError("no cat in " + ", ".join(CAT_PATHS))
        child = subprocess.Popen([cat], pass_fds=fds, close_fds=True, stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={})
        _releasers.append(child)
    except OSError:
        child = None
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    if child is not None and child.stdin is not None:
        child.stdin.close()
    return child


class LoadedObject:
    """A :class:`~edr.sources.ebpf.objfile.CompiledObject` made real: its maps, programs and attachments.

    ``maps`` maps each map's name to its descriptor; ``programs`` each
    loaded program's name to its descriptor.  Not thread-safe.
    """

    def __init__(self, obj: objfile.CompiledObject) -> None:
        self.obj = obj
        self.btf_fd = -1
        self.maps: dict[str, int] = {}
        self.programs: dict[str, int] = {}
        #: BPF links (tracepoints and cgroup hooks): closing one detaches its program at once
        self.links: list[int] = []
        self.perf_fds: list[int] = []
        #: a perf event holds its program itself (a kernel without perf links)
        self._perf_holds_program = False
        #: the child that took the perf events at the last close (see :func:`release_in_child`)
        self.releaser: subprocess.Popen[bytes] | None = None

    def create_maps(self) -> None:
        """Create every map (and the BTF object describing them); raises SensorUnavailable naming the map."""
        if self.obj.btf:
            try:
                self.btf_fd = sys_bpf.btf_load(self.obj.btf)
            except OSError as exc:
                raise SensorUnavailable(f"the kernel refused the sensor's BTF: {exc}") from exc
        for spec in self.obj.maps:
            btf = self.btf_fd if spec.btf_key_type_id or spec.btf_value_type_id else 0
            try:
                self.maps[spec.name] = sys_bpf.map_create(
                    spec.type, spec.key_size, spec.value_size, spec.max_entries, spec.flags, spec.name,
                    btf_fd=max(btf, 0), btf_key_type_id=spec.btf_key_type_id if btf > 0 else 0,
                    btf_value_type_id=spec.btf_value_type_id if btf > 0 else 0)
            except OSError as exc:
                raise SensorUnavailable(f"cannot create BPF map {spec.name}: {exc}") from exc

    def load_program(self, name: str, prog_type: int | None = None, attach_type: int | None = None) -> int:
        """Load program ``name`` with this object's map fds patched in; its fd (kept until :meth:`close`).

        ``prog_type`` and ``attach_type``, when given, must be what the
        object records (they are the caller's expectation, e.g.
        ``loader.CGROUP_HOOKS``).  Raises SensorUnavailable with the
        verifier's log when the kernel refuses it.
        """
        if name in self.programs:
            return self.programs[name]
        spec = next((p for p in self.obj.programs if p.name == name), None)
        if spec is None:
            raise SensorUnavailable(f"the compiled sensor has no program {name}")
        if (prog_type is not None and prog_type != spec.type) or (
                attach_type is not None and attach_type != spec.expected_attach_type):
            raise SensorUnavailable(f"the compiled sensor's {name} has program type {spec.type} and attach "
                                    f"type {spec.expected_attach_type}, not {prog_type} and {attach_type}")
        try:
            fd = sys_bpf.prog_load(spec.type, objfile.patch(spec, self.maps), spec.license,
                                   expected_attach_type=spec.expected_attach_type, name=name)
        except OSError as exc:
            raise SensorUnavailable(f"the kernel refused {name} ({exc})") from exc
        self.programs[name] = fd
        return fd

    def attach_tracepoints(self, roots: tuple[str, ...] = loader.TRACEFS_ROOTS) -> int:
        """Load every tracepoint program and attach it (perf event on CPU 0 + BPF link); how many.

        One perf event per tracepoint is enough: the program is attached to
        the tracepoint and runs on every CPU.  Raises SensorUnavailable
        naming the program (what was attached so far stays, for close()).
        """
        count = 0
        for spec in self.obj.programs:
            if not spec.tracepoint:
                continue
            prog = self.load_program(spec.name)
            category, event = spec.tracepoint.split("/")
            try:
                perf = sys_bpf.perf_event_open_tracepoint(sys_bpf.tracepoint_id(category, event, roots))
            except OSError as exc:
                raise SensorUnavailable(f"cannot open tracepoint {category}:{event} for {spec.name}: {exc}") \
                    from exc
            self.perf_fds.append(perf)
            try:
                link = sys_bpf.attach_perf_event(prog, perf)
            except OSError as exc:
                raise SensorUnavailable(f"cannot attach {spec.name} to {category}:{event}: {exc}") from exc
            if link is None:   # the perf event holds the program (a kernel without perf links)
                self._perf_holds_program = True
            else:
                self.links.append(link)
            count += 1
        return count

    def close(self) -> None:
        """Detach and free everything; returns in about a tenth of a second.

        The links go first, all at once (:func:`close_concurrently`):
        closing a BPF link detaches its program, so once they are closed
        nothing of ours runs (no record is written, no map is touched).
        Then the perf events go to a child that exits
        (:func:`release_in_child`: unregistering 90 tracepoints is seconds
        of serialized kernel work that need not delay the agent), then the
        programs, the maps and the BTF.  On a kernel without perf links
        (before 5.15) a perf event holds its program, so the events are
        closed here (concurrently; slowly) to keep "nothing runs after
        close".
        """
        links, self.links = self.links, []
        close_concurrently(links)
        perf, self.perf_fds = self.perf_fds, []
        if self._perf_holds_program:
            close_concurrently(perf)
        else:
            self.releaser = release_in_child(perf)
        programs, self.programs = self.programs, {}
        maps, self.maps = self.maps, {}
        for fd in [*programs.values(), *maps.values()]:
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.btf_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.btf_fd)
            self.btf_fd = -1
