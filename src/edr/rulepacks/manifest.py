"""``pack.json``: what an installed pack is, written once when it is installed.

The manifest is data (JSON, decoded by msgspec into typed structs and
validated as it is decoded), never code: everything a root process reads
back from disk is. ``files`` pins every installed file's SHA-256 so that a
pack can be checked again before it is re-activated (``rollback``).
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from edr.rulepacks.errors import PackError

FORMAT: Final = 1
MANIFEST_NAME: Final = "pack.json"
#: ``<sequence>-<UTC time>-<first 8 hex digits of the digest>``, e.g. ``0003-20261122T072801Z-9f2c1a7b``.
PACK_ID: Final = re.compile(r"^(\d{4,})-(\d{8}T\d{6}Z)-([0-9a-f]{8})$")


class SignatureRecord(msgspec.Struct, frozen=True):
    """The pack's signature as it was judged at installation (see :class:`~edr.rulepacks.integrity.SignatureInfo`)."""

    status: str
    key_id: str = ""
    trusted_comment: str = ""


class RejectionRecord(msgspec.Struct, frozen=True):
    """A rule the loader rejected at installation; ``path`` is relative to the pack's content."""

    path: str
    stage: str
    reason: str
    title: str = ""
    rule_id: str = ""


class PackManifest(msgspec.Struct, frozen=True, kw_only=True):
    """An installed pack (``packs/<id>/pack.json``)."""

    format: int
    id: str
    sequence: int
    source: str
    source_kind: str
    source_sha256: str | None
    installed_at: str
    digest: str
    rule_dirs: list[str]
    files: dict[str, str]
    rule_files: int
    loaded: int
    inert: int
    rejected: int
    correlations: int
    has_sums: bool
    signature: SignatureRecord
    rejections: list[RejectionRecord] = []
    edr_version: str = ""


def encode(manifest: PackManifest) -> bytes:
    """The manifest as indented JSON."""
    return msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n"


def decode(data: bytes, *, pack: str) -> PackManifest:
    """Decode and validate ``pack.json``; raises PackError (``store``) naming what is wrong."""
    try:
        manifest = msgspec.json.decode(data, type=PackManifest)
    except msgspec.ValidationError as exc:
        raise PackError("store", f"invalid manifest: {exc}", pack=pack, member=MANIFEST_NAME) from None
    except msgspec.DecodeError as exc:
        raise PackError("store", f"manifest is not JSON: {exc}", pack=pack, member=MANIFEST_NAME) from None
    if manifest.format != FORMAT:
        raise PackError("store", f"manifest format {manifest.format} is not supported (this edr reads {FORMAT})",
                        pack=pack, member=MANIFEST_NAME)
    if manifest.id != pack:
        raise PackError("store", f"manifest names pack {manifest.id!r}, not its directory", pack=pack,
                        member=MANIFEST_NAME)
    return manifest
