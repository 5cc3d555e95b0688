"""The compiled sensor as data: maps, programs with their map relocations, attach points.

What the compile child (:mod:`edr.sources.ebpf.compile`) extracts from bcc
and the agent loads without bcc (:mod:`edr.sources.ebpf.objload`). Nothing in
it is executed by Python: it is JSON decoded against the typed structs below
(instructions as base64), checked by :func:`check`, and the kernel's verifier
still checks every program when it is loaded.

A program refers to a map through a 64-bit immediate load whose source
register field is ``BPF_PSEUDO_MAP_FD``: the kernel replaces the file
descriptor in its immediate with the map.  The descriptors bcc created in
the child mean nothing in the agent, so :func:`relocate` records each such
instruction as a :class:`Relocation` (instruction index -> map name) with
its immediate zeroed, and :func:`patch` writes the agent's own descriptors
back.  Any other pseudo source (a map value, a BPF-to-BPF call, a BTF id) is
refused: this format does not carry what the kernel would need for it.

Sans-IO: plain functions over bytes and structs.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping

import msgspec

#: Bumped whenever the layout below changes: a file of another version is a cache miss.
FORMAT_VERSION = 1

INSN_SIZE = 8
_INSN = struct.Struct("<BBhi")   # opcode, dst_reg:4 | src_reg:4, offset, immediate
#: ``BPF_LD | BPF_IMM | BPF_DW``: the 16-byte load of a 64-bit immediate (two instruction slots).
LD_IMM64 = 0x18
#: ``BPF_JMP | BPF_CALL``: with a non-zero source register a BPF-to-BPF or kernel-function call.
CALL = 0x85
BPF_PSEUDO_MAP_FD = 1
#: The other pseudo sources of ``ld_imm64`` (linux/bpf.h), named in refusals.
_LD_PSEUDO = {2: "BPF_PSEUDO_MAP_VALUE (global data)", 3: "BPF_PSEUDO_BTF_ID (a kernel symbol)",
              4: "BPF_PSEUDO_FUNC (a callback)", 5: "BPF_PSEUDO_MAP_IDX", 6: "BPF_PSEUDO_MAP_IDX_VALUE"}
_CALL_PSEUDO = {1: "BPF_PSEUDO_CALL (a BPF-to-BPF call)", 2: "BPF_PSEUDO_KFUNC_CALL (a kernel function call)"}
#: bcc's names for the programs it attaches to a tracepoint: ``tracepoint__<category>__<event>``.
_TRACEPOINT_NAME = re.compile(r"tracepoint__(\w+?)__(\w+)")


class ObjectError(ValueError):
    """A compiled object that cannot be used: says which program, map or instruction and why."""


class MapSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One map as the kernel created it for bcc (``bpf_obj_get_info_by_fd``), to be created again.

    ``name`` is bcc's table name (what relocations refer to); the kernel
    keeps only its first 15 bytes.  The BTF type ids refer to the object's
    :attr:`CompiledObject.btf` (0: no BTF for this map).
    """

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0
    btf_key_type_id: int = 0
    btf_value_type_id: int = 0


class Relocation(msgspec.Struct, frozen=True, array_like=True):
    """Instruction ``insn`` (a ``ld_imm64`` index, in 8-byte slots) loads the fd of map ``map``."""

    insn: int
    map: str


class ProgramSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One program: its type, instructions (map immediates zeroed) and where it attaches.

    ``tracepoint`` is ``"<category>/<event>"`` for a program attached to a
    tracepoint, empty for one attached otherwise (the cgroup hooks, whose
    ``expected_attach_type`` the kernel checks at load time).
    """

    name: str
    type: int
    license: str
    insns: bytes
    relocations: list[Relocation]
    expected_attach_type: int = 0
    tracepoint: str = ""


class CompiledObject(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything the agent needs to load the sensor without bcc.

    ``key`` is the cache key it was built for (see
    :func:`edr.sources.ebpf.objcache.cache_key`); ``btf`` the raw BTF blob
    bcc loaded for the maps (some map types, e.g. socket storage, cannot be
    created without it), empty when there is none.
    """

    version: int
    key: str
    maps: list[MapSpec]
    programs: list[ProgramSpec]
    btf: bytes = b""

    def map(self, name: str) -> MapSpec:
        """The map called ``name`` (KeyError when there is none)."""
        for spec in self.maps:
            if spec.name == name:
                return spec
        raise KeyError(name)


def tracepoint_of(function: str) -> str:
    """``"<category>/<event>"`` for a ``tracepoint__<category>__<event>`` function, else ``""``."""
    match = _TRACEPOINT_NAME.fullmatch(function)
    return f"{match[1]}/{match[2]}" if match else ""


def relocate(insns: bytes, fd_names: Mapping[int, str], program: str) -> tuple[bytes, list[Relocation]]:
    """The instructions with every map-fd immediate zeroed, and where each map goes.

    ``fd_names`` maps the descriptors of the compiling process's maps to
    their names.  Raises :class:`ObjectError` naming ``program`` and the
    instruction for an unknown map fd or any pseudo source this format
    cannot carry.
    """
    if len(insns) % INSN_SIZE:
        raise ObjectError(f"program {program}: {len(insns)} bytes is not a whole number of instructions")
    out = bytearray(insns)
    relocations: list[Relocation] = []
    count = len(insns) // INSN_SIZE
    i = 0
    while i < count:
        op, regs, off, imm = _INSN.unpack_from(out, i * INSN_SIZE)
        src = regs >> 4
        if op == LD_IMM64:
            if i + 1 >= count:
                raise ObjectError(f"program {program}: instruction {i} is a truncated 64-bit load")
            if src == BPF_PSEUDO_MAP_FD:
                name = fd_names.get(imm)
                if name is None:
                    raise ObjectError(f"program {program}: instruction {i} loads fd {imm}, which is no map of "
                                      "the object")
                relocations.append(Relocation(i, name))
                _INSN.pack_into(out, i * INSN_SIZE, op, regs, off, 0)
            elif src:
                raise ObjectError(f"program {program}: instruction {i} is a 64-bit load from "
                                  f"{_LD_PSEUDO.get(src, f'pseudo source {src}')}, which a cached object "
                                  "cannot carry")
            i += 2
            continue
        if op == CALL and src:
            raise ObjectError(f"program {program}: instruction {i} is {_CALL_PSEUDO.get(src, f'call {src}')}, "
                              "which a cached object cannot carry")
        i += 1
    return bytes(out), relocations


def patch(program: ProgramSpec, map_fds: Mapping[str, int]) -> bytes:
    """The program's instructions with this process's map descriptors written into its relocations."""
    out = bytearray(program.insns)
    for rel in program.relocations:
        op, regs, off, _imm = _INSN.unpack_from(out, rel.insn * INSN_SIZE)
        _INSN.pack_into(out, rel.insn * INSN_SIZE, op, regs, off, map_fds[rel.map])
    return bytes(out)


def check(obj: CompiledObject) -> None:
    """Raise :class:`ObjectError` unless the object is consistent.

    Names unique; every relocation inside its program, on a map-fd
    ``ld_imm64`` with a zero immediate, naming a map of the object; every
    tracepoint ``category/event`` made of plain name characters (it becomes
    a tracefs path).
    """
    if obj.version != FORMAT_VERSION:
        raise ObjectError(f"format version {obj.version}, this agent reads {FORMAT_VERSION}")
    maps = {m.name for m in obj.maps}
    if len(maps) != len(obj.maps):
        raise ObjectError("two maps have the same name")
    if len({p.name for p in obj.programs}) != len(obj.programs):
        raise ObjectError("two programs have the same name")
    if not obj.programs:
        raise ObjectError("no programs")
    for prog in obj.programs:
        count, rest = divmod(len(prog.insns), INSN_SIZE)
        if rest or not count:
            raise ObjectError(f"program {prog.name}: {len(prog.insns)} bytes is not a whole number of instructions")
        if prog.tracepoint and not re.fullmatch(r"\w+/\w+", prog.tracepoint):
            raise ObjectError(f"program {prog.name}: bad tracepoint {prog.tracepoint!r}")
        for rel in prog.relocations:
            if rel.map not in maps:
                raise ObjectError(f"program {prog.name}: relocation to unknown map {rel.map!r}")
            if not 0 <= rel.insn < count - 1:
                raise ObjectError(f"program {prog.name}: relocation at instruction {rel.insn}, outside the program")
            op, regs, _off, imm = _INSN.unpack_from(prog.insns, rel.insn * INSN_SIZE)
            if op != LD_IMM64 or regs >> 4 != BPF_PSEUDO_MAP_FD or imm != 0:
                raise ObjectError(f"program {prog.name}: relocation at instruction {rel.insn}, which is not a "
                                  "map load")


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(CompiledObject)


def encode(obj: CompiledObject) -> bytes:
    """JSON, instructions and BTF as base64."""
    return _ENCODER.encode(obj)


def decode(data: bytes) -> CompiledObject:
    """Decode and :func:`check` JSON from :func:`encode`; raises :class:`ObjectError` saying what is wrong."""
    try:
        obj = _DECODER.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError too: "Expected `int`, got `str` - at `$.maps[0]...`"
        raise ObjectError(str(exc)) from None
    check(obj)
    return obj
