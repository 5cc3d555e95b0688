"""What the pack commands return: everything a CLI prints, as text (``to_text``) or JSON (``to_json``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from edr.rulepacks.download import Downloaded
from edr.rulepacks.integrity import SignatureInfo
from edr.rulepacks.manifest import PackManifest

if TYPE_CHECKING:
    from edr.detect.sigma.report import LoadReport


def _signature_text(signature: SignatureInfo) -> str:
    if signature.status == "verified":
        return f"signed (key {signature.key_id})"
    if signature.status == "unverified":
        return f"signature not checked: no rules.public_key (key {signature.key_id})"
    return "unsigned"


@attrs.frozen
class InstallResult:
    """The outcome of ``install`` or ``update``.

    ``changed`` is False when the pack's content was already the active
    pack's (nothing was written; ``report`` is then None and the counts are
    the active pack's). ``rule_dirs`` are absolute: what ``edr run`` loads.
    ``previous`` is the pack that was active before, ``pruned`` the packs
    removed to honour ``rules.keep``, ``cleaned`` what interrupted installs
    had left; ``warnings`` are problems that did not stop the install.
    """

    pack_id: str
    changed: bool
    source: str
    source_kind: str
    source_sha256: str | None
    digest: str
    rule_dirs: list[str]
    rule_files: int
    loaded: int
    inert: int
    rejected: int
    correlations: int
    report: LoadReport | None
    signature: SignatureInfo
    has_sums: bool
    previous: str | None
    pruned: list[str]
    cleaned: list[str]
    warnings: list[str]
    seconds: float
    download: Downloaded | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (the load report included when rules were loaded)."""
        doc = attrs.asdict(self, recurse=False)
        doc["signature"] = attrs.asdict(self.signature)
        doc["report"] = self.report.to_json() if self.report is not None else None
        doc["download"] = self.download.to_json() if self.download is not None else None
        doc["seconds"] = round(self.seconds, 3)
        return doc

    def to_text(self, *, verbose: bool = False) -> str:
        """Lines for people: what was installed, counts, rejections; the per-logsource table with ``verbose``."""
        lines = []
        if self.download is not None:
            lines.append(f"downloaded {self.download.final_url} ({self.download.size:,} bytes, "
                         f"sha256 {self.download.sha256})")
        if not self.changed:
            lines.append(f"pack {self.pack_id} already has this content and is active: nothing to do")
        else:
            lines.append(f"installed and activated pack {self.pack_id} from {self.source} ({self.source_kind})")
            if self.previous:
                lines.append(f"previous pack {self.previous} is kept: 'edr rules rollback' re-activates it")
        lines.append(f"rules: {self.loaded:,} loaded, {self.inert:,} inert, {self.rejected:,} rejected "
                     f"({self.rule_files:,} files, {self.correlations:,} correlations)")
        lines.append(f"integrity: {'SHA256SUMS checked' if self.has_sums else 'no SHA256SUMS'}; "
                     f"{_signature_text(self.signature)}; digest {self.digest}")
        lines.append("rule directories: " + ", ".join(self.rule_dirs))
        if self.pruned:
            lines.append("removed older packs: " + ", ".join(self.pruned))
        lines.extend(f"warning: {w}" for w in self.warnings)
        if self.report is not None:
            if verbose:
                lines.extend(["", self.report.to_text()])
            elif self.report.rejections:
                lines.append("rejected:")
                for r in self.report.rejections[:50]:
                    lines.append(f"  [{r.stage}] {r.path}: {r.reason}")
                if len(self.report.rejections) > 50:
                    lines.append(f"  ... and {len(self.report.rejections) - 50} more (--json or --verbose)")
        return "\n".join(lines)


@attrs.frozen
class PackInfo:
    """One installed pack as ``list`` shows it; ``problem`` is set (and the rest may be empty) when it is broken."""

    id: str
    active: bool
    installed_at: str = ""
    source: str = ""
    source_kind: str = ""
    digest: str = ""
    rule_files: int = 0
    loaded: int = 0
    inert: int = 0
    rejected: int = 0
    signature: SignatureInfo = attrs.field(factory=SignatureInfo)
    has_sums: bool = False
    problem: str | None = None

    @classmethod
    def of(cls, manifest: PackManifest, *, active: bool) -> PackInfo:
        """The info of an installed pack from its manifest."""
        sig = manifest.signature
        return cls(id=manifest.id, active=active, installed_at=manifest.installed_at, source=manifest.source,
                   source_kind=manifest.source_kind, digest=manifest.digest, rule_files=manifest.rule_files,
                   loaded=manifest.loaded, inert=manifest.inert, rejected=manifest.rejected,
                   signature=SignatureInfo(sig.status, sig.key_id, sig.trusted_comment),
                   has_sums=manifest.has_sums)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        doc = attrs.asdict(self, recurse=False)
        doc["signature"] = attrs.asdict(self.signature)
        doc["signed"] = self.signature.signed
        return doc


@attrs.frozen
class ListResult:
    """The installed packs, oldest first, and the store they are in."""

    store: str
    packs: list[PackInfo]
    active: str | None
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {"store": self.store, "active": self.active, "problem": self.problem,
                "packs": [p.to_json() for p in self.packs]}

    def to_text(self) -> str:
        """A table: active mark, id, installed, counts, signature, source, digest."""
        if not self.packs:
            return (f"no rule pack installed in {self.store}: 'edr rules update' downloads SigmaHQ's, "
                    f"'edr rules install FILE' installs one offline")
        lines = [f"{'':1} {'pack':32} {'installed':20} {'loaded':>7} {'inert':>6} {'rejected':>8}  "
                 f"{'signed':10} source / digest"]
        for p in self.packs:
            mark = "*" if p.active else ""
            if p.problem:
                lines.append(f"{mark:1} {p.id:32} BROKEN: {p.problem}")
                continue
            signed = {"verified": "yes", "unverified": "unchecked"}.get(p.signature.status, "no")
            lines.append(f"{mark:1} {p.id:32} {p.installed_at:20} {p.loaded:>7,} {p.inert:>6,} {p.rejected:>8,}  "
                         f"{signed:10} {p.source}")
            lines.append(f"{'':1} {'':32} {'':20} {'':>7} {'':>6} {'':>8}  {'':10} {p.digest}")
        if self.problem:
            lines.append(f"warning: {self.problem}")
        lines.append("* active")
        return "\n".join(lines)


@attrs.frozen
class RollbackResult:
    """A rollback: the pack that was active and the one that is now."""

    previous: str | None
    active: PackInfo
    rule_dirs: list[str]

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {"previous": self.previous, "active": self.active.to_json(), "rule_dirs": self.rule_dirs}

    def to_text(self) -> str:
        """One line for people."""
        was = f" (was {self.previous})" if self.previous else ""
        return (f"activated pack {self.active.id}{was}: {self.active.loaded:,} rules loaded, "
                f"from {self.active.source}, installed {self.active.installed_at}")
