"""The real sensor compiled in a child and cached, loaded without bcc, and detached at close.

Root and bcc: each test compiles sensor.c (seconds) or loads it into the kernel.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edr.sources.ebpf import bpf_syscall, compile, loader, objcache
from edr.sources.ebpf.records import PROCESS
from edr.sources.ebpf.ringbuf import RingBuffer
from edr.sources.ebpf.sensor import EbpfSensor
from tests.sources.ebpf.conftest import _skip_reason

pytestmark = pytest.mark.root

FLAGS = loader.cflags(frozenset({PROCESS}), 32, 4096, 64)


@pytest.fixture(autouse=True)
def _root_and_bcc() -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """The flags of every compile in a child this test causes (the real compile runs)."""
    calls: list[list[str]] = []
    real = compile.compile_in_child

    def counting(cflags: list[str], key: str, **kw: float) -> object:
        calls.append(cflags)
        return real(cflags, key, **kw)

    monkeypatch.setattr(compile, "compile_in_child", counting)
    yield calls


_OPEN_SCRIPT = """
import json, resource, sys, time
from edr.sources.ebpf.sensor import EbpfSensor
t = time.monotonic()
sensor = EbpfSensor(families={"process"}, cache_dir=sys.argv[1])
sensor.open()
opened = time.monotonic() - t
sensor.close()
print(json.dumps({"hit": sensor.cache_hit, "bcc": "bcc" in sys.modules,
                  "llvm": any("LLVM" in line or "libbcc" in line for line in open("/proc/self/maps")),
                  "open_s": opened, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _open_in_a_process(cache: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", _OPEN_SCRIPT, cache], capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode()
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_a_miss_compiles_in_a_child_and_the_agent_never_imports_bcc(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cold = _open_in_a_process(str(cache))
    assert cold["hit"] is False and cold["bcc"] is False and cold["llvm"] is False
    stored = cache / objcache.CACHE_NAME
    assert stored.stat().st_mode & 0o777 == 0o600 and stored.stat().st_uid == os.geteuid()
    warm = _open_in_a_process(str(cache))
    assert warm["hit"] is True and warm["bcc"] is False and warm["llvm"] is False
    # without a cache directory: a child compiles at every start, bcc still stays out
    uncached = _open_in_a_process("")
    assert uncached["hit"] is False and uncached["bcc"] is False and uncached["llvm"] is False


def test_compiled_and_loaded_with_only_the_capabilities_the_unit_keeps(tmp_path: Path) -> None:
    """The systemd unit keeps CAP_BPF and CAP_PERFMON but not CAP_SYS_ADMIN: the compile child must read
    the maps' BTF through the descriptor bcc holds (BPF_BTF_GET_FD_BY_ID needs CAP_SYS_ADMIN)."""
    from edr.service.systemd_unit import CAPABILITIES

    keep = ",".join("+" + name.removeprefix("CAP_").lower() for name, _why in CAPABILITIES)
    done = subprocess.run(["setpriv", f"--bounding-set=-all,{keep}", "--inh-caps=-all", sys.executable, "-c",
                           _OPEN_SCRIPT, str(tmp_path / "cache")], capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout)
    assert result["hit"] is False and result["bcc"] is False
    stored = objcache.load(str(tmp_path / "cache"), objcache.cache_key(loader.SOURCE_PATH.read_bytes(), FLAGS))
    assert stored is not None and stored.btf


def test_a_second_open_is_a_hit_without_a_child(tmp_path: Path, compiles: list[list[str]]) -> None:
    cache = str(tmp_path / "cache")
    _obj, hit = objcache.compiled_object(FLAGS, cache)
    assert not hit and compiles == [FLAGS]
    sensor = EbpfSensor(families={PROCESS}, cache_dir=cache)
    with sensor:
        assert sensor.cache_hit
    assert compiles == [FLAGS]
    assert objcache.status(cache, FLAGS)[0]


def _damage_corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _damage_symlink(path: Path) -> None:
    elsewhere = path.with_name("planted.json")
    os.rename(path, elsewhere)
    path.symlink_to(elsewhere)


def _damage_foreign(path: Path) -> None:
    os.chown(path, 65534, 65534)


@pytest.mark.parametrize(("damage", "why"), [
    (_damage_corrupt, "SHA-256 does not match"),
    (_damage_symlink, "symbolic link"),
    (_damage_foreign, "not by root or this agent's user"),
])
def test_an_untrusted_cache_file_is_refused_naming_it_and_recompiled(
        tmp_path: Path, compiles: list[list[str]], caplog: pytest.LogCaptureFixture,
        damage: object, why: str) -> None:
    cache = str(tmp_path / "cache")
    objcache.compiled_object(FLAGS, cache)
    path = Path(cache) / objcache.CACHE_NAME
    damage(path)  # type: ignore[operator]
    with caplog.at_level(logging.INFO, logger=objcache.log.name):
        obj, hit = objcache.compiled_object(FLAGS, cache)
    assert not hit and len(compiles) == 2
    assert f"ignoring the compiled BPF sensor {path}: " in caplog.text and why in caplog.text
    assert "compiling it again" in caplog.text
    # the new build replaced what was there (a planted link is replaced, not written through)
    assert path.is_file() and not path.is_symlink() and path.stat().st_uid == os.geteuid()
    assert objcache.load(cache, obj.key) == obj


def test_a_changed_flag_is_a_miss_naming_the_file_and_recompiles(
        tmp_path: Path, compiles: list[list[str]], caplog: pytest.LogCaptureFixture) -> None:
    cache = str(tmp_path / "cache")
    objcache.compiled_object(FLAGS, cache)
    other = loader.cflags(frozenset({PROCESS}), 31, 4096, 64)
    with caplog.at_level(logging.INFO, logger=objcache.log.name):
        obj, hit = objcache.compiled_object(other, cache)
    assert not hit and compiles == [FLAGS, other]
    assert f"{Path(cache) / objcache.CACHE_NAME} was built for other sources, flags, kernel or bcc" in caplog.text
    assert objcache.compiled_object(other, cache) == (obj, True)


def _our_bpf_objects() -> dict[str, set[int]]:
    """The ids of the BPF programs and links this process holds descriptors of (from /proc/self/fdinfo)."""
    found: dict[str, set[int]] = {"prog_id": set(), "link_id": set()}
    for fd in os.listdir("/proc/self/fdinfo"):
        try:
            lines = Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
        except OSError:
            continue
        info = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
        if "link_id" in info:
            found["link_id"].add(int(info["link_id"]))
        elif "prog_id" in info:
            found["prog_id"].add(int(info["prog_id"]))
    return found


def test_after_close_nothing_of_ours_is_attached_and_an_exec_writes_nothing(tmp_path: Path) -> None:
    before = _our_bpf_objects()
    sensor = EbpfSensor(families={PROCESS}, cache_dir=str(tmp_path / "cache"), batch_window_ms=0)
    sensor.open()
    try:
        obj = sensor._obj
        assert obj is not None
        ours = {bpf_syscall.prog_info(fd).id for fd in obj.programs.values()}
        assert len(obj.links) == len(obj.perf_fds) == sum(1 for p in obj.obj.programs if p.tracepoint)
        assert ours <= _our_bpf_objects()["prog_id"]
        # our own view of the process ring, kept past close: the map lives while a descriptor does
        ring_fd = os.dup(obj.maps["rb_process"])
        ring = RingBuffer(ring_fd, obj.obj.map("rb_process").max_entries)
        marker = f"edr-{uuid.uuid4().hex}".encode()
        subprocess.run(["/bin/true", marker], check=True)
        seen: list[bytes] = []
        deadline = time.monotonic() + 5
        while not any(marker in rec for rec in seen) and time.monotonic() < deadline:
            ring.consume(seen.append)
            time.sleep(0.01)
        assert any(marker in rec for rec in seen), "the live program wrote no exec record"
    finally:
        started = time.monotonic()
        sensor.close()
        took = time.monotonic() - started
    try:
        assert took < 1.0, f"close took {took:.2f} s"
        after = _our_bpf_objects()
        assert not ours & after["prog_id"] and after["link_id"] <= before["link_id"]
        seen.clear()
        ring.consume(seen.append)   # whatever was written before close
        late = f"edr-{uuid.uuid4().hex}".encode()
        subprocess.run(["/bin/true", late], check=True)
        time.sleep(0.2)
        ring.consume(seen.append)
        assert not any(late in rec for rec in seen), "a program of the closed sensor still runs"
    finally:
        ring.close()
        os.close(ring_fd)


def test_a_cached_build_the_kernel_refuses_is_rebuilt(
        tmp_path: Path, compiles: list[list[str]], caplog: pytest.LogCaptureFixture) -> None:
    """Same key, yet a program the verifier refuses (``exit`` with r0 unset): compiled again, not trusted again."""
    import msgspec

    cache = str(tmp_path / "cache")
    good, _hit = objcache.compiled_object(FLAGS, cache)
    victim = next(p for p in good.programs if p.tracepoint)
    refused = msgspec.structs.replace(victim, insns=bytes([0x95, 0, 0, 0, 0, 0, 0, 0]), relocations=[])
    bad = msgspec.structs.replace(good, programs=[refused if p is victim else p for p in good.programs])
    objcache.store(cache, bad)
    assert objcache.load(cache, good.key) == bad
    sensor = EbpfSensor(families={PROCESS}, cache_dir=cache)
    with caplog.at_level(logging.WARNING, logger="edr.sources.ebpf.sensor"), sensor:
        assert not sensor.cache_hit and sensor._obj is not None
    assert len(compiles) == 2
    assert f"the kernel refused the cached build of the sensor in {cache}" in caplog.text
    assert victim.name in caplog.text and "R0 !read_ok" in caplog.text
    assert objcache.load(cache, good.key) == good


def test_edr_run_needs_no_kernel_headers_with_a_matching_cached_build(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edr import agent
    from edr.config import SensorConfig

    sensor = SensorConfig(families=["process"])
    cache = str(tmp_path / "cache")
    real_isdir = os.path.isdir

    def no_headers() -> None:
        monkeypatch.setattr(agent.os.path, "isdir",
                            lambda p: False if str(p).startswith("/lib/modules") else real_isdir(p))

    no_headers()
    headers = next(p.message for p in agent.linux_preflight() if p.name == "kernel headers")
    # no cached build yet: the headers are needed, and said so
    assert agent.preflight_linux(sensor, cache) == headers
    monkeypatch.undo()
    flags = loader.cflags(frozenset({PROCESS}), sensor.max_args, sensor.max_arg_bytes, sensor.page_count)
    objcache.compiled_object(flags, cache)
    no_headers()
    assert agent.preflight_linux(sensor, cache) is None
    # another configuration has no build, nor has a run without a cache directory
    assert agent.preflight_linux(SensorConfig(families=["process"], max_args=16), cache) == headers
    assert agent.preflight_linux(sensor, "") == headers
    # bcc's version is part of the build's identity: without bcc nothing matches
    monkeypatch.setattr(agent.importlib.util, "find_spec", lambda name, *a: None)
    assert agent.preflight_linux(sensor, cache) == next(
        p.message for p in agent.linux_preflight() if p.name == "bcc")


def test_the_compile_child_does_not_import_edr_from_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # an "edr" package where root happens to start the agent (e.g. a user's /tmp)
    planted = tmp_path / "cwd" / "edr"
    planted.mkdir(parents=True)
    marker = tmp_path / "ran-as-root"
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(planted.parent)
    obj = compile.compile_in_child(FLAGS, "k")
    assert obj.programs and not marker.exists()


def test_the_perf_event_releaser_does_not_come_from_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edr.sources.ebpf import objload

    fake = tmp_path / "bin"
    fake.mkdir()
    marker = tmp_path / "ran-as-root"
    (fake / "cat").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (fake / "cat").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    read, write = os.pipe()
    os.close(write)
    child = objload.release_in_child([read])
    assert child is not None and child.wait(timeout=10) == 0
    assert not marker.exists()
