"""The pack commands: install, update, list, rollback, and what ``edr run`` loads.

Every command is a blocking function (from Trio, run it in a worker
thread) that returns a result object or raises
:class:`~edr.rulepacks.errors.PackError`. Install and update go through the
same steps, under the store's lock:

1. the archive is copied (``install``) or downloaded (``update``) into the
   store's private staging area, so that what is hashed is what is read;
2. its members are listed and checked (:func:`~edr.rulepacks.layout.plan_pack`),
   then read once: each file is hashed and, if it is a rule, written 0600;
3. ``SHA256SUMS`` and the signature are checked
   (:mod:`edr.rulepacks.integrity`);
4. if the content is the active pack's, nothing more happens;
5. every rule is loaded with edr's own loader and compiler
   (``build_ruleset`` with ``ALL_FED``), exactly as the agent would;
6. the pack is refused if no rule loads (``empty``), or if any is rejected
   and ``rules.strict`` is set (``strict``); otherwise it is committed,
   checked with ``check_trusted_tree``, and activated; older packs beyond
   ``rules.keep`` are removed.

Any failure before the switch removes what was written and leaves the
previous pack active; nothing half-installed is ever active.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

from edr import __version__
from edr.config import RulesConfig
from edr.progress import NullProgress, Progress
from edr.rulepacks.active import active_paths
from edr.rulepacks.archive import open_source
from edr.rulepacks.download import Downloaded, download
from edr.rulepacks.errors import PackError
from edr.rulepacks.integrity import (
    check_signature,
    check_sums,
    load_public_key,
    parse_sums,
    tree_digest,
)
from edr.rulepacks.layout import PackPlan, plan_pack
from edr.rulepacks.manifest import FORMAT, PackManifest, RejectionRecord, SignatureRecord
from edr.rulepacks.results import InstallResult, ListResult, PackInfo, RollbackResult
from edr.rulepacks.settings import Limits, limits_of
from edr.rulepacks.store import CONTENT_DIR, PackStore, Staging

if TYPE_CHECKING:
    from edr.detect.sigma.report import LoadReport

log = logging.getLogger("edr.rules")

#: The staging file an archive is copied or downloaded to (removed before the pack is committed).
ARCHIVE_NAME: Final = "source.archive"
def _store(store: PackStore | str | os.PathLike[str]) -> PackStore:
    return store if isinstance(store, PackStore) else PackStore(store)


def _check_settings(settings: RulesConfig) -> None:
    """Refuse unusable signature settings before any work (PackError ``config``)."""
    key = load_public_key(settings.public_key)
    if settings.require_signature and key is None:
        raise PackError("config", "rules.require_signature is true but rules.public_key is not set")


@attrs.define
class _Unpacked:
    hashes: dict[str, str]
    sums: bytes | None = None
    signature: bytes | None = None


def _unpack(source_path: Path, label: str, staging: Staging, limits: Limits,
            progress: Progress) -> tuple[PackPlan, _Unpacked, str]:
    """List, check and read the source; write its rule files into ``staging``. Returns (plan, unpacked, kind)."""
    source = open_source(source_path, limits, label=label)
    try:
        plan = plan_pack(source.entries(), limits)
        unpacked = _Unpacked({})
        total = 0
        seen: set[str] = set()
        progress.begin("read", len(plan.read), "files")
        try:
            for raw, chunks in source.read(plan.read):
                name = plan.read[raw]
                keep = name in (plan.sums, plan.signature)
                digest = hashlib.sha256()
                kept = bytearray()
                size = 0
                out = os.fdopen(staging.create(f"{CONTENT_DIR}/{name}"), "wb") if name in plan.install else None
                try:
                    for chunk in chunks:
                        size += len(chunk)
                        total += len(chunk)
                        if size > limits.max_file_bytes:
                            raise PackError("limit", f"is larger than the {limits.max_file_bytes:,} bytes one file "
                                                     f"of a pack may hold", member=raw)
                        if total > limits.max_unpacked_bytes:
                            raise PackError("limit", f"unpacks to more than rules.max_unpacked_bytes "
                                                     f"({limits.max_unpacked_bytes:,} bytes)")
                        digest.update(chunk)
                        if out is not None:
                            out.write(chunk)
                        if keep:
                            kept += chunk
                finally:
                    if out is not None:
                        out.close()
                unpacked.hashes[name] = digest.hexdigest()
                if name == plan.sums:
                    unpacked.sums = bytes(kept)
                elif name == plan.signature:
                    unpacked.signature = bytes(kept)
                seen.add(raw)
                progress.advance()
        finally:
            progress.end()
        for raw in sorted(set(plan.read) - seen):
            raise PackError("archive", "is listed but its content could not be found", member=raw)
        return plan, unpacked, source.kind
    except PackError as exc:
        raise exc.in_pack(label) from None
    finally:
        source.close()


def _copy_archive(path: Path, staging: Staging, limits: Limits, label: str) -> tuple[Path, str]:
    """Copy the archive at ``path`` into the staging area (bounded); returns the copy and its SHA-256."""
    target = staging.path / ARCHIVE_NAME
    digest = hashlib.sha256()
    size = 0
    try:
        src = open(path, "rb")  # noqa: SIM115 -- closed below with the copy
    except OSError as exc:
        raise PackError("source", f"cannot be read: {exc.strerror or exc}", pack=label) from None
    with src, os.fdopen(staging.create(ARCHIVE_NAME), "wb") as out:
        while chunk := src.read(1 << 20):
            size += len(chunk)
            if size > limits.max_archive_bytes:
                raise PackError("limit", f"the archive is larger than rules.max_download_bytes "
                                         f"({limits.max_archive_bytes:,} bytes)", pack=label)
            digest.update(chunk)
            out.write(chunk)
    return target, digest.hexdigest()


def _validate(staging: Staging, plan: PackPlan, placeholders: Mapping[str, list[str]] | None,
              progress: Progress) -> LoadReport:
    """Load every rule of the staged pack as the agent would; paths in the report are relative to the pack."""
    from edr.detect.sigma.logsources import ALL_FED
    from edr.detect.sigma.ruleset import build_ruleset

    dirs = [str(staging.content / d) if d else str(staging.content) for d in plan.rule_dirs]
    # the compile reports each rule file (phase "compile") when the pack holds any
    progress.begin("validate", None, "rules")
    try:
        report = build_ruleset(dirs, placeholders=dict(placeholders or {}), fed=ALL_FED,
                               progress=_ValidateProgress(progress)).report
    finally:
        progress.end()
    base = str(staging.content) + os.sep
    for rejection in report.rejections:
        rejection.path = rejection.path.removeprefix(base)
    for warning in report.warnings:
        warning["path"] = warning.get("path", "").removeprefix(base)
    return report


class _ValidateProgress:
    """The rule compile's progress shown as the ``validate`` phase of an install."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def begin(self, phase: str, total: int | None = None, unit: str = "") -> None:
        self.progress.begin("validate", total, unit)

    def advance(self, amount: int = 1) -> None:
        self.progress.advance(amount)

    def end(self) -> None:
        """Nothing: the validate phase ends when the whole validation does."""


def _pack_id(sequence: int, digest: str) -> tuple[str, str]:
    now = datetime.now(UTC)
    return (f"{sequence:04d}-{now:%Y%m%dT%H%M%SZ}-{digest.removeprefix('sha256:')[:8]}",
            now.isoformat(timespec="seconds").replace("+00:00", "Z"))


def _install_staged(archive: Path | None, source_path: Path, label: str, store: PackStore, staging: Staging,
                    settings: RulesConfig, progress: Progress, placeholders: Mapping[str, list[str]] | None,
                    source_sha256: str | None, started: float, cleaned: list[str],
                    downloaded: Downloaded | None) -> InstallResult:
    """Steps 2 to 6 of the module doc, the staging area made and the archive (if any) in it."""
    limits = limits_of(settings)
    key = load_public_key(settings.public_key)
    plan, unpacked, kind = _unpack(source_path, label, staging, limits, progress)
    if archive is not None:
        archive.unlink()
    try:
        if unpacked.sums is not None:
            check_sums(parse_sums(unpacked.sums), unpacked.hashes, plan.install)
        signature = check_signature(unpacked.sums, unpacked.signature, key, required=settings.require_signature)
    except PackError as exc:
        raise exc.in_pack(label) from None
    installed = {name: unpacked.hashes[name] for name in plan.install}
    digest = tree_digest(installed)

    warnings: list[str] = []
    try:
        previous = store.active_id()
        active_manifest = store.manifest(previous) if previous else None
    except PackError as exc:
        previous, active_manifest = None, None
        warnings.append(f"the active pack could not be read and is replaced: {exc}")
    if active_manifest is not None and active_manifest.digest == digest:
        staging.discard()
        m = active_manifest
        return InstallResult(
            pack_id=m.id, changed=False, source=label, source_kind=kind, source_sha256=source_sha256,
            digest=digest, rule_dirs=active_paths(store), rule_files=m.rule_files, loaded=m.loaded, inert=m.inert,
            rejected=m.rejected, correlations=m.correlations, report=None, signature=signature,
            has_sums=unpacked.sums is not None, previous=m.id, pruned=[], cleaned=cleaned, warnings=warnings,
            seconds=time.monotonic() - started, download=downloaded)

    report = _validate(staging, plan, placeholders, progress)
    if report.loaded + report.inert == 0:
        raise PackError("empty", f"no rule of the pack loads ({report.files:,} rule files, "
                                 f"{report.rejected:,} rejected)", pack=label, report=report)
    if settings.strict and report.rejected:
        raise PackError("strict", f"{report.rejected:,} rules were rejected and rules.strict is set",
                        pack=label, report=report)
    for name, data in ((plan.sums, unpacked.sums), (plan.signature, unpacked.signature)):
        if name is not None and data is not None:
            staging.write(name, data)  # kept beside content/ for later audits
    pack_id, installed_at = _pack_id(store.next_sequence(), digest)
    manifest = PackManifest(
        format=FORMAT, id=pack_id, sequence=int(pack_id.partition("-")[0]), source=label, source_kind=kind,
        source_sha256=source_sha256, installed_at=installed_at, digest=digest, rule_dirs=list(plan.rule_dirs),
        files=installed, rule_files=plan.rule_files, loaded=report.loaded, inert=report.inert,
        rejected=report.rejected, correlations=report.correlations, has_sums=unpacked.sums is not None,
        signature=SignatureRecord(signature.status, signature.key_id, signature.trusted_comment),
        rejections=[RejectionRecord(r.path, r.stage, r.reason, r.title, r.rule_id) for r in report.rejections],
        edr_version=__version__,
    )
    progress.begin("activate", None, "")
    try:
        final = store.commit(staging, manifest)
        try:
            store.activate(pack_id)
        except BaseException:
            import shutil

            shutil.rmtree(final, ignore_errors=True)
            raise
    finally:
        progress.end()
    pruned: list[str] = []
    try:
        pruned = store.prune(settings.keep)
    except OSError as exc:
        warnings.append(f"older packs could not all be removed: {exc}")
    return InstallResult(
        pack_id=pack_id, changed=True, source=label, source_kind=kind, source_sha256=source_sha256, digest=digest,
        rule_dirs=active_paths(store), rule_files=plan.rule_files, loaded=report.loaded, inert=report.inert,
        rejected=report.rejected, correlations=report.correlations, report=report, signature=signature,
        has_sums=unpacked.sums is not None, previous=previous, pruned=pruned, cleaned=cleaned, warnings=warnings,
        seconds=time.monotonic() - started, download=downloaded)


@contextlib.contextmanager
def _staging_under_lock(store: PackStore) -> Iterator[tuple[Staging, list[str]]]:
    """The store's lock, leftovers removed, and a new staging area that is removed unless committed."""
    with store.locked():
        try:
            cleaned = store.clean_staging()
            staging = store.staging()
        except OSError as exc:
            raise PackError("store", f"cannot prepare {store.packs}: {exc.strerror or exc}") from None
        try:
            yield staging, cleaned
        finally:
            staging.discard()  # a no-op once the pack was renamed into place


def _store_failure(exc: OSError, label: str) -> PackError:
    where = f" {exc.filename}" if exc.filename else ""
    return PackError("store", f"cannot write the pack{where}: {exc.strerror or exc}", pack=label)


def install(source: str | os.PathLike[str], store: PackStore | str | os.PathLike[str], settings: RulesConfig,
            progress: Progress | None = None, *,
            placeholders: Mapping[str, list[str]] | None = None) -> InstallResult:
    """Install and activate the pack at ``source`` (a directory, a .zip or a tar archive); never uses the network.

    ``placeholders`` are ``[sigma] placeholders``, so rules load as the
    agent will load them. Raises PackError; the previous pack then stays
    active. Blocking, and holds the store's lock throughout.
    """
    store, progress = _store(store), progress or NullProgress()
    label = str(source)
    started = time.monotonic()
    path = Path(source)
    if not path.exists():
        raise PackError("source", "does not exist", pack=label)
    _check_settings(settings)  # a bad key is a configuration error: say so before any work
    with _staging_under_lock(store) as (staging, cleaned):
        try:
            archive, sha = None, None
            if not path.is_dir():
                archive, sha = _copy_archive(path, staging, limits_of(settings), label)
            return _install_staged(archive, archive or path, label, store, staging, settings, progress,
                                   placeholders, sha, started, cleaned, None)
        except PackError:
            raise
        except OSError as exc:
            raise _store_failure(exc, label) from None


def update(store: PackStore | str | os.PathLike[str], settings: RulesConfig, progress: Progress | None = None, *,
           url: str | None = None, placeholders: Mapping[str, list[str]] | None = None) -> InstallResult:
    """Download ``rules.update_url`` (or ``url``) and install it exactly as :func:`install` does.

    Raises PackError (``download`` when the transfer fails); the previous
    pack then stays active. Blocking.
    """
    store, progress = _store(store), progress or NullProgress()
    url = url or settings.update_url
    started = time.monotonic()
    _check_settings(settings)
    with _staging_under_lock(store) as (staging, cleaned):
        try:
            archive = staging.path / ARCHIVE_NAME
            with os.fdopen(staging.create(ARCHIVE_NAME), "wb") as out:
                fetched = download(url, out, settings, progress)
            return _install_staged(archive, archive, url, store, staging, settings, progress, placeholders,
                                   fetched.sha256, started, cleaned, fetched)
        except PackError:
            raise
        except OSError as exc:
            raise _store_failure(exc, url) from None


def list_packs(store: PackStore | str | os.PathLike[str]) -> ListResult:
    """The installed packs, oldest first; a pack whose manifest cannot be read is listed with its problem."""
    store = _store(store)
    problem = None
    try:
        active = store.active_id()
    except PackError as exc:
        active, problem = None, str(exc)
    packs = []
    for pack_id in store.pack_ids():
        try:
            packs.append(PackInfo.of(store.manifest(pack_id), active=pack_id == active))
        except PackError as exc:
            packs.append(PackInfo(id=pack_id, active=pack_id == active, problem=exc.reason))
    return ListResult(store=str(store.root), packs=packs, active=active, problem=problem)


def rollback(store: PackStore | str | os.PathLike[str], settings: RulesConfig, *,
             to: str | None = None) -> RollbackResult:
    """Re-activate the pack installed before the active one (or pack ``to``), after checking it is intact.

    The pack's files are hashed again against its manifest and its tree
    must pass ``check_trusted_tree``; a pack that fails is not activated
    (PackError names the file). Rolling back again goes further back.
    ``settings`` is accepted for symmetry with the other commands.
    """
    del settings
    store = _store(store)
    with store.locked():
        try:
            active = store.active_id()
        except PackError:
            if to is None:
                raise
            active = None
        ids = store.pack_ids()
        if to is not None:
            if to not in ids:
                raise PackError("store", "is not installed ('edr rules list' shows the packs)", pack=to)
            if to == active:
                raise PackError("store", "is already the active pack", pack=to)
            target = to
        else:
            if active is None:
                raise PackError("store", "no pack is active: name the pack to activate ('edr rules list')")
            older = ids[:ids.index(active)] if active in ids else []
            if not older:
                raise PackError("store", "no earlier pack is installed to roll back to", pack=active)
            target = older[-1]
        manifest = store.verify(target)
        store.activate(target)
    return RollbackResult(previous=active, active=PackInfo.of(manifest, active=True),
                          rule_dirs=active_paths(store))


__all__ = ["install", "list_packs", "rollback", "update"]
