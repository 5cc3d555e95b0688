"""Pre-flight checks say what is missing and how to fix it; compile flags are validated."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edr.sources.ebpf import loader
from edr.sources.ebpf.errors import SensorUnavailable
from edr.sources.ebpf.sensor import EbpfSensor


def test_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(loader, "_effective_caps", lambda: 0)
    with pytest.raises(SensorUnavailable, match="needs root"):
        loader.check_privileges()
    # CAP_BPF + CAP_PERFMON are enough
    monkeypatch.setattr(loader, "_effective_caps", lambda: (1 << loader.CAP_BPF) | (1 << loader.CAP_PERFMON))
    loader.check_privileges()


def test_bcc_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(name: str) -> None:
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(loader.importlib, "import_module", fail)
    with pytest.raises(SensorUnavailable, match=r"apt install python3-bpfcc.*--system-site-packages"):
        loader.import_bcc()


def test_no_kernel_headers() -> None:
    if Path("/sys/kernel/kheaders.tar.xz").exists():
        pytest.skip("the kheaders module provides headers for any release")
    with pytest.raises(SensorUnavailable, match=r"scripts/setup_host.sh"):
        loader.check_kernel_headers("0.0.0-no-such-kernel")


def test_open_reports_a_failing_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(loader, "_effective_caps", lambda: 0)
    with pytest.raises(SensorUnavailable):
        EbpfSensor().open()


def test_flags() -> None:
    flags = loader.cflags(frozenset({"process", "dns"}), 32, 4096, 48)
    assert "-DFAM_PROCESS" in flags and "-DFAM_DNS" in flags and "-DFAM_FILE" not in flags
    assert "-DRB_PAGES_DNS=64" in flags and "-DRB_PAGES_PROCESS=256" in flags  # power of two; 4x for process
    assert "-DMAX_ARGS=32" in flags and "-DARGS_SIZE=4096" in flags
    for bad in ({"families": frozenset({"registry"})}, {"max_args": 0}, {"max_arg_bytes": 1 << 20}):
        kw = {"families": frozenset({"process"}), "max_args": 32, "max_arg_bytes": 4096, "page_count": 64} | bad
        with pytest.raises(ValueError):
            loader.cflags(**kw)  # type: ignore[arg-type]


class _FakeLoad:
    """LoadedObject.load_program's shape, refusing the program named ``refuse``."""

    def __init__(self, refuse: str) -> None:
        self.refuse = refuse
        self.loaded: list[tuple[str, int, int]] = []

    def __call__(self, name: str, prog_type: int, attach_type: int) -> int:
        if name == self.refuse:
            raise SensorUnavailable(f"the kernel refused {name} (BPF_PROG_LOAD: Permission denied)")
        self.loaded.append((name, prog_type, attach_type))
        return 100 + len(self.loaded)


class _FakeLink:
    """bpf_syscall.link_create's shape; each link an fd."""

    def __init__(self) -> None:
        self.links: list[int] = []

    def __call__(self, prog_fd: int, target_fd: int, attach_type: int) -> int:
        fd = os.open(os.devnull, os.O_RDONLY)
        self.links.append(fd)
        return fd


def test_cgroup_hooks_refused_midway_leave_nothing_attached(tmp_path: Path) -> None:
    """A hook the kernel refuses after others were linked: the links made so far are closed (detached)."""
    link = _FakeLink()
    load = _FakeLoad(refuse="edr_udp_egress")
    with pytest.raises(SensorUnavailable, match="the kernel refused edr_udp_egress"):
        loader.attach_cgroup_hooks(load, str(tmp_path), link)
    assert [name for name, _t, _a in load.loaded] == ["edr_udp_connect4", "edr_udp_connect6",
                                                      "edr_udp_sendmsg4", "edr_udp_sendmsg6"]
    assert len(link.links) == 4
    for fd in link.links:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_cgroup_hooks_linked_with_their_attach_types(tmp_path: Path) -> None:
    link = _FakeLink()
    load = _FakeLoad(refuse="")
    links = loader.attach_cgroup_hooks(load, str(tmp_path), link)
    try:
        assert links == link.links and len(links) == 6
        # program type and expected attach type as the kernel's uAPI numbers them
        assert [(t, a) for _n, t, a in load.loaded] == [(18, 10), (18, 11), (18, 14), (18, 15), (8, 1), (9, 34)]
    finally:
        for fd in links:
            os.close(fd)


def test_no_cgroup_v2_says_so() -> None:
    with pytest.raises(SensorUnavailable, match="no cgroup v2 hierarchy is mounted"):
        loader.attach_cgroup_hooks(_FakeLoad(refuse=""), "", _FakeLink())
    with pytest.raises(SensorUnavailable, match="cannot open the cgroup v2 root /nonexistent"):
        loader.attach_cgroup_hooks(_FakeLoad(refuse=""), "/nonexistent", _FakeLink())
