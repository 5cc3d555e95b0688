"""Host interfaces of the Windows normalizer: drive letters, accounts, PE files (real PE on Linux)."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import pefile
import pytest

from edr.sources.etw.host import DeviceMap, SidResolver
from edr.sources.etw.normalize import EtwNormalizer
from edr.sources.etw.pe_info import PeError, PeInfo, PeInfoCache, read_pe_info
from tests.sources.etw.records import record


def launcher_exe() -> Path:
    """A real PE image with a version resource: pip's vendored distlib launcher (w64.exe)."""
    try:
        from pip._vendor import distlib
    except ImportError:
        pytest.skip("pip's distlib is not installed")
    path = Path(distlib.__file__).parent / "w64.exe"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


# --- devices ---------------------------------------------------------------------------------
def test_device_paths_become_drive_paths() -> None:
    m = DeviceMap({"\\Device\\HarddiskVolume3": "C:", "\\Device\\HarddiskVolume10": "D:",
                   "\\Device\\HarddiskVolume1\\": "E:"})
    assert m.to_dos("\\Device\\HarddiskVolume3\\Windows\\System32\\cmd.exe") == "C:\\Windows\\System32\\cmd.exe"
    assert m.to_dos("\\device\\harddiskvolume10\\x") == "D:\\x"  # case-insensitive, longest device wins
    assert m.to_dos("\\Device\\HarddiskVolume1\\y") == "E:\\y"
    assert m.to_dos("\\Device\\HarddiskVolume30\\z") == "\\Device\\HarddiskVolume30\\z"  # not Volume3
    assert m.misses == 1
    assert m.to_dos("\\Device\\Mup\\server\\share\\f.exe") == "\\\\server\\share\\f.exe"
    assert m.to_dos("\\??\\C:\\Windows\\x.sys") == "C:\\Windows\\x.sys"
    assert m.to_dos("\\SystemRoot\\System32\\drivers\\x.sys") == "C:\\Windows\\System32\\drivers\\x.sys"
    assert m.to_dos("cmd.exe") == "cmd.exe"
    assert m.to_device("C:\\Windows\\x") == "\\Device\\HarddiskVolume3\\Windows\\x"


# --- accounts --------------------------------------------------------------------------------
def test_sid_names_are_cached_failures_too_and_bounded() -> None:
    asked: list[str] = []

    def lookup(sid: str) -> str | None:
        asked.append(sid)
        if sid == "S-1-5-99":
            raise OSError("LookupAccountSid failed")
        return {"S-1-5-18": "NT AUTHORITY\\SYSTEM"}.get(sid)

    r = SidResolver(lookup, capacity=2)
    assert r.name("S-1-5-18") == "NT AUTHORITY\\SYSTEM"
    assert r.name("S-1-5-18") == "NT AUTHORITY\\SYSTEM"
    assert r.name("S-1-5-21-9") == "S-1-5-21-9"  # unknown: the SID itself
    assert r.name("S-1-5-21-9") == "S-1-5-21-9"
    assert r.name("S-1-5-99") == "S-1-5-99"  # a failing lookup does not raise
    assert asked == ["S-1-5-18", "S-1-5-21-9", "S-1-5-99"]
    assert r.statistics() == {"size": 2, "evictions": 1, "lookups": 3, "failures": 2}


# --- PE --------------------------------------------------------------------------------------
def test_pe_info_of_a_real_pe_file() -> None:
    path = launcher_exe()
    data = path.read_bytes()
    info = read_pe_info(str(path))
    assert info.md5 == hashlib.md5(data).hexdigest()
    assert info.sha1 == hashlib.sha1(data).hexdigest()
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.imphash == pefile.PE(data=data).get_imphash() and len(info.imphash) == 32
    assert info.version["OriginalFileName"] == "w64.exe"
    assert info.version["Description"] == "Simple Launcher Executable"
    assert info.version["Product"] == "Simple Launcher"
    assert info.version["Company"] == "Simple Launcher User"
    assert info.hashes == (f"MD5={info.md5.upper()},SHA1={info.sha1.upper()},SHA256={info.sha256.upper()},"
                           f"IMPHASH={info.imphash.upper()}")


def test_a_file_that_is_not_pe_still_has_hashes(tmp_path: Path) -> None:
    script = tmp_path / "run.ps1"
    script.write_text("Write-Host hi")
    info = read_pe_info(str(script))
    assert info.imphash == "" and info.version == {} and info.hashes.count("=") == 3
    with pytest.raises(PeError, match=r"missing\.exe"):
        read_pe_info(str(tmp_path / "missing.exe"))
    with pytest.raises(PeError, match="over the 4-byte limit"):
        read_pe_info(str(script), max_bytes=4)


def test_pe_cache_reads_each_file_identity_once(tmp_path: Path) -> None:
    exe = tmp_path / "w64.exe"
    shutil.copy(launcher_exe(), exe)
    reads: list[str] = []

    def reader(path: str, limit: int) -> PeInfo:
        reads.append(path)
        return read_pe_info(path, limit)

    cache = PeInfoCache(local_path=lambda p: str(tmp_path / p.rsplit("\\", 1)[-1]), reader=reader)
    try:
        first = cache.lookup("C:\\Tools\\w64.exe", wait=10)
        second = cache.lookup("C:\\Other\\w64.exe", wait=10)
        assert first is not None and first == second and len(reads) == 1
        exe.write_bytes(exe.read_bytes() + b"\0")  # replaced: a new identity, read again
        third = cache.lookup("C:\\Tools\\w64.exe", wait=10)
        assert third is not None and third.sha256 != first.sha256 and len(reads) == 2
        assert cache.lookup("C:\\Tools\\absent.exe", wait=10) is None
        assert cache.statistics()["unreadable"] == 1
    finally:
        cache.close()


def test_pe_cache_does_not_wait_past_its_deadline_and_fills_the_cache_later(tmp_path: Path) -> None:
    exe = tmp_path / "w64.exe"
    shutil.copy(launcher_exe(), exe)

    def slow(path: str, limit: int) -> PeInfo:
        time.sleep(0.3)
        return read_pe_info(path, limit)

    cache = PeInfoCache(local_path=lambda p: str(exe), reader=slow)
    try:
        started = time.monotonic()
        assert cache.lookup("C:\\w64.exe", wait=0.01) is None
        assert time.monotonic() - started < 0.2
        assert cache.statistics()["late"] == 1
        # computed meanwhile, in the background (polled: a loaded machine may take longer than 0.3 s)
        deadline = time.monotonic() + 30
        while cache.lookup("C:\\w64.exe", wait=0) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cache.lookup("C:\\w64.exe", wait=0) is not None
    finally:
        cache.close()


def test_process_creation_carries_sysmon_pe_fields(tmp_path: Path) -> None:
    exe = tmp_path / "w64.exe"
    shutil.copy(launcher_exe(), exe)
    cache = PeInfoCache(local_path=lambda p: str(tmp_path / p.rsplit("\\", 1)[-1]))
    n = EtwNormalizer(devices=DeviceMap({"\\Device\\HarddiskVolume3": "C:"}), pe=cache, pe_wait=10)
    try:
        props = {"ProcessID": 42, "ParentProcessID": 4, "ImageName": "\\Device\\HarddiskVolume3\\Tools\\w64.exe"}
        (event,) = n.normalize_batch([record("process", 1, props, opcode=1, version=4)])
    finally:
        cache.close()
    want = read_pe_info(str(exe))
    assert event.fields["Hashes"] == want.hashes
    assert (event.fields["OriginalFileName"], event.fields["Description"], event.fields["Product"],
            event.fields["Company"]) == ("w64.exe", "Simple Launcher Executable", "Simple Launcher",
                                         "Simple Launcher User")
    assert event.fields["ParentImage"] == "System"
