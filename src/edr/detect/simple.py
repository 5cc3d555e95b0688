"""Simple TOML rules (rand-guard's format) and the built-in detections, sans-IO.

A rules file holds ``[[rules]]`` tables::

    [[rules]]
    id = "NET-002"
    name = "Interactive tool on suspicious port"
    enabled = true
    type = "network"            # process | file | network
    severity = "medium"         # low | medium | high | critical
    action = "alert"
    direction = "outbound"      # network: inbound | outbound
    ports = [4444, 1337, 31337] # network: DestinationPort
    process_names = ["nc"]      # basename of Image

Matchers: ``parent_names`` and ``process_names`` (basenames of ParentImage
and Image), ``paths`` (prefixes of the file path for file rules, of Image
otherwise), ``patterns`` (shell globs on the file name or full path for file
rules, on CommandLine for process rules, on DestinationHostname or
DestinationIp for network rules), ``operations`` (file: file_create,
file_write, file_rename, file_unlink, file_chmod, file_chown, file_mkdir,
file_rmdir, file_link), ``direction`` and ``ports`` (network). Every matcher
given must match (and); any value in a list may (or). A rule needs at least
one matcher.

Built-in detections have ids ``BUILTIN-*``; a rules-file entry with that id
and ``enabled = false`` switches one off.
"""

from __future__ import annotations

import fnmatch
import ntpath
import re
import tomllib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from edr.detect.alert import Alert
from edr.event import (
    FILE_CHANGE,
    FILE_DELETE,
    FILE_EVENT,
    FILE_RENAME,
    NETWORK_CONNECTION,
    PROCESS_CREATION,
    Event,
    F,
)
from edr.runtime.errors import EdrError, Location, toml_error_line

TYPES: Final = {
    "process": (PROCESS_CREATION,),
    "file": (FILE_EVENT, FILE_DELETE, FILE_RENAME, FILE_CHANGE),
    "network": (NETWORK_CONNECTION,),
}
OPERATIONS: Final = frozenset({
    "file_create", "file_write", "file_rename", "file_unlink", "file_chmod", "file_chown",
    "file_mkdir", "file_rmdir", "file_link",
})
SEVERITIES: Final = ("low", "medium", "high", "critical")
_MATCHERS: Final = ("parent_names", "process_names", "paths", "patterns", "operations", "direction", "ports")
_KEYS: Final = frozenset({"id", "name", "enabled", "type", "severity", "action", "description", *_MATCHERS})
_DEFAULT_OPERATION: Final = {
    FILE_EVENT: "file_create", FILE_DELETE: "file_unlink", FILE_RENAME: "file_rename",
    FILE_CHANGE: "file_write",
}


class RuleError(EdrError, ValueError):
    """A simple rule that cannot be used; names the file and the rule id (``#N`` for the Nth without one)."""

    def __init__(self, file: str, rule: str, reason: str, line: int | None = None) -> None:
        super().__init__(reason, Location(file, line, f"rule {rule}"))
        self.rule = rule


@attrs.frozen
class SimpleRule:
    """One validated rule."""

    id: str
    name: str
    type: str
    severity: str
    enabled: bool = True
    description: str = ""
    parent_names: frozenset[str] | None = None
    process_names: frozenset[str] | None = None
    paths: tuple[str, ...] | None = None
    patterns: re.Pattern[str] | None = None
    operations: frozenset[str] | None = None
    direction: str | None = None
    ports: frozenset[int] | None = None
    source: str = "builtin"

    def matches(self, event: Event) -> bool:
        """True when every matcher of the rule matches ``event``.

        Every matcher must hold, so the order of the checks does not change
        the result; the cheapest and most selective ones (ports, path
        prefixes) run first because this is the per-event hot path.
        """
        f = event.fields
        if self.type == "file":
            target = f.get(F.TARGET_FILENAME)
            source = f.get(F.SOURCE_FILENAME)
            if source is None:
                if not (isinstance(target, str) and target):
                    return False
                paths: tuple[str, ...] = (target,)
            else:
                paths = tuple(p for p in (target, source) if isinstance(p, str) and p)
                if not paths:
                    return False
            if self.paths is not None and not any(p.startswith(self.paths) for p in paths):
                return False
            if self.patterns is not None and not any(
                self.patterns.match(p) or self.patterns.match(_base(p)) for p in paths
            ):
                return False
            if self.operations is not None:
                op = f.get(F.OPERATION) or _DEFAULT_OPERATION.get(event.category)
                if op not in self.operations:
                    return False
            return self._names_match(f)
        if self.type == "network":
            if self.ports is not None and _port(f) not in self.ports:
                return False
            if self.direction is not None:
                initiated = str(f.get(F.INITIATED, "true")).lower() == "true"
                if initiated != (self.direction == "outbound"):
                    return False
            if self.patterns is not None:
                targets = [str(f.get(F.DESTINATION_HOSTNAME) or ""), str(f.get(F.DESTINATION_IP) or "")]
                if not any(self.patterns.match(t) for t in targets if t):
                    return False
        elif self.patterns is not None and not self.patterns.match(str(f.get(F.COMMAND_LINE) or "")):
            return False  # process
        if self.paths is not None:
            image = f.get(F.IMAGE)
            if not isinstance(image, str) or not image.startswith(self.paths):
                return False
        return self._names_match(f)

    def _names_match(self, f: dict[str, Any]) -> bool:
        if self.process_names is not None and _base(f.get(F.IMAGE)) not in self.process_names:
            return False
        return not (self.parent_names is not None and _base(f.get(F.PARENT_IMAGE)) not in self.parent_names)


def _gate(rules: list[SimpleRule]) -> Callable[[dict[str, Any]], bool] | None:
    """A cheap test every event must pass for any of ``rules`` to match, or None.

    Most events match no rule: one check on the union of a matcher that every
    rule has (path prefixes, ports, process names) rejects them without
    running each rule.  It is a necessary condition of each rule's own
    checks, so it never changes which rules match.
    """
    if all(r.type == "file" and r.paths is not None for r in rules):
        prefixes = tuple(dict.fromkeys(p for r in rules for p in r.paths or ()))

        def file_gate(f: dict[str, Any]) -> bool:
            target = f.get(F.TARGET_FILENAME)
            if isinstance(target, str) and target.startswith(prefixes):
                return True
            source = f.get(F.SOURCE_FILENAME)
            return isinstance(source, str) and source.startswith(prefixes)

        return file_gate
    if all(r.type == "network" and r.ports is not None for r in rules):
        ports = frozenset(p for r in rules for p in r.ports or ())

        def port_gate(f: dict[str, Any]) -> bool:
            return _port(f) in ports

        return port_gate
    if all(r.process_names is not None for r in rules):
        names = frozenset(n for r in rules for n in r.process_names or ())
        image_field = F.IMAGE

        def name_gate(f: dict[str, Any]) -> bool:
            image = f.get(image_field)
            if type(image) is str and "\\" not in image:  # a POSIX path: _base's first case, without its call
                return image.rpartition("/")[2] in names
            return _base(image) in names

        return name_gate
    return None


def _port(f: dict[str, Any]) -> int | None:
    """``DestinationPort`` as an int (recorded events may carry it as a string); None if it is not one."""
    port = f.get(F.DESTINATION_PORT)
    if type(port) is int:
        return port
    try:
        return int(port)
    except (TypeError, ValueError):
        return None


def _base(path: Any) -> str:
    if not isinstance(path, str):
        return ""
    if "/" in path or "\\" not in path:
        return path.rpartition("/")[2]  # posixpath.basename, without the call overhead
    return ntpath.basename(path)


def _strings(value: Any, file: str, rid: str, key: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise RuleError(file, rid, f"{key} must be a non-empty list of strings")
    return value


def parse_rule(raw: Any, file: str, index: int) -> SimpleRule:
    """Validate one ``[[rules]]`` table."""
    if not isinstance(raw, dict):
        raise RuleError(file, f"#{index}", "expected a table")
    rid = raw.get("id")
    if not isinstance(rid, str) or not rid:
        raise RuleError(file, f"#{index}", "missing id")
    unknown = set(raw) - _KEYS
    if unknown:
        raise RuleError(file, rid, f"unknown key(s) {', '.join(sorted(unknown))}")
    rtype = raw.get("type")
    if rtype not in TYPES:
        raise RuleError(file, rid, f"unknown type {rtype!r} (process, file or network)")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise RuleError(file, rid, "missing name")
    severity = raw.get("severity", "medium")
    if severity not in SEVERITIES:
        raise RuleError(file, rid, f"unknown severity {severity!r} ({', '.join(SEVERITIES)})")
    action = raw.get("action", "alert")
    if action != "alert":
        raise RuleError(file, rid, f"unknown action {action!r} (only \"alert\")")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RuleError(file, rid, "enabled must be true or false")
    if not any(k in raw for k in _MATCHERS):
        raise RuleError(file, rid, f"no matcher (one of {', '.join(_MATCHERS)})")
    kw: dict[str, Any] = {}
    for key in ("parent_names", "process_names"):
        if key in raw:
            kw[key] = frozenset(_strings(raw[key], file, rid, key))
    if "paths" in raw:
        kw["paths"] = tuple(_strings(raw["paths"], file, rid, "paths"))
    if "patterns" in raw:
        globs = _strings(raw["patterns"], file, rid, "patterns")
        kw["patterns"] = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))
    if "operations" in raw:
        ops = _strings(raw["operations"], file, rid, "operations")
        bad = [o for o in ops if o not in OPERATIONS]
        if bad:
            raise RuleError(file, rid, f"unknown operation(s) {', '.join(bad)} ({', '.join(sorted(OPERATIONS))})")
        if rtype != "file":
            raise RuleError(file, rid, "operations apply to file rules only")
        kw["operations"] = frozenset(ops)
    if "direction" in raw:
        if raw["direction"] not in ("inbound", "outbound"):
            raise RuleError(file, rid, f"direction must be inbound or outbound, not {raw['direction']!r}")
        if rtype != "network":
            raise RuleError(file, rid, "direction applies to network rules only")
        kw["direction"] = raw["direction"]
    if "ports" in raw:
        ports = raw["ports"]
        if (not isinstance(ports, list) or not ports
                or not all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= 65535 for p in ports)):
            raise RuleError(file, rid, "ports must be a non-empty list of integers 0-65535")
        if rtype != "network":
            raise RuleError(file, rid, "ports apply to network rules only")
        kw["ports"] = frozenset(ports)
    return SimpleRule(id=rid, name=name, type=rtype, severity=severity, enabled=enabled,
                      description=str(raw.get("description", "")), source=file, **kw)


BUILTIN_RULES: Final = (
    {
        "id": "BUILTIN-SYSTEMD-UNIT", "name": "Systemd unit file modified", "type": "file",
        "severity": "high", "paths": ["/etc/systemd/system/", "/usr/lib/systemd/system/", "/run/systemd/system/"],
        "patterns": ["*.service"],
        "operations": ["file_create", "file_write", "file_rename", "file_unlink", "file_chmod", "file_link"],
        "description": "A systemd service unit was created or changed: a common persistence technique (T1543.002).",
    },
    {
        "id": "BUILTIN-CRON", "name": "Cron configuration modified", "type": "file", "severity": "high",
        "paths": ["/etc/cron.d/", "/etc/cron.daily/", "/etc/crontab", "/etc/cron.hourly/", "/etc/cron.weekly/",
                  "/etc/cron.monthly/", "/var/spool/cron/"],
        "operations": ["file_create", "file_write", "file_rename", "file_unlink", "file_chmod", "file_link"],
        "description": "Cron configuration was created or changed: a common persistence technique (T1053.003).",
    },
    {
        "id": "BUILTIN-SUSPICIOUS-PORT", "name": "Outbound connection to a suspicious port", "type": "network",
        "severity": "medium", "direction": "outbound", "ports": [4444, 1337, 31337],
        "description": "Ports favoured by reverse shells and C2 frameworks (Metasploit's 4444, 1337, 31337).",
    },
)


@attrs.define
class LoadResult:
    """Rules that loaded and the errors of those that did not."""

    rules: list[SimpleRule]
    errors: list[RuleError]


def load_rules(path: str | Path | None, *, builtin: bool = True) -> LoadResult:
    """Built-ins (unless switched off) plus the rules of ``path`` (missing file: none).

    A bad rule is reported and skipped; the others load. A duplicate id is an
    error for the later rule.
    """
    errors: list[RuleError] = []
    raw_rules: list[tuple[Any, str, int]] = []
    if builtin:
        raw_rules += [(dict(r), "builtin", i) for i, r in enumerate(BUILTIN_RULES, 1)]
    if path is not None and Path(path).is_file():
        file = str(path)
        try:
            data = tomllib.loads(Path(path).read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            errors.append(RuleError(file, "(file)", f"invalid TOML: {exc}", toml_error_line(exc)))
            data = {}
        unknown = set(data) - {"rules"}
        if unknown:
            errors.append(RuleError(file, "(file)", f"unknown top-level key(s) {', '.join(sorted(unknown))}"))
        rules = data.get("rules", [])
        if not isinstance(rules, list):
            errors.append(RuleError(file, "(file)", "rules must be [[rules]] tables"))
            rules = []
        raw_rules += [(r, file, i) for i, r in enumerate(rules, 1)]
    builtin_ids = {r["id"] for r in BUILTIN_RULES}
    out: dict[str, SimpleRule] = {}
    for raw, file, i in raw_rules:
        # `{id = "BUILTIN-CRON", enabled = false}` switches a built-in off.
        if (isinstance(raw, dict) and raw.get("id") in builtin_ids and file != "builtin"
                and set(raw) <= {"id", "enabled"}):
            if raw.get("enabled") is False:
                out.pop(raw["id"], None)
            continue
        try:
            rule = parse_rule(raw, file, i)
        except RuleError as exc:
            errors.append(exc)
            continue
        if rule.id in out:
            errors.append(RuleError(file, rule.id, f"duplicate id (first defined in {out[rule.id].source})"))
            continue
        out[rule.id] = rule
    return LoadResult([r for r in out.values() if r.enabled], errors)


class SimpleEngine:
    """Evaluates simple rules; rules are indexed by the categories they apply to."""

    name = "simple"

    def __init__(self, rules: Iterable[SimpleRule]) -> None:
        self.rules = list(rules)
        self._by_category: dict[str, list[SimpleRule]] = {}
        for rule in self.rules:
            for cat in TYPES[rule.type]:
                self._by_category.setdefault(cat, []).append(rule)
        self._gates = {cat: _gate(rules) for cat, rules in self._by_category.items()}
        self.matches = 0

    def match(self, event: Event) -> list[Alert]:
        """Alerts for every rule ``event`` satisfies."""
        return self.match_batch((event,))

    def match_batch(self, events: Sequence[Event]) -> list[Alert]:
        """Alerts for every rule each of ``events`` satisfies, in event order.

        One call per batch: a replay spends most of its detection time on
        events no rule wants, so the per-event path is this loop's body.
        """
        by_category = self._by_category
        gates = self._gates
        out: list[Alert] = []
        for event in events:
            category = event.category
            rules = by_category.get(category)
            if rules is None:
                continue
            gate = gates[category]
            if gate is None or gate(event.fields):
                out.extend(self._fire(rules, event))
        return out

    def _fire(self, rules: list[SimpleRule], event: Event) -> list[Alert]:
        out = []
        for rule in rules:
            if rule.matches(event):
                out.append(Alert(rule_id=rule.id, rule_name=rule.name, severity=rule.severity,
                                 engine="simple", event=event, description=rule.description))
        self.matches += len(out)
        return out

    def fields_read(self, category: str) -> frozenset[str]:
        """Fields the rules read for ``category`` (for safe aggregation)."""
        if category not in self._by_category:
            return frozenset()
        return frozenset({F.IMAGE, F.PARENT_IMAGE, F.COMMAND_LINE, F.TARGET_FILENAME, F.SOURCE_FILENAME,
                          F.OPERATION, F.INITIATED, F.DESTINATION_PORT, F.DESTINATION_HOSTNAME,
                          F.DESTINATION_IP})
