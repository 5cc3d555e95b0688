"""A machine check of alert documents against ECS's field list and edr's schema, sans-IO.

:func:`check_document` says what is wrong with one document, as :class:`Problem` values naming
the key: a key that is neither an ECS field, a Winlogbeat ``winlog.*`` field edr writes, a
compatibility key (``rule.severity``, ``rule.engine``) nor an ``edr.*`` key edr declares
(:mod:`edr.alerts.ecs_schema`); a value whose JSON type is not the field's Elasticsearch type
(text for ``keyword``, ``wildcard``, ``match_only_text``; an integer within 64 bits for ``long``; a
finite number for ``float`` and ``double``; ISO 8601 text for ``date``; a valid address for ``ip``;
``true``/``false`` for ``boolean``; an object for ``object``, ``nested`` and ``flattened``); a list
where ECS does not normalize the field to an array, or a single value where it does; inside edr's
``flattened`` objects, a name or value that breaks the raw-field rule (:mod:`edr.alerts.raw_fields`);
an ``ecs.version`` other than the release checked against. A flat key below a field ECS normalizes
to an array of objects (``dns.answers.ttl``, ``threat.enrichments.matched.atomic``) stands for one
such object, which Elasticsearch takes as it is: the key's own normalization is what is checked.

By default the ECS part is the vendored list of the fields edr writes (:mod:`edr.alerts.ecs_fields`);
give :func:`load_ecs_fields` of ECS's complete list (``../shared/ecs/ecs-9.4.0-fields.json``) to
check against all of ECS. :func:`check_alert_files` runs the check over every alert line of the
daily alert files under a directory, as the test suite does at the end of every session.
"""

from __future__ import annotations

import ipaddress
import math
import os
import stat
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final, NamedTuple

import attrs
import orjson

from edr.alerts.ecs_schema import (
    COMPAT_FIELDS,
    ECS_SPECS,
    ECS_VERSION,
    EDR_FIELDS,
    WINLOGBEAT_FIELDS,
    FieldSpec,
    load_ecs_field_list,
)
from edr.alerts.raw_fields import RAW_NAME, is_raw_leaf

_TEXT: Final = frozenset({"keyword", "wildcard", "match_only_text", "constant_keyword", "text"})
_INTEGER: Final = frozenset({"long", "integer", "short", "byte"})
_NUMBER: Final = frozenset({"float", "double", "half_float", "scaled_float"})
_OBJECT: Final = frozenset({"object", "nested", "flattened"})
_LONG_MIN: Final = -(1 << 63)
_LONG_END: Final = 1 << 63


class Problem(NamedTuple):
    """What is wrong with one key of a document."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


@attrs.frozen
class EcsFields:
    """An ECS release's fields (name -> :class:`FieldSpec`), the ECS part of the check."""

    version: str
    fields: Mapping[str, FieldSpec]


#: The ECS fields edr writes, vendored from ECS's field list.
VENDORED: Final = EcsFields(ECS_VERSION, ECS_SPECS)


def load_ecs_fields(path: str | os.PathLike[str]) -> EcsFields:
    """ECS's field list from ``path`` (``ecs-<version>-fields.json``); OSError or ValueError naming the file."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        version, fields = load_ecs_field_list(data)
    except ValueError as exc:
        raise ValueError(f"{os.fspath(path)}: {exc}") from None
    return EcsFields(version, fields)


def field_spec(key: str, ecs: EcsFields = VENDORED) -> tuple[FieldSpec, str] | None:
    """The spec of ``key`` and its kind (``ECS``, ``Winlogbeat``, ``compatibility``, ``edr``), or None."""
    spec = ecs.fields.get(key)
    if spec is not None:
        return spec, "ECS"
    spec = WINLOGBEAT_FIELDS.get(key)
    if spec is not None:
        return spec, "Winlogbeat"
    spec = COMPAT_FIELDS.get(key)
    if spec is not None:
        return spec, "compatibility"
    declared = EDR_FIELDS.get(key)
    if declared is not None:
        return declared[0], "edr"
    return None


def check_document(doc: Any, ecs: EcsFields = VENDORED) -> list[Problem]:
    """Every problem of alert document ``doc`` (flat dotted keys); empty when it is valid."""
    if not isinstance(doc, dict):
        return [Problem("(document)", f"is a JSON {type(doc).__name__}, not an object")]
    problems: list[Problem] = []
    for key, value in doc.items():
        if not isinstance(key, str):
            problems.append(Problem(repr(key), "key is not text"))
            continue
        found = field_spec(key, ecs)
        if found is None:
            problems.append(Problem(key, _unknown(key, ecs)))
            continue
        spec, kind = found
        problems.extend(Problem(key, m) for m in _value_problems(spec, value, kind))
        if key == "ecs.version" and value != ecs.version:
            problems.append(Problem(key, f"is {value!r}, but the field list checked against is ECS {ecs.version}"))
    return problems


def _unknown(key: str, ecs: EcsFields) -> str:
    if key.startswith("edr."):
        parts = key.split(".")
        for i in range(len(parts) - 1, 1, -1):
            parent = ".".join(parts[:i])
            if parent in EDR_FIELDS:
                return (f"is a key of its own below {parent} ({EDR_FIELDS[parent][0].type}); "
                        f"its content belongs in that object")
        return "is an edr.* key edr's schema does not declare (edr.alerts.ecs_schema.EDR_FIELDS)"
    return (f"is not an ECS {ecs.version} field, a Winlogbeat winlog.* field edr writes, "
            "nor a compatibility key (rule.severity, rule.engine)")


def _value_problems(spec: FieldSpec, value: Any, kind: str) -> list[str]:
    if value is None:
        return []  # JSON null: Elasticsearch indexes nothing, whatever the type
    if spec.array:
        if not isinstance(value, list):
            return [f"{kind} normalizes it to an array; it is a JSON {_json_type(value)}"]
        return [f"[{i}] {m}" for i, item in enumerate(value) for m in _scalar_problems(spec.type, item, kind)]
    if isinstance(value, list):
        return [f"is a list; {kind} has it as one {spec.type} (normalize: [])"]
    return _scalar_problems(spec.type, value, kind)


def _scalar_problems(es_type: str, value: Any, kind: str) -> list[str]:
    if value is None:
        return []
    if es_type in _TEXT:
        ok = isinstance(value, str)
    elif es_type in _INTEGER:
        ok = type(value) is int and _LONG_MIN <= value < _LONG_END
    elif es_type in _NUMBER:
        ok = type(value) in (int, float) and math.isfinite(value)
    elif es_type == "boolean":
        ok = type(value) is bool
    elif es_type == "date":
        ok = isinstance(value, str) and _is_date(value)
    elif es_type == "ip":
        ok = isinstance(value, str) and _is_ip(value)
    elif es_type in _OBJECT:
        if not isinstance(value, dict):
            return [f"is {_show(value)} (JSON {_json_type(value)}), which is no {kind} {es_type} value"]
        return _raw_object_problems(value, "") if kind == "edr" and es_type == "flattened" else []
    else:
        return []  # geo_point and the like: edr writes none
    if ok:
        return []
    return [f"is {_show(value)} (JSON {_json_type(value)}), which is no {kind} {es_type} value"]


def _raw_object_problems(obj: dict[Any, Any], path: str) -> list[str]:
    out = []
    for name, value in obj.items():
        where = f"{path}.{name}" if path else str(name)
        if not isinstance(name, str) or RAW_NAME.fullmatch(name) is None:
            out.append(f"member {where!r}: the name breaks the raw-field rule (letters, digits, _ and - only)")
        if isinstance(value, dict):
            out.extend(_raw_object_problems(value, where))
        elif not is_raw_leaf(value):
            out.append(f"member {where!r}: {_show(value)} is a JSON {_json_type(value)}; "
                       "the raw-field rule writes a string or a list of strings")
    return out


def _is_date(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return "%" not in text


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null" if value is None else type(value).__name__


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- alert files -----------------------------------------------------------------------------------


@attrs.define
class FileReport:
    """What :func:`check_alert_files` found."""

    files: int = 0
    alerts: int = 0
    #: alerts on events read from a recording (they carry ``log.file.path``): replays
    replayed: int = 0
    #: lines that are not JSON objects with an ``ecs.version`` (files a test wrote by hand): not alerts
    skipped_lines: int = 0
    problems: list[tuple[str, int, Problem]] = attrs.field(factory=list)
    keys: dict[str, int] = attrs.field(factory=dict)

    def summary(self, limit: int = 50) -> str:
        """A human report: counts, then the problems (at most ``limit``), each with file and line."""
        head = (f"ECS check: {self.alerts} alert(s) in {self.files} alert file(s) ({self.replayed} replayed, "
                f"{self.alerts - self.replayed} live or written directly), {len(self.keys)} distinct keys, "
                f"{len(self.problems)} problem(s); {self.skipped_lines} line(s) skipped as not edr alerts")
        lines = [head]
        for path, line, problem in self.problems[:limit]:
            lines.append(f"  {path}:{line}: {problem}")
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        return "\n".join(lines)


def alert_files(root: str | os.PathLike[str], filename: str = "alerts.json") -> list[Path]:
    """The regular files named ``<filename>.*`` under ``root``, recursively, without following links."""
    found = []
    for directory, dirs, files in os.walk(root):
        for name in files:
            if name.startswith(filename + "."):
                path = Path(directory, name)
                try:
                    if stat.S_ISREG(os.lstat(path).st_mode):
                        found.append(path)
                except OSError:
                    continue
        dirs.sort()
    return sorted(found)


def check_alert_files(paths: Iterable[str | os.PathLike[str]], ecs: EcsFields = VENDORED,
                      extra: Any = None) -> FileReport:
    """Check every alert line of ``paths``: JSON objects with an ``ecs.version``, as edr writes them.

    Lines that are not (a test's hand-made chain file, a truncated line) are
    counted as skipped. ``extra(doc) -> list[Problem]`` adds checks of its
    own (the index template's coverage). Unreadable files are skipped.
    """
    report = FileReport()
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        report.files += 1
        for number, line in enumerate(data.splitlines(), 1):
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                report.skipped_lines += 1
                continue
            if not isinstance(doc, dict) or "ecs.version" not in doc:
                report.skipped_lines += 1
                continue
            report.alerts += 1
            report.replayed += "log.file.path" in doc
            for key in doc:
                report.keys[key] = report.keys.get(key, 0) + 1
            found = check_document(doc, ecs)
            if extra is not None:
                found += extra(doc)
            report.problems.extend((os.fspath(path), number, p) for p in found)
    return report
