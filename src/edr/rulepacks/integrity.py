"""A pack's integrity: its SHA-256 list, its minisign signature, its digest (sans-IO).

**What is signed.** A pack may carry, at its root, ``SHA256SUMS``: one line
per file, ``<64 hex digits>  <path>`` as ``sha256sum`` writes it (``*``
before the path is accepted, paths are relative to the pack root, ``/``
separated). It may also carry ``SHA256SUMS.minisig``: a minisign signature
of ``SHA256SUMS`` (``minisign -S -m SHA256SUMS``). The signature covers the
list, not the archive, so that one rule is enough for every form a pack
takes (a directory, a zip, a tar.gz, repacked or not) and the signature
travels inside the pack; the list then pins every file. Verification uses
py-minisign (Ed25519 from ``cryptography``); nothing here is hand-made
cryptography.

**When the list is present**, every file that is installed must be listed,
every listed file must be present, and each must match; files that are
neither installed nor listed (a checkout's scripts) are ignored.

**Signatures.** With ``rules.require_signature`` a pack must have both files
and the signature must verify with ``rules.public_key``. Without it, a
signature is still verified when a key is configured (a bad one refuses
the pack), and recorded as ``unverified`` when no key is.

**The digest** of a pack is the SHA-256 of the canonical ``SHA256SUMS`` of
the files it installs (sorted by path), written ``sha256:<hex>``: the same
content gives the same digest whatever archive it came in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import attrs
import minisign

from edr.rulepacks.errors import PackError
from edr.rulepacks.layout import SIGNATURE_NAME, SUMS_NAME, normalize_name

_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")
#: A minisign public key: "Ed" and a key id and an Ed25519 key, 42 bytes, in base64.
_KEY_BASE64 = re.compile(r"^RW[A-Za-z0-9+/]{54}$")

UNSIGNED: Final = "none"
VERIFIED: Final = "verified"
UNVERIFIED: Final = "unverified"


@attrs.frozen
class SignatureInfo:
    """What is known of a pack's signature.

    ``status`` is ``verified`` (checked with the configured key),
    ``unverified`` (present, no key configured) or ``none``; ``key_id`` is
    the signing key's id as minisign prints it (16 hex digits) and
    ``trusted_comment`` the signed comment (minisign puts a timestamp and the
    file name there).
    """

    status: str = UNSIGNED
    key_id: str = ""
    trusted_comment: str = ""

    @property
    def signed(self) -> bool:
        """Whether the signature was checked and verified."""
        return self.status == VERIFIED


def parse_sums(data: bytes) -> dict[str, str]:
    """``SHA256SUMS`` as {path: lowercase hex}; raises PackError (``integrity``) naming the line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackError("integrity", f"is not UTF-8 text ({exc.reason} at byte {exc.start})",
                        member=SUMS_NAME) from None
    listed: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _LINE.match(line)
        if match is None:
            raise PackError("integrity", "expected '<64 hex digits>  <path>' (sha256sum's format)",
                            member=SUMS_NAME, line=number)
        try:
            path = normalize_name(match.group(2))
        except PackError as exc:
            raise PackError("integrity", f"lists {match.group(2)!r}, which {exc.reason}", member=SUMS_NAME,
                            line=number) from None
        if path in listed:
            raise PackError("integrity", f"lists {path!r} twice", member=SUMS_NAME, line=number)
        listed[path] = match.group(1).lower()
    if not listed:
        raise PackError("integrity", "lists no file", member=SUMS_NAME)
    return listed


def check_sums(listed: Mapping[str, str], actual: Mapping[str, str], installed: frozenset[str]) -> None:
    """Raise PackError (``integrity``) unless ``actual`` hashes agree with the ``listed`` ones (module doc)."""
    for path in sorted(installed):
        if path not in listed:
            raise PackError("integrity", f"is not listed in {SUMS_NAME} (every installed file must be)",
                            member=path)
    for path, expected in sorted(listed.items()):
        got = actual.get(path)
        if got is None:
            raise PackError("integrity", f"is listed in {SUMS_NAME} but missing from the pack", member=path)
        if got != expected:
            raise PackError("integrity", f"SHA-256 mismatch: {SUMS_NAME} lists {expected}, the file has {got}",
                            member=path)


def canonical_sums(hashes: Mapping[str, str]) -> bytes:
    """``hashes`` as a ``SHA256SUMS`` text, sorted by path."""
    return "".join(f"{hashes[p]}  {p}\n" for p in sorted(hashes)).encode()


def tree_digest(hashes: Mapping[str, str]) -> str:
    """The pack digest of files with these hashes: ``sha256:`` and the hex SHA-256 of :func:`canonical_sums`."""
    return "sha256:" + hashlib.sha256(canonical_sums(hashes)).hexdigest()


def load_public_key(value: str) -> minisign.PublicKey | None:
    """``rules.public_key`` (a key, or the path of a ``.pub`` file) as a key; None when unset.

    Raises PackError (``config``) when the key or the file cannot be used.
    """
    value = value.strip()
    if not value:
        return None
    try:
        if _KEY_BASE64.match(value):
            return minisign.PublicKey.from_base64(value)
        data = Path(value).read_bytes()
        lines = [line for line in data.splitlines() if line.strip()]
        if len(lines) == 1:  # the bare key in a file
            return minisign.PublicKey.from_base64(lines[0].strip())
        return minisign.PublicKey.from_bytes(b"\n".join(lines[:2]))
    except OSError as exc:
        raise PackError("config", f"rules.public_key: cannot read {value}: {exc.strerror or exc}") from None
    except minisign.Error as exc:
        raise PackError("config", f"rules.public_key: not a minisign public key ({exc})") from None


def _key_id(signature: bytes) -> str:
    """The key id of a minisign signature as minisign prints it (little-endian, 16 hex digits)."""
    try:
        raw = base64.b64decode(signature.splitlines()[1], validate=True)
    except (IndexError, binascii.Error):
        return ""
    return f"{int.from_bytes(raw[2:10], 'little'):016X}"


def check_signature(sums: bytes | None, signature: bytes | None, key: minisign.PublicKey | None, *,
                    required: bool) -> SignatureInfo:
    """Decide on a pack's signature (module doc); raises PackError (``signature``, ``integrity``, ``config``)."""
    if required and key is None:
        raise PackError("config", "rules.require_signature is true but rules.public_key is not set")
    if signature is None:
        if required:
            missing = SIGNATURE_NAME if sums is not None else f"{SUMS_NAME} and {SIGNATURE_NAME}"
            raise PackError("signature", f"the pack is not signed (no {missing}) and rules.require_signature "
                                         f"is true")
        return SignatureInfo()
    if sums is None:
        raise PackError("integrity", f"the pack has {SIGNATURE_NAME} but no {SUMS_NAME} for it to sign")
    key_id = _key_id(signature)
    try:
        parsed = minisign.Signature.from_bytes(signature)
    except minisign.Error as exc:
        raise PackError("signature", f"is not a minisign signature ({exc})", member=SIGNATURE_NAME) from None
    if key is None:
        return SignatureInfo(UNVERIFIED, key_id, parsed.trusted_comment)
    try:
        key.verify(sums, parsed)
    except minisign.Error as exc:
        raise PackError("signature", f"does not verify with rules.public_key (signed by key {key_id or '?'}: "
                                     f"{exc})", member=SIGNATURE_NAME) from None
    return SignatureInfo(VERIFIED, key_id, parsed.trusted_comment)
