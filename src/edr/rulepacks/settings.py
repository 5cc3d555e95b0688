"""``[rules]``: where rule packs are kept, where updates come from, what a pack must prove.

:class:`RulesConfig` is the configuration section (attrs, documented per key
like :mod:`edr.config`); :class:`Limits` is the part of it that bounds what
one pack may unpack to, so a hostile or broken archive cannot fill the disk
or the memory.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

#: SigmaHQ's release package with every generic and emerging-threat rule (experimental and up,
#: level medium and up); GitHub redirects ``latest`` to the newest release.
DEFAULT_UPDATE_URL: Final = "https://github.com/SigmaHQ/sigma/releases/latest/download/sigma_all_rules.zip"
#: The installed layout's pack store (issue #14, point 1 decides the per-platform default).
DEFAULT_STORE: Final = "/var/lib/edr/rules"

#: Longest file (one Sigma rule, or SHA256SUMS) a pack may hold; SigmaHQ's largest rule is ~100 KB.
MAX_FILE_BYTES: Final = 8 << 20


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


def _positive(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value <= 0:
        raise ValueError(f"must be greater than 0, not {value!r}")


def _non_negative(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value < 0:
        raise ValueError(f"must be 0 or more, not {value!r}")


def _update_url(_inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value and not value.startswith(("https://", "http://")):
        raise ValueError(f"must be an https:// URL (or http:// for a test server or mirror), not {value!r}")


@attrs.define
class RulesConfig:
    """[rules]: installed Sigma rule packs (``edr rules install|update|list|rollback``)."""

    store_directory: str = attrs.field(
        default=DEFAULT_STORE,
        metadata=_doc("Where rule packs are installed: one versioned directory per pack under packs/, "
                      "an 'active' link to the one in use. Created root-only (0700)."),
    )
    update_url: str = attrs.field(
        default=DEFAULT_UPDATE_URL, validator=_update_url,
        metadata=_doc("The pack 'edr rules update' downloads (.zip or .tar.gz). https:// is required; "
                      "http:// only when written so (a test server or a mirror on a trusted network)."),
    )
    ca_file: str = attrs.field(
        default="",
        metadata=_doc('PEM file of the CAs trusted for update_url, replacing the system\'s; "" uses the '
                      "system's CAs."),
    )
    timeout_secs: float = attrs.field(
        default=300.0, validator=_positive,
        metadata=_doc("Longest a download may take in all; the connection also gives up after 30 s of silence "
                      "(or this, if shorter)."),
    )
    require_signature: bool = attrs.field(
        default=False,
        metadata=_doc("Refuse any pack that is not signed by public_key: it must carry SHA256SUMS and "
                      "SHA256SUMS.minisig (a minisign signature of SHA256SUMS)."),
    )
    public_key: str = attrs.field(
        default="",
        metadata=_doc('minisign public key that signs packs: the key itself ("RW...") or the path of its .pub '
                      'file. With a key set, a signed pack whose signature does not verify is always refused.'),
    )
    keep: int = attrs.field(
        default=2, validator=_non_negative,
        metadata=_doc("Previous packs kept for 'edr rules rollback' besides the active one; older ones are "
                      "removed after each install."),
    )
    strict: bool = attrs.field(
        default=False,
        metadata=_doc("Refuse a pack in which any rule is rejected (by default rejected rules are reported "
                      "and the pack activates when at least one rule loads)."),
    )
    max_download_bytes: int = attrs.field(
        default=128 << 20, validator=_positive,
        metadata=_doc("Largest archive 'update' downloads or 'install' opens (SigmaHQ's is a few MB)."),
    )
    max_unpacked_bytes: int = attrs.field(
        default=512 << 20, validator=_positive,
        metadata=_doc("Most bytes a pack may unpack to in all (against zip and gzip bombs)."),
    )
    max_files: int = attrs.field(
        default=50_000, validator=_positive,
        metadata=_doc("Most entries (files and directories) a pack may hold (SigmaHQ's has ~4,000)."),
    )

    def limits(self) -> Limits:
        """The unpacking limits these settings set."""
        return Limits(max_archive_bytes=self.max_download_bytes, max_unpacked_bytes=self.max_unpacked_bytes,
                      max_files=self.max_files)


@attrs.frozen
class Limits:
    """What one pack may amount to; anything beyond is refused with kind ``limit``.

    ``max_archive_bytes`` bounds the archive file itself (downloaded or
    given), ``max_unpacked_bytes`` the bytes read out of it in all, as they
    are read (declared sizes are checked first, but an archive may lie),
    ``max_files`` its entries, counted before anything is read, and
    ``max_file_bytes`` any one file.
    """

    max_archive_bytes: int = 128 << 20
    max_unpacked_bytes: int = 512 << 20
    max_files: int = 50_000
    max_file_bytes: int = MAX_FILE_BYTES
