"""YARA core (sans-IO apart from the files it is told to read): compile rules, scan files and memory.

Each ``.yar``/``.yara`` file is compiled alone first, so a broken file is
reported with its file and line (yara's own ``file(line): message``) while
the others load; the good files are then compiled together, one namespace
per file (its path relative to the rules directory, without the
extension), so two files may define rules with the same name.

yara-python releases the GIL while scanning and a compiled ``Rules`` object
may be used by several threads at once, which is what the scan workers do.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import attrs
import yara

from edr.runtime.errors import EdrError, Location

RULE_SUFFIXES: Final = (".yar", ".yara")
#: Matched strings kept per rule and bytes kept per string under match_debug.
MAX_DEBUG_STRINGS: Final = 8
MAX_DEBUG_BYTES: Final = 64


@attrs.frozen
class YaraHit:
    """One matching rule: ``rule_id`` is ``yara:<namespace>:<rule>``."""

    rule: str
    namespace: str
    tags: tuple[str, ...]
    meta: dict[str, Any]
    strings: tuple[dict[str, Any], ...] = ()

    @property
    def rule_id(self) -> str:
        """``yara:<namespace>:<rule>``."""
        return f"yara:{self.namespace}:{self.rule}"


class YaraFileError(EdrError):
    """A YARA rule file (or rules path) that could not be compiled; it is left out, the others load."""


@attrs.define
class YaraRuleSet:
    """Compiled rules plus what loading found: ``files`` loaded, ``errors`` (file and line in each)."""

    rules: Any | None
    files: list[str] = attrs.field(factory=list)
    errors: list[YaraFileError] = attrs.field(factory=list)

    @property
    def rule_count(self) -> int:
        """Number of compiled rules."""
        return sum(1 for _ in self.rules) if self.rules is not None else 0

    def summary(self) -> str:
        """One line for the operational log."""
        return f"{self.rule_count} rule(s) from {len(self.files)} file(s); {len(self.errors)} file(s) skipped"

    def scan_file(self, path: str, timeout: float, *, debug: bool = False) -> list[YaraHit]:
        """Scan the file at ``path``; raises ``yara.TimeoutError`` or ``yara.Error`` (unreadable file)."""
        if self.rules is None:
            return []
        matches = self.rules.match(filepath=path, timeout=_timeout_arg(timeout))
        return [_hit(m, debug) for m in matches]

    def scan_pid(self, pid: int, timeout: float, *, debug: bool = False) -> list[YaraHit]:
        """Scan process ``pid``'s memory (needs ptrace rights: root or CAP_SYS_PTRACE)."""
        if self.rules is None:
            return []
        matches = self.rules.match(pid=pid, timeout=_timeout_arg(timeout))
        return [_hit(m, debug) for m in matches]


def _timeout_arg(timeout: float) -> int:
    # yara-python takes whole seconds; round up so a short timeout is not "no timeout" (0).
    return max(1, int(timeout + 0.999))


def _hit(match: Any, debug: bool) -> YaraHit:
    strings: list[dict[str, Any]] = []
    if debug:
        for sm in match.strings[:MAX_DEBUG_STRINGS]:
            instances = sm.instances
            first = instances[0] if instances else None
            data = bytes(first.matched_data[:MAX_DEBUG_BYTES]) if first is not None else b""
            strings.append({
                "identifier": sm.identifier,
                "offset": first.offset if first is not None else None,
                "data": data.decode("latin-1"),
                "count": len(instances),
            })
    return YaraHit(rule=match.rule, namespace=match.namespace, tags=tuple(match.tags),
                   meta=dict(match.meta), strings=tuple(strings))


def rule_files(root: str | Path) -> list[Path]:
    """Every rule file under ``root`` (or ``root`` itself if it is a file), sorted."""
    base = Path(root)
    if base.is_file():
        return [base]
    if not base.is_dir():
        return []
    return sorted(p for p in base.rglob("*") if p.suffix.lower() in RULE_SUFFIXES and p.is_file())


def namespace_for(path: Path, root: Path) -> str:
    """The namespace of a rule file: its path under ``root`` without the suffix, ``/``-joined."""
    try:
        rel = path.relative_to(root) if root.is_dir() else Path(path.name)
    except ValueError:
        rel = Path(path.name)
    return rel.with_suffix("").as_posix()


def compile_rules(root: str | Path, files: Iterable[Path] | None = None) -> YaraRuleSet:
    """Compile every rule file under ``root``; broken files are reported and left out.

    A missing rules path yields an empty set with one error; it never raises.
    """
    base = Path(root)
    paths = list(files) if files is not None else rule_files(base)
    result = YaraRuleSet(rules=None)
    if not paths:
        if not base.exists():
            result.errors.append(YaraFileError("rules path not found; YARA has no rules", Location(str(base))))
        return result
    good: dict[str, str] = {}
    for path in paths:
        ns = namespace_for(path, base)
        try:
            yara.compile(filepath=str(path))
        except yara.SyntaxError as exc:
            result.errors.append(_located(str(exc), path))
            continue
        except yara.Error as exc:
            result.errors.append(YaraFileError(str(exc), Location(str(path))))
            continue
        good[ns] = str(path)
    if good:
        try:
            result.rules = yara.compile(filepaths=good)
        except yara.Error as exc:
            # Only a cross-file clash can fail here; report it, keep nothing half-built.
            result.errors.append(YaraFileError(f"combining rule files failed: {exc}", Location(str(base))))
            return result
        result.files = list(good.values())
    return result


def _located(message: str, path: Path) -> YaraFileError:
    # yara reports "<file>(<line>): msg" for filepath compiles; make sure the file is named.
    line = None
    at = message.find(f"{path}(")
    if at >= 0:
        digits = message[at + len(str(path)) + 1:].split(")", 1)[0]
        line = int(digits) if digits.isdigit() else None
    text = message if str(path) in message else f"{path}: {message}"
    return YaraFileError(message, Location(str(path), line), message=text)

