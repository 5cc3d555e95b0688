"""Building rule packs for the tests: real rules, real zip and tar archives, real minisign signatures."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path

import minisign

from edr.config import RulesConfig
from edr.detect.sigma.logsources import ALL_FED
from edr.detect.sigma.report import LoadReport
from edr.detect.sigma.ruleset import build_ruleset

Files = Mapping[str, bytes]


def rule(title: str, *, image: str = "/usr/bin/evil", product: str = "linux",
         category: str = "process_creation") -> bytes:
    """A valid Sigma rule (its id derived from the title, so equal titles give equal rules)."""
    rule_id = uuid.uuid5(uuid.NAMESPACE_URL, title)
    return (f"title: {title}\nid: {rule_id}\nstatus: test\nlevel: high\n"
            f"logsource:\n  product: {product}\n  category: {category}\n"
            f"detection:\n  selection:\n    Image|endswith: '{image}'\n  condition: selection\n").encode()


#: A file the Sigma loader rejects: YAML, but no logsource and no detection.
BROKEN_RULE = b"title: Not a rule\nid: 5a0e4d3c-0000-4000-8000-000000000000\nstatus: test\n"


def sigmahq_like(n: int = 3, *, tag: str = "a") -> dict[str, bytes]:
    """A pack laid out like SigmaHQ's release zip: rules/ and rules-emerging-threats/, plus a licence."""
    files = {f"rules/linux/process_creation/proc_{tag}_{i}.yml": rule(f"Rule {tag} {i}", image=f"/x/{tag}{i}")
             for i in range(n)}
    files[f"rules-emerging-threats/2026/et_{tag}.yml"] = rule(f"ET {tag}", image=f"/et/{tag}")
    files["LICENSE"] = b"Detection Rule License (DRL) 1.1\n"
    return files


def sums(files: Files) -> bytes:
    """A SHA256SUMS for ``files``, as ``sha256sum`` writes it."""
    return "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(files.items())).encode()


def signed(files: Files, key: minisign.SecretKey, *, listed: Files | None = None) -> dict[str, bytes]:
    """``files`` plus SHA256SUMS (of ``listed``, default ``files``) and its minisign signature by ``key``."""
    out = dict(files)
    out["SHA256SUMS"] = sums(listed if listed is not None else files)
    signature = key.sign(out["SHA256SUMS"], trusted_comment="timestamp:1700000000\tfile:SHA256SUMS")
    out["SHA256SUMS.minisig"] = bytes(signature) + b"\n"
    return out


def write_tree(root: Path, files: Files) -> Path:
    """``files`` written under ``root``."""
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def make_zip(path: Path, files: Files, *, prefix: str = "") -> Path:
    """A zip of ``files`` (each name under ``prefix``)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(prefix + name, data)
    return path


def zip_symlink(zf: zipfile.ZipFile, name: str, target: str) -> None:
    """Add a Unix symbolic link entry, as ``zip --symlinks`` stores it."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, target)


def make_tar(path: Path, files: Files, *, mode: str = "w:gz", prefix: str = "") -> Path:
    """A tar of ``files`` (``mode`` picks the compression)."""
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            add_tar_file(tf, prefix + name, data)
    return path


def add_tar_file(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add a regular file."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tf.addfile(info, io.BytesIO(data))


def add_tar_special(tf: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    """Add a member of tar type ``kind`` (tarfile.SYMTYPE, LNKTYPE, CHRTYPE, FIFOTYPE...)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    tf.addfile(info)


def truncated(path: Path, out: Path, *, keep: float = 0.6) -> Path:
    """The first ``keep`` of the archive at ``path``, written to ``out``."""
    data = path.read_bytes()
    out.write_bytes(data[: int(len(data) * keep)])
    return out


def settings(tmp_path: Path, **overrides: object) -> RulesConfig:
    """[rules] with the store under ``tmp_path``."""
    return RulesConfig(store_directory=str(tmp_path / "store"), **overrides)  # type: ignore[arg-type]


def load(paths: list[str]) -> LoadReport:
    """Load ``paths`` with edr's Sigma loader, as the agent does."""
    return build_ruleset(paths, placeholders={}, fed=ALL_FED).report


def pack_entries(store_root: Path) -> list[str]:
    """Everything under the store's packs/ directory."""
    packs = store_root / "packs"
    return sorted(os.listdir(packs)) if packs.is_dir() else []
