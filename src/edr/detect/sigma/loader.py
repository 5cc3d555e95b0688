"""Find Sigma files and parse them with pySigma, collecting every failure.

Directories are searched recursively for ``.yml`` and ``.yaml``; a file may
hold several YAML documents (rules, ``action: global`` templates, filters,
correlations). A file or rule that fails is recorded as a :class:`Rejection`
with its path and reason and skipped: loading never aborts. Sigma filters
are applied to the rules they name once every file is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import attrs
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaRuleLocation
from sigma.filters import SigmaFilter
from sigma.modifiers import SigmaWideModifier, modifier_mapping
from sigma.rule import SigmaRule

from edr.runtime.errors import EdrError, Location

# The Sigma specification names ``utf16le`` as an alias of ``wide``; pySigma 2.0
# lacks the alias, so rules using it would be rejected for a spelling.
modifier_mapping.setdefault("utf16le", SigmaWideModifier)

RULE_SUFFIXES = (".yml", ".yaml")


@attrs.define
class Rejection:
    """A rule (or file) that did not load, and why."""

    path: str
    reason: str
    stage: str  # "read", "parse", "filter", "compile", "correlation"
    title: str = ""
    rule_id: str = ""
    logsource: str = ""

    @property
    def location(self) -> Location:
        """The rule file, and the rule's id (else its title) when the rule was read."""
        return Location(self.path, None, self.rule_id or self.title or None)

    def error(self) -> SigmaRuleError:
        """This rejection as an :class:`~edr.errors.EdrError` (its message: ``path: [id: ]stage: reason``)."""
        return SigmaRuleError(f"{self.stage}: {self.reason}", self.location)


class SigmaRuleError(EdrError):
    """A Sigma rule (or rule file) that was rejected; ``location`` names the file and the rule."""


@attrs.define
class ParsedFiles:
    """What pySigma made of the rule files."""

    files: list[Path]
    rules: list[SigmaRule]
    correlations: list[SigmaCorrelationRule]
    filters: list[SigmaFilter]
    rejections: list[Rejection]


def find_rule_files(paths: list[str]) -> tuple[list[Path], list[Rejection]]:
    """Rule files under ``paths`` (files or directories), sorted, and missing paths."""
    files: list[Path] = []
    missing: list[Rejection] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*")
                                if p.suffix.lower() in RULE_SUFFIXES and p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            missing.append(Rejection(str(path), "path does not exist", "read"))
    return list(dict.fromkeys(files)), missing


def _identity(rule: SigmaRule | SigmaCorrelationRule | SigmaFilter) -> tuple[str, str]:
    return (rule.title or "", str(rule.id) if rule.id else "")


def _errors_text(errors: list[Exception]) -> str:
    return "; ".join(dict.fromkeys(str(e) for e in errors))


def _parse_file(path: Path) -> Iterator[SigmaRule | SigmaCorrelationRule | SigmaFilter | Rejection]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        yield Rejection(str(path), f"cannot read: {exc}", "read")
        return
    try:
        collection = SigmaCollection.from_yaml(
            text, collect_errors=True, source=SigmaRuleLocation(path),
            collect_filters=True, resolve_references=False,
        )
    except Exception as exc:  # YAML errors and anything pySigma raises despite collect_errors
        yield Rejection(str(path), f"{type(exc).__name__}: {exc}", "parse")
        return
    reported: set[str] = set()
    for item in (*collection.rules, *collection.filters):
        if item.errors:
            title, rule_id = _identity(item)
            reason = _errors_text(item.errors)
            reported.update(str(e) for e in item.errors)
            yield Rejection(str(path), reason, "parse", title, rule_id)
        else:
            yield item
    leftover = [e for e in collection.errors if str(e) not in reported]
    if leftover:
        yield Rejection(str(path), _errors_text(leftover), "parse")


def parse_files(paths: list[str]) -> ParsedFiles:
    """Parse every rule file under ``paths``; apply filters to the rules they name."""
    files, rejections = find_rule_files(paths)
    rules: list[SigmaRule] = []
    correlations: list[SigmaCorrelationRule] = []
    filters: list[SigmaFilter] = []
    for path in files:
        for item in _parse_file(path):
            if isinstance(item, Rejection):
                rejections.append(item)
            elif isinstance(item, SigmaCorrelationRule):
                correlations.append(item)
            elif isinstance(item, SigmaFilter):
                filters.append(item)
            else:
                rules.append(item)
    if filters:
        filtered: list[SigmaRule] = []
        for rule in rules:
            try:
                for sigma_filter in filters:
                    result = sigma_filter.apply_on_rule(rule)
                    assert isinstance(result, SigmaRule)
                    rule = result
            except Exception as exc:
                title, rule_id = _identity(rule)
                source = rule.source.path if rule.source else ""
                rejections.append(Rejection(str(source), f"filter failed: {exc}", "filter",
                                            title, rule_id))
                continue
            filtered.append(rule)
        rules = filtered
    return ParsedFiles(files, rules, correlations, filters, rejections)
