"""What a rule pack may amount to, from ``[rules]`` (:class:`edr.config.RulesConfig`).

:class:`Limits` bounds what one pack may unpack to, so a hostile or broken
archive cannot fill the disk or the memory.
"""

from __future__ import annotations

from typing import Final

import attrs

from edr.config import RulesConfig

#: Longest file (one Sigma rule, or SHA256SUMS) a pack may hold; SigmaHQ's largest rule is ~100 KB.
MAX_FILE_BYTES: Final = 8 << 20


def limits_of(settings: RulesConfig) -> Limits:
    """The unpacking limits ``[rules]`` sets."""
    return Limits(max_archive_bytes=settings.max_download_bytes, max_unpacked_bytes=settings.max_unpacked_bytes,
                  max_files=settings.max_files)


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
