"""Path-prefix allowlists (case-insensitive on Windows, as its file systems are)."""

from __future__ import annotations

from collections.abc import Iterable

from edr.platform import current


class PrefixAllowlist:
    """Trusted path prefixes; ``match(path)`` is True for a path under any of them.

    Prefixes are compared as written (``/usr/bin/`` does not cover
    ``/usr/binx``; write the trailing separator). On Windows, and for
    Windows-style paths, comparison ignores case and ``/`` vs ``\\``.
    """

    def __init__(self, prefixes: Iterable[str], *, windows: bool | None = None) -> None:
        self.windows = current().paths_ignore_case if windows is None else windows
        self.prefixes = tuple(p for p in (self._norm(p.strip()) for p in prefixes) if p)

    def _norm(self, path: str) -> str:
        return path.replace("/", "\\").lower() if self.windows else path

    def match(self, path: str) -> bool:
        """True when ``path`` starts with a trusted prefix."""
        return bool(self.prefixes) and self._norm(path).startswith(self.prefixes)

    def __bool__(self) -> bool:
        return bool(self.prefixes)
