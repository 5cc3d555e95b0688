"""The compiled object as data: map relocations, refusals naming the program, a checked JSON round trip."""

from __future__ import annotations

import struct

import pytest

from edr.sources.ebpf import objfile

INSN = struct.Struct("<BBhi")


def insn(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return INSN.pack(op, (src << 4) | dst, off, imm)


def ld_map(dst: int, fd: int) -> bytes:
    """``r<dst> = map fd`` (``ld_imm64`` with BPF_PSEUDO_MAP_FD): two slots."""
    return insn(objfile.LD_IMM64, dst, objfile.BPF_PSEUDO_MAP_FD, imm=fd) + insn(0)


EXIT = insn(0x95)
MOV0 = insn(0xB7, 0, imm=0)   # r0 = 0


def _program(insns: bytes, relocations: list[objfile.Relocation]) -> objfile.ProgramSpec:
    return objfile.ProgramSpec(name="tracepoint__syscalls__sys_enter_execve", type=5, license="GPL",
                               insns=insns, relocations=relocations, tracepoint="syscalls/sys_enter_execve")


def _object(program: objfile.ProgramSpec) -> objfile.CompiledObject:
    maps = [objfile.MapSpec(name="ignored", type=1, key_size=4, value_size=1, max_entries=256),
            objfile.MapSpec(name="rb_process", type=27, key_size=0, value_size=0, max_entries=1 << 20)]
    return objfile.CompiledObject(version=objfile.FORMAT_VERSION, key="k", maps=maps, programs=[program])


def test_map_loads_become_relocations_with_zeroed_immediates_and_are_patched_back() -> None:
    raw = ld_map(1, 7) + MOV0 + ld_map(2, 9) + insn(0x18, 3, 0, imm=0x1234) + insn(0, imm=0x5678) + EXIT
    insns, relocations = objfile.relocate(raw, {7: "ignored", 9: "rb_process"}, "p")
    assert relocations == [objfile.Relocation(0, "ignored"), objfile.Relocation(3, "rb_process")]
    assert INSN.unpack_from(insns, 0)[3] == 0 and INSN.unpack_from(insns, 3 * 8)[3] == 0
    # a plain 64-bit constant (source 0) is left alone, both halves
    assert insns[5 * 8:7 * 8] == raw[5 * 8:7 * 8]
    program = _program(insns, relocations)
    objfile.check(_object(program))
    patched = objfile.patch(program, {"ignored": 40, "rb_process": 41})
    assert INSN.unpack_from(patched, 0)[3] == 40 and INSN.unpack_from(patched, 3 * 8)[3] == 41
    assert INSN.unpack_from(patched, 0)[1] >> 4 == objfile.BPF_PSEUDO_MAP_FD


@pytest.mark.parametrize(("raw", "words"), [
    (insn(0x18, 1, 2, imm=7) + insn(0) + EXIT, "BPF_PSEUDO_MAP_VALUE"),
    (insn(0x18, 1, 3, imm=7) + insn(0) + EXIT, "BPF_PSEUDO_BTF_ID"),
    (insn(0x85, 0, 1, imm=3) + EXIT, "BPF_PSEUDO_CALL"),
    (insn(0x85, 0, 2, imm=3) + EXIT, "BPF_PSEUDO_KFUNC_CALL"),
    (ld_map(1, 99) + EXIT, "loads fd 99, which is no map"),
    (MOV0 + insn(0x18, 1, 1, imm=7), "truncated 64-bit load"),
])
def test_what_a_cached_object_cannot_carry_is_refused_naming_the_program(raw: bytes, words: str) -> None:
    with pytest.raises(objfile.ObjectError, match=rf"^program edr_udp_egress: .*{words}"):
        objfile.relocate(raw, {7: "ignored"}, "edr_udp_egress")


def test_helper_calls_are_not_relocations() -> None:
    raw = insn(0x85, imm=14) + MOV0 + EXIT   # call bpf_get_current_pid_tgid
    assert objfile.relocate(raw, {}, "p") == (raw, [])


def test_round_trip_and_checked_decoding() -> None:
    insns, relocations = objfile.relocate(ld_map(1, 7) + MOV0 + EXIT, {7: "ignored"}, "p")
    obj = _object(_program(insns, relocations))
    data = objfile.encode(obj)
    assert objfile.decode(data) == obj
    assert b'"insns":"' in data   # base64 text, not a list of numbers
    with pytest.raises(objfile.ObjectError, match=r"\$\.maps\[0\]\.key_size"):
        objfile.decode(data.replace(b'"key_size":4', b'"key_size":"4"'))
    with pytest.raises(objfile.ObjectError):
        objfile.decode(b"\x00garbage")
    bad_map = _object(_program(insns, [objfile.Relocation(0, "nope")]))
    with pytest.raises(objfile.ObjectError, match="relocation to unknown map 'nope'"):
        objfile.decode(objfile.encode(bad_map))
    # a relocation that does not sit on a map load (here: on r0 = 0)
    off_target = _object(_program(insns, [objfile.Relocation(2, "ignored")]))
    with pytest.raises(objfile.ObjectError, match=r"relocation at instruction 2, which is not a map load"):
        objfile.decode(objfile.encode(off_target))
    nonzero = _object(_program(ld_map(1, 7) + MOV0 + EXIT, [objfile.Relocation(0, "ignored")]))
    with pytest.raises(objfile.ObjectError, match="relocation at instruction 0, which is not a map load"):
        objfile.decode(objfile.encode(nonzero))
    odd = objfile.CompiledObject(version=objfile.FORMAT_VERSION + 1, key="k", maps=[], programs=[])
    with pytest.raises(objfile.ObjectError, match="format version"):
        objfile.decode(objfile.encode(odd))
    path = _object(objfile.ProgramSpec(name="p", type=5, license="GPL", insns=MOV0 + EXIT, relocations=[],
                                       tracepoint="../../etc/x"))
    with pytest.raises(objfile.ObjectError, match="bad tracepoint"):
        objfile.decode(objfile.encode(path))


def test_tracepoint_names() -> None:
    assert objfile.tracepoint_of("tracepoint__syscalls__sys_enter_execve") == "syscalls/sys_enter_execve"
    assert objfile.tracepoint_of("tracepoint__sched__sched_process_exec") == "sched/sched_process_exec"
    assert objfile.tracepoint_of("edr_udp_egress") == ""
