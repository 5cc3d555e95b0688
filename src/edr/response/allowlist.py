"""Images never terminated: basenames, full paths and path prefixes."""

from __future__ import annotations

import ntpath
import posixpath
from collections.abc import Iterable

from edr.platform import current


def _basename(path: str) -> str:
    return ntpath.basename(path) if "\\" in path else posixpath.basename(path)


class ImageAllowlist:
    """``allowlist_images`` (a basename such as ``sshd``, or a full path) and ``allowlist_paths`` prefixes.

    On Windows (or for Windows-style paths) matching ignores case and treats
    ``/`` and ``\\`` alike, as Windows file systems do; on Linux it is exact.
    """

    def __init__(self, images: Iterable[str], paths: Iterable[str], *, windows: bool | None = None) -> None:
        self.windows = current().paths_ignore_case if windows is None else windows
        names: set[str] = set()
        full: set[str] = set()
        for entry in images:
            entry = entry.strip()
            if not entry:
                continue
            (full if ("/" in entry or "\\" in entry) else names).add(self._norm(entry))
        self.names = frozenset(names)
        self.full = frozenset(full)
        self.prefixes = tuple(p for p in (self._norm(p.strip()) for p in paths) if p)

    def _norm(self, path: str) -> str:
        return path.replace("/", "\\").lower() if self.windows else path

    def match(self, image: str) -> bool:
        """True when ``image`` is allowlisted by name, full path or prefix."""
        norm = self._norm(image)
        if self.prefixes and norm.startswith(self.prefixes):
            return True
        if norm in self.full:
            return True
        return bool(self.names) and _basename(norm) in self.names
