"""The compiled-sensor cache: what its key covers, and every file it must not trust refused naming the file.

These use a small hand-made object: no bcc, no kernel.  The live tests
(test_sensor_cache.py) compile the real sensor.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from edr.sources.ebpf import objcache, objfile
from tests.sources.ebpf.test_objfile import EXIT, MOV0, _object, _program, ld_map

SOURCE = b"TRACEPOINT_PROBE(syscalls, sys_enter_execve) {}\nTRACEPOINT_PROBE( sched , sched_process_exec ) {}\n"


def _tracefs(tmp_path: Path) -> Path:
    root = tmp_path / "tracing"
    for category, event in (("syscalls", "sys_enter_execve"), ("sched", "sched_process_exec")):
        (root / "events" / category / event).mkdir(parents=True)
        (root / "events" / category / event / "format").write_text(f"name: {event}\nfield:int a; offset:8;\n")
    return root


def _key(root: Path, **kw: object) -> str:
    args: dict[str, object] = {"release": "6.1.0", "version": "#1 SMP", "bcc": "0.26.0", "roots": (str(root),)}
    args.update(kw)
    source = args.pop("source", SOURCE)
    cflags = args.pop("cflags", ["-DMAX_ARGS=32"])
    return objcache.cache_key(source, cflags, **args)  # type: ignore[arg-type]


def test_the_key_covers_source_flags_kernel_bcc_and_tracepoint_layouts(tmp_path: Path) -> None:
    root = _tracefs(tmp_path)
    base = _key(root)
    assert _key(root) == base
    changed = [_key(root, source=SOURCE + b" "), _key(root, cflags=["-DMAX_ARGS=33"]),
               _key(root, release="6.1.1"), _key(root, version="#2 SMP"), _key(root, bcc="0.27.0")]
    assert base not in changed and len(set(changed)) == len(changed)
    fmt = root / "events" / "sched" / "sched_process_exec" / "format"
    fmt.write_text(fmt.read_text().replace("offset:8", "offset:16"))
    assert _key(root) != base
    assert objcache.source_tracepoints(SOURCE) == [("sched", "sched_process_exec"), ("syscalls", "sys_enter_execve")]


def test_bcc_version_is_read_without_importing_bcc() -> None:
    import sys

    had = "bcc" in sys.modules
    version = objcache.bcc_version()
    assert ("bcc" in sys.modules) == had
    try:
        import bcc  # noqa: F401  # the real one, when installed: same version
    except ImportError:
        assert version == ""
    else:
        assert version == sys.modules["bcc"].__version__


def _stored(tmp_path: Path) -> tuple[str, objfile.CompiledObject]:
    cache = tmp_path / "cache"
    insns, relocations = objfile.relocate(ld_map(1, 7) + MOV0 + EXIT, {7: "ignored"}, "p")
    obj = _object(_program(insns, relocations))
    objcache.store(str(cache), obj)
    return str(cache), obj


def test_stored_private_and_read_back(tmp_path: Path) -> None:
    cache, obj = _stored(tmp_path)
    path = Path(cache) / objcache.CACHE_NAME
    assert path.stat().st_mode & 0o777 == 0o600
    assert objcache.load(cache, obj.key) == obj


def test_another_key_is_a_miss_naming_the_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache, _obj = _stored(tmp_path)
    with caplog.at_level(logging.INFO, logger=objcache.log.name):
        assert objcache.load(cache, "other") is None
    assert f"{Path(cache) / objcache.CACHE_NAME} was built for other sources, flags, kernel or bcc" in caplog.text


def test_absent_cache_is_quiet(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=objcache.log.name):
        assert objcache.load(str(tmp_path / "nothing"), "k") is None
    assert caplog.text == ""


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped", "bad relocation"])
def test_a_corrupt_file_is_refused_naming_it(tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    cache, obj = _stored(tmp_path)
    path = Path(cache) / objcache.CACHE_NAME
    data = path.read_bytes()
    _header, _, payload = data.partition(b"\n")
    unknown = payload.replace(b'"ignored"]', b'"nope"]')
    bad = {"garbage": b"\x7fELF\x00\x01", "truncated": data[: len(data) // 2],
           "flipped": data.replace(b'"max_entries":256', b'"max_entries":257'),
           # consistent digest, inconsistent object: check() refuses it
           "bad relocation": objcache.pack(unknown)}[damage]
    assert bad != data
    path.write_bytes(bad)
    with caplog.at_level(logging.WARNING, logger=objcache.log.name):
        assert objcache.load(cache, obj.key) is None
    assert f"ignoring the compiled BPF sensor {path}: " in caplog.text and "compiling it again" in caplog.text


def test_a_symlink_is_refused_naming_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache, obj = _stored(tmp_path)
    path = Path(cache) / objcache.CACHE_NAME
    elsewhere = tmp_path / "elsewhere.json"
    os.rename(path, elsewhere)
    path.symlink_to(elsewhere)
    with caplog.at_level(logging.WARNING, logger=objcache.log.name):
        assert objcache.load(cache, obj.key) is None
    assert f"ignoring the compiled BPF sensor {path}: " in caplog.text and "symbolic link" in caplog.text


def test_a_file_others_may_write_is_refused_naming_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache, obj = _stored(tmp_path)
    path = Path(cache) / objcache.CACHE_NAME
    os.chmod(path, 0o666)
    with caplog.at_level(logging.WARNING, logger=objcache.log.name):
        assert objcache.load(cache, obj.key) is None
    assert f"ignoring the compiled BPF sensor {path}: " in caplog.text and "writable by" in caplog.text


def test_a_foreign_file_is_refused_naming_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root, to give the file to another user")
    cache, obj = _stored(tmp_path)
    path = Path(cache) / objcache.CACHE_NAME
    os.chown(path, 65534, 65534)
    with caplog.at_level(logging.WARNING, logger=objcache.log.name):
        assert objcache.load(cache, obj.key) is None
    assert f"ignoring the compiled BPF sensor {path}: " in caplog.text
    assert "not by root or this agent's user" in caplog.text


def test_no_cache_directory_reports_so(tmp_path: Path) -> None:
    hit, why = objcache.status("", ["-DMAX_ARGS=32"])
    assert not hit and "[sigma] cache_dir is empty" in why
    hit, why = objcache.status(str(tmp_path / "cache"), ["-DMAX_ARGS=32"])
    assert not hit and f"no cached build of the sensor for this kernel and configuration in {tmp_path}" in why
