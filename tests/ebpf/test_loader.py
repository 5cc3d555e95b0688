"""Pre-flight checks say what is missing and how to fix it; compile flags are validated."""

from __future__ import annotations

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
