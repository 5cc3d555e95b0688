"""The one exception of rule packs: what was refused, where, and why.

A pack is refused as a whole (nothing of it becomes active) for one of the
reasons named by :attr:`PackError.kind`; the message names the pack (its
source or its id), the file inside it and, for a text file such as
``SHA256SUMS``, the line, the way pySigma's errors carry their location.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from edr.detect.sigma.report import LoadReport

#: Every value of :attr:`PackError.kind`, with what it means.
KINDS: Final[dict[str, str]] = {
    "source": "the source is missing or is neither a directory, a zip nor a tar archive",
    "archive": "the archive is unreadable, truncated or corrupt",
    "unsafe": "a member could be written outside the pack (absolute path, '..', link, device)",
    "limit": "the pack exceeds a size or file-count limit",
    "integrity": "SHA256SUMS is malformed, or a file is missing, unlisted or does not match it",
    "signature": "the signature is missing (when required), malformed or does not verify",
    "empty": "no rule of the pack loads",
    "strict": "rules.strict is set and some rules were rejected",
    "download": "the pack could not be downloaded",
    "store": "the pack store cannot be read or written",
    "config": "a [rules] setting cannot be used",
}


class PackError(Exception):
    """A rule pack refused, or a store operation that failed.

    ``pack`` names the pack (the source as given, a URL, or an installed
    pack's id), ``member`` the file inside it when one is to blame, ``line``
    the line of that file, ``kind`` one of :data:`KINDS` and ``reason`` what
    is wrong, in words meant for the operator. ``report`` is the rule
    validation report when the pack was refused after its rules were loaded
    (``empty``, ``strict``), so the caller can print which rules failed.
    """

    def __init__(self, kind: str, reason: str, *, pack: str = "", member: str | None = None,
                 line: int | None = None, report: LoadReport | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown PackError kind {kind!r}")
        self.kind = kind
        self.reason = reason
        self.pack = pack
        self.member = member
        self.line = line
        self.report = report
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.member:
            where = self.member + (f":{self.line}" if self.line is not None else "") + ": "
        head = f"rule pack {self.pack}: " if self.pack else "rule pack: "
        return f"{head}{where}{self.reason}"

    def in_pack(self, pack: str) -> PackError:
        """This error, naming ``pack`` unless it already names one (for errors raised by the cores)."""
        if not self.pack:
            self.pack = pack
            self.args = (str(self),)
        return self

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict: ``error`` (the message) and each part of it."""
        doc: dict[str, Any] = {"error": str(self), "kind": self.kind, "pack": self.pack,
                               "member": self.member, "line": self.line, "reason": self.reason}
        if self.report is not None:
            doc["report"] = self.report.to_json()
        return doc
