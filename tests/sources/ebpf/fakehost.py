"""Test helper: a HostView answering from dicts (a host whose processes may be gone)."""

from __future__ import annotations

import attrs

from edr.sources.ebpf.host import SocketInfo


@attrs.define
class FakeHost:
    cwds: dict[int, str] = attrs.Factory(dict)
    fds: dict[tuple[int, int], str] = attrs.Factory(dict)
    exes: dict[int, str] = attrs.Factory(dict)
    euids: dict[int, int] = attrs.Factory(dict)
    cgroups: dict[int, str] = attrs.Factory(dict)
    sockets: dict[tuple[int, int], SocketInfo] = attrs.Factory(dict)
    links: dict[str, str] = attrs.Factory(dict)
    routes: dict[str, str] = attrs.Factory(dict)
    starts: dict[int, int] = attrs.Factory(dict)
    births: dict[str, int] = attrs.Factory(dict)
    special: set[str] = attrs.Factory(set)
    calls: list[str] = attrs.Factory(list)
    start_calls: list[int] = attrs.Factory(list)

    def cwd(self, pid: int) -> str | None:
        self.calls.append(f"cwd {pid}")
        return self.cwds.get(pid)

    def fd_path(self, pid: int, fd: int) -> str | None:
        return self.fds.get((pid, fd))

    def exe(self, pid: int) -> str | None:
        return self.exes.get(pid)

    def euid(self, pid: int, uid: int) -> int | None:
        self.calls.append(f"euid {pid}")
        return self.euids.get(pid)

    def cgroup_path(self, pid: int, cgroup_id: int) -> str | None:
        return self.cgroups.get(cgroup_id)

    def socket_info(self, pid: int, fd: int) -> SocketInfo | None:
        self.calls.append(f"socket {pid} {fd}")
        return self.sockets.get((pid, fd))

    def realpath(self, path: str) -> str:
        return self.links.get(path, path)

    def route_source(self, destination: str) -> str | None:
        return self.routes.get(destination)

    def start_ticks(self, pid: int) -> int | None:
        self.start_calls.append(pid)
        return self.starts.get(pid)

    def birth_boot_ns(self, path: str) -> int | None:
        return self.births.get(path)

    def special_file(self, path: str) -> bool:
        return path in self.special
