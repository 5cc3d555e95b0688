"""The sensors' preflight checks as structured probes: what the doctor reads, with `edr run`'s messages unchanged."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from edr import agent
from edr.sources.ebpf import loader
from edr.sources.ebpf.errors import SensorUnavailable
from edr.sources.etw import preflight as etw_preflight
from tests.conftest import REPO

RELEASE = os.uname().release


def test_privileges_probe_and_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(loader, "_effective_caps", lambda: 0)
    probe = loader.probe_privileges()
    assert not probe.ok and probe.found == "uid 1000 without CAP_BPF and CAP_PERFMON"
    with pytest.raises(SensorUnavailable) as raised:
        loader.check_privileges()
    assert str(raised.value) == ("the eBPF sensor needs root (or CAP_BPF and CAP_PERFMON): run as root, "
                                 "e.g. `sudo edr run`")
    monkeypatch.setattr(loader, "_effective_caps", lambda: (1 << loader.CAP_BPF) | (1 << loader.CAP_PERFMON))
    assert loader.probe_privileges() == (
        "privileges", True, "uid 1000 with CAP_BPF and CAP_PERFMON", "", "")


def test_bcc_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(name: str) -> None:
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(loader.importlib, "import_module", fail)
    probe = loader.probe_bcc()
    assert not probe.ok
    assert probe.message == ("bcc is not importable (No module named 'bcc'): install it with `apt install "
                             "python3-bpfcc` and use a virtualenv created with --system-site-packages (or run "
                             "scripts/setup_host.sh)")
    with pytest.raises(SensorUnavailable, match=r"^bcc is not importable \(No module named 'bcc'\): install"):
        loader.import_bcc()


def test_headers_tracefs_btf_and_kernel_probes(tmp_path: Path) -> None:
    headers = loader.probe_kernel_headers("0.0.0-no-such-kernel")
    if not Path("/sys/kernel/kheaders.tar.xz").exists():
        assert not headers.ok and headers.message == (
            "no usable kernel headers for 0.0.0-no-such-kernel (/lib/modules/0.0.0-no-such-kernel/build/include "
            "is missing): run scripts/setup_host.sh as root (installs linux-headers and links them), or "
            "`modprobe kheaders`")
    down = loader.probe_tracefs()  # the default roots: the message names /sys/kernel/tracing
    if not down.ok:
        assert down.message.startswith("tracefs is not mounted (no /sys/kernel/tracing/events/syscalls): ")
    empty = loader.probe_tracefs((str(tmp_path / "a"), str(tmp_path / "b")))
    assert not empty.ok and empty.found == "not mounted"
    assert empty.message == (f"tracefs is not mounted (no {tmp_path / 'a'}/events/syscalls): `mount -t tracefs "
                             "nodev /sys/kernel/tracing` (scripts/setup_host.sh does it); the kernel also needs "
                             "CONFIG_FTRACE_SYSCALLS")
    (tmp_path / "b" / "events" / "syscalls").mkdir(parents=True)
    assert loader.probe_tracefs((str(tmp_path / "a"), str(tmp_path / "b"))).found == f"mounted at {tmp_path / 'b'}"
    assert not loader.probe_btf(str(tmp_path / "vmlinux")).ok
    (tmp_path / "vmlinux").write_bytes(b"\x9f\xeb")
    assert loader.probe_btf(str(tmp_path / "vmlinux")).ok
    assert loader.kernel_version("6.18.44-fc-v1045") == (6, 18) and loader.kernel_version("x") is None
    old = loader.probe_kernel_version("5.4.0-150-generic")
    assert not old.ok and "predates BPF ring buffers (5.8)" in old.problem
    assert loader.probe_kernel_version("5.8.0").ok and not loader.probe_kernel_version("garbage").ok


def test_agent_preflight_keeps_its_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent.os, "geteuid", lambda: 1000)
    monkeypatch.setitem(sys.modules, "bcc", None)  # import bcc -> ImportError
    real_isdir = os.path.isdir
    monkeypatch.setattr(agent.os.path, "isdir", lambda p: False if str(p).startswith(("/lib/modules", "/sys"))
                        else real_isdir(p))
    probes = agent.linux_preflight()
    assert [p.name for p in probes] == ["privileges", "bcc", "kernel headers", "tracefs"]
    assert [p.message for p in probes] == [
        "edr run needs root (or CAP_BPF and CAP_PERFMON) to load eBPF programs: run it with sudo",
        "bcc is not importable: install it with `apt-get install python3-bpfcc` and use a venv made with "
        "--system-site-packages (make run does both; see scripts/setup_host.sh)",
        f"no kernel headers at /lib/modules/{RELEASE}/build: run scripts/setup_host.sh (installs "
        "linux-headers-amd64 and links it for this kernel)",
        "tracefs is not mounted: mount -t tracefs nodev /sys/kernel/tracing (scripts/setup_host.sh does it)",
    ]
    # preflight_linux: the first failing one, as before
    assert agent.preflight_linux() == probes[0].message
    monkeypatch.setattr(agent.os, "geteuid", lambda: 0)
    assert agent.preflight_linux() == probes[1].message
    # the loader checks the same topics, in the same order
    assert [p.name for p in loader.preflight_probes()] == [p.name for p in probes]


def test_etw_probes_are_import_safe_off_windows() -> None:
    if sys.platform == "win32":
        pytest.skip("off Windows only")
    trace = etw_preflight.probe_pywintrace()
    assert not trace.ok and trace.problem.startswith("pywintrace (the etw module) cannot be loaded")
    assert not etw_preflight.probe_pywin32().ok
    admin = etw_preflight.probe_admin()
    assert not admin.ok and admin.found == "not Windows"


def test_tracefs_that_cannot_be_read_is_a_failed_probe_not_a_traceback() -> None:
    """tracefs is root's (mode 0700): a user with CAP_BPF and CAP_PERFMON but not root used to get a
    PermissionError traceback from check_tracefs (Path.is_dir lets EACCES through) instead of the reason."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to look as another user")
    top = Path(tempfile.mkdtemp(prefix="edr-tracefs-"))
    try:
        os.chmod(top, 0o755)
        tracing = top / "tracing"
        (tracing / "events" / "syscalls").mkdir(parents=True)
        os.chmod(tracing, 0o700)
        script = ("from edr.sources.ebpf import loader\n"
                  f"p = loader.probe_tracefs(({str(tracing)!r},))\n"
                  "print(p.ok, p.found, '|', p.message, sep='|')\n"
                  "try:\n"
                  f"    loader.probe_tracefs(({str(tracing)!r},)).require()\n"
                  "except loader.SensorUnavailable as exc:\n"
                  "    print('unavailable', exc)\n")
        done = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable,
                               "-c", script], capture_output=True, text=True, timeout=60, cwd="/",
                              env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    finally:
        shutil.rmtree(top)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == (f"False|not readable|||tracefs at {tracing} cannot be read by uid 65534 (Permission denied): "
                     "run the agent as root (tracefs is root's, mode 0700)")
    assert second.startswith(f"unavailable tracefs at {tracing} cannot be read by uid 65534")
