"""Struct member offsets from BTF: a hand-built blob shaped like the kernel's, and the running kernel's own."""

from __future__ import annotations

import os
import struct

import pytest

from edr.sources.ebpf import kernel_btf

INT, PTR, STRUCT, UNION, ENUM, TYPEDEF, CONST = 1, 2, 4, 5, 6, 8, 10


class _Builder:
    """Writes BTF the way the kernel lays it out: header, type records, string section."""

    def __init__(self) -> None:
        self.types = b""
        self.strings = b"\0"
        self.count = 0

    def s(self, name: str) -> int:
        if not name:
            return 0
        at = self.strings.find(b"\0" + name.encode() + b"\0")
        if at >= 0:
            return at + 1
        at = len(self.strings)
        self.strings += name.encode() + b"\0"
        return at

    def add(self, kind: int, name: str, size_or_type: int, extra: bytes = b"", vlen: int = 0,
            kind_flag: bool = False) -> int:
        info = (kind << 24) | vlen | (1 << 31 if kind_flag else 0)
        self.types += struct.pack("<III", self.s(name), info, size_or_type) + extra
        self.count += 1
        return self.count

    def struct(self, name: str, size: int, members: list[tuple[str, int, int]], *, kind: int = STRUCT,
               kind_flag: bool = False) -> int:
        extra = b"".join(struct.pack("<III", self.s(m), t, off) for m, t, off in members)
        return self.add(kind, name, size, extra, vlen=len(members), kind_flag=kind_flag)

    def blob(self) -> bytes:
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings))
        return hdr + self.types + self.strings


def _kernel_like(real_cred_at: int = 1728, euid_at: int = 24) -> bytes:
    b = _Builder()
    u32 = b.add(INT, "unsigned int", 4, struct.pack("<I", 32))
    b.add(ENUM, "pid_type", 4, struct.pack("<Ii", b.s("PIDTYPE_PID"), 0) + struct.pack("<Ii", b.s("X"), 1), vlen=2)
    anon = b.struct("", 4, [("val", u32, 0)])
    kuid = b.add(TYPEDEF, "kuid_t", anon)
    b.add(STRUCT, "cred", 0)          # a declaration without members comes first in some BTF
    cred = b.struct("cred", 64, [("usage", u32, 0), ("uid", kuid, 64), ("euid", kuid, euid_at * 8)])
    const_cred = b.add(CONST, "", cred)
    ptr = b.add(PTR, "", const_cred)
    # task_struct keeps real_cred inside an anonymous union, as randomized layouts do
    inner = b.struct("", 8, [("real_cred", ptr, 0), ("other", u32, 0)], kind=UNION)
    b.struct("task_struct", 4096, [("flags", u32, 0), ("bits", u32, (3 << 24) | 40), ("", inner, real_cred_at * 8)],
             kind_flag=True)
    return b.blob()


def test_offsets_through_anonymous_unions_typedefs_and_const() -> None:
    assert kernel_btf.cred_offsets(_kernel_like()) == kernel_btf.CredOffsets(1728, 24)
    assert kernel_btf.cred_offsets(_kernel_like(2000, 20)) == kernel_btf.CredOffsets(2000, 20)


def test_member_lookup_skips_bitfields_and_misses_absent_names() -> None:
    btf = kernel_btf.Btf(_kernel_like())
    task = btf.struct_id("task_struct")
    assert task is not None
    assert btf.member_offset(task, "bits") is None
    assert btf.member_offset(task, "nope") is None
    assert btf.struct_id("mm_struct") is None


@pytest.mark.parametrize("mangle", [
    lambda b: b[:10],                                    # shorter than a header
    lambda b: b"\x00\x00" + b[2:],                       # not BTF
    lambda b: b[:40],                                    # the sections reach past the end
    lambda b: b[:24 + 5] + b[24 + 6:] + b"\0",           # a type record cut short: the walk ends inside a type
])
def test_malformed_btf_gives_no_offsets(mangle: object) -> None:
    assert callable(mangle)
    assert kernel_btf.cred_offsets(mangle(_kernel_like())) is None


def test_a_real_cred_that_is_not_a_pointer_is_refused() -> None:
    b = _Builder()
    u32 = b.add(INT, "unsigned int", 4, struct.pack("<I", 32))
    b.struct("cred", 64, [("euid", u32, 192)])
    b.struct("task_struct", 4096, [("real_cred", u32, 64)])
    assert kernel_btf.cred_offsets(b.blob()) is None


def test_unreadable_btf_gives_no_flags() -> None:
    assert kernel_btf.euid_cflags("/nonexistent/vmlinux") == []


@pytest.mark.skipif(not os.path.exists(kernel_btf.VMLINUX_BTF), reason="the kernel publishes no BTF")
def test_the_running_kernel_gives_its_offsets() -> None:
    flags = kernel_btf.euid_cflags()
    assert len(flags) == 2 and flags[0].startswith("-DTASK_REAL_CRED_OFF=") and flags[1].startswith("-DCRED_EUID_OFF=")
    with open(kernel_btf.VMLINUX_BTF, "rb") as f:
        offsets = kernel_btf.cred_offsets(f.read())
    assert offsets is not None
    # struct cred begins with its usage count, then uid, gid, suid, sgid: euid follows them
    assert offsets.cred_euid >= 20 and offsets.task_real_cred > 0
