"""Struct member offsets of the running kernel, read from its own BTF (``/sys/kernel/btf/vmlinux``).

Why: the sensor is compiled against whatever headers the distribution
ships, which need not describe the running kernel (this host's headers are
another build's), so ``sensor.c`` never takes a struct layout from a header.
The kernel's BTF is the layout of the running kernel itself: an offset read
from it is right for this kernel, and the compile child passes it to the
sensor as a ``-D`` flag.  The compiled object is cached under a key that
includes the kernel's release and build (``objcache.cache_key``), so another
kernel compiles again and reads its own offsets.

The parser is pure (bytes in, offsets out) and never raises on malformed
data: it returns None, and the sensor then does without the value
(:data:`EUID_FLAGS` absent: the effective uid comes from /proc instead).
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

#: Where the running kernel publishes its BTF.
VMLINUX_BTF: Final = "/sys/kernel/btf/vmlinux"

_MAGIC: Final = 0xEB9F
_HEADER: Final = struct.Struct("<HBBIIIII")   # magic, version, flags, hdr_len, type_off, type_len, str_off, str_len
_TYPE: Final = struct.Struct("<III")          # name_off, info, size/type
_MEMBER: Final = struct.Struct("<III")        # name_off, type, offset
_INFO: Final = struct.Struct("<I")

# BTF kinds (include/uapi/linux/btf.h)
_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
_VOLATILE, _CONST, _RESTRICT, _FUNC, _FUNC_PROTO, _VAR, _DATASEC = 9, 10, 11, 12, 13, 14, 15
_FLOAT, _DECL_TAG, _TYPE_TAG, _ENUM64 = 16, 17, 18, 19
#: Bytes after the 12-byte type record: fixed, and per vlen entry.
_EXTRA: Final = {_INT: (4, 0), _ARRAY: (12, 0), _STRUCT: (0, 12), _UNION: (0, 12), _ENUM: (0, 8),
                 _FUNC_PROTO: (0, 8), _VAR: (4, 0), _DATASEC: (0, 12), _DECL_TAG: (4, 0), _ENUM64: (0, 12)}
#: Kinds that only qualify or rename another type.
_MODIFIERS: Final = frozenset({_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG})
#: Nesting of anonymous structs and unions followed at most (task_struct nests two deep).
_MAX_NESTING: Final = 8


class _Type(NamedTuple):
    name_off: int
    kind: int
    kind_flag: bool
    vlen: int
    size_or_type: int
    body: int          # offset of what follows the type record, within the type section


class Btf:
    """A parsed BTF blob: its types by id and its strings; only what member lookups need."""

    def __init__(self, data: bytes) -> None:
        """Parse ``data``; raise ValueError when it is not BTF or its sections do not fit."""
        if len(data) < _HEADER.size:
            raise ValueError("too short for a BTF header")
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise ValueError(f"bad BTF magic {magic:#x}")
        types_at, strs_at = hdr_len + type_off, hdr_len + str_off
        if types_at + type_len > len(data) or strs_at + str_len > len(data):
            raise ValueError("BTF sections reach past the end of the data")
        self._types = data[types_at:types_at + type_len]
        self._strings = data[strs_at:strs_at + str_len]
        # where each type's record starts, by id; id 0 (void) has none
        self._starts: list[int] = [-1]
        buf, pos, end = self._types, 0, type_len
        unpack = _INFO.unpack_from
        extra = _EXTRA
        starts = self._starts
        while pos + 12 <= end:
            starts.append(pos)
            info, = unpack(buf, pos + 4)
            fixed, each = extra.get((info >> 24) & 0x1F, (0, 0))
            pos += 12 + fixed + each * (info & 0xFFFF)
        if pos != end:
            raise ValueError("the BTF type section ends inside a type")

    def name(self, offset: int) -> str:
        """The string at ``offset`` of the string section ('' when out of range)."""
        if not 0 <= offset < len(self._strings):
            return ""
        end = self._strings.find(b"\0", offset)
        return self._strings[offset:end if end >= 0 else None].decode("utf-8", "replace")

    def struct_id(self, name: str) -> int | None:
        """The id of the first complete struct called ``name``, or None."""
        # the string section is deduplicated: the name has one offset (compared as ints, not decoded)
        at = self._strings.find(b"\0" + name.encode() + b"\0")
        if at < 0:
            return None
        wanted = at + 1
        for type_id in range(1, len(self._starts)):
            t = self._type(type_id)
            if t.name_off == wanted and t.kind == _STRUCT and t.vlen:
                return type_id
        return None

    def member_offset(self, type_id: int, member: str) -> int | None:
        """Byte offset of ``member`` in struct/union ``type_id``, through anonymous members; None if absent.

        A bitfield member has no byte offset and gives None.
        """
        found = self._member(type_id, member, 0)
        return found[0] if found else None

    def member_type(self, type_id: int, member: str) -> tuple[int, int] | None:
        """Kind and size (0 for kinds without one) of ``member``'s type, after typedefs and qualifiers."""
        found = self._member(type_id, member, 0)
        target = self._resolve(found[1]) if found else None
        if target is None:
            return None
        return target.kind, target.size_or_type if target.kind in (_INT, _STRUCT, _UNION) else 0

    def _member(self, type_id: int, member: str, depth: int) -> tuple[int, int] | None:
        """(byte offset, type id) of ``member``, looking inside anonymous structs and unions."""
        t = self._resolve(type_id)
        if t is None or t.kind not in (_STRUCT, _UNION) or depth > _MAX_NESTING:
            return None
        for i in range(t.vlen):
            name_off, member_type, offset = _MEMBER.unpack_from(self._types, t.body + 12 * i)
            if t.kind_flag and offset >> 24:
                continue   # a bitfield: no byte offset
            bits = offset & 0xFFFFFF if t.kind_flag else offset
            if bits % 8:
                continue
            if name_off == 0:
                inner = self._member(member_type, member, depth + 1)
                if inner is not None:
                    return bits // 8 + inner[0], inner[1]
            elif self.name(name_off) == member:
                return bits // 8, member_type
        return None

    def _type(self, type_id: int) -> _Type:
        pos = self._starts[type_id]
        name_off, info, size = _TYPE.unpack_from(self._types, pos)
        return _Type(name_off, (info >> 24) & 0x1F, bool(info >> 31), info & 0xFFFF, size, pos + 12)

    def _resolve(self, type_id: int) -> _Type | None:
        for _ in range(_MAX_NESTING * 4):
            if not 0 < type_id < len(self._starts):
                return None
            t = self._type(type_id)
            if t.kind not in _MODIFIERS:
                return t
            type_id = t.size_or_type
        return None


class CredOffsets(NamedTuple):
    """Where the effective uid lies: ``task_struct.real_cred`` (a pointer), then ``cred.euid``."""

    task_real_cred: int
    cred_euid: int


def cred_offsets(data: bytes) -> CredOffsets | None:
    """The offsets of ``task_struct.real_cred`` and ``cred.euid`` in the kernel BTF ``data``; None if unknown.

    ``real_cred`` is the objective credentials, what /proc/<pid>/status
    shows; it must be a pointer, and ``euid`` a 4-byte value (``kuid_t``).
    """
    try:
        btf = Btf(data)
    except (ValueError, struct.error):
        return None
    task, cred = btf.struct_id("task_struct"), btf.struct_id("cred")
    if task is None or cred is None:
        return None
    real_cred, euid = btf.member_offset(task, "real_cred"), btf.member_offset(cred, "euid")
    if real_cred is None or euid is None:
        return None
    pointer, value = btf.member_type(task, "real_cred"), btf.member_type(cred, "euid")
    if pointer is None or pointer[0] != _PTR or value is None or value[1] != 4:
        return None
    return CredOffsets(real_cred, euid)


def euid_cflags(path: str = VMLINUX_BTF) -> list[str]:
    """The ``-D`` flags that let ``sensor.c`` read the effective uid at exec; [] when the BTF says nothing.

    Reads the whole file (a few MiB) and parses it: about a tenth of a second,
    paid only by the compile child.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return []
    offsets = cred_offsets(data)
    if offsets is None:
        return []
    return [f"-DTASK_REAL_CRED_OFF={offsets.task_real_cred}", f"-DCRED_EUID_OFF={offsets.cred_euid}"]
