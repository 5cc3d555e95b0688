"""The Elasticsearch index template for edr's alerts (``edr ecs template``), sans-IO.

:func:`index_template` returns a composable index template (``PUT _index_template/<name>``) whose
mappings give every key edr writes (:data:`edr.alerts.ecs_schema.ALL_FIELDS`) its type: ECS fields
with ECS's types (``keyword`` with ECS's ``ignore_above`` of 1024, ``wildcard`` command lines,
``match_only_text`` message, ``ip``, ``date``, ``long``, ``float``, ``nested`` where ECS nests),
Winlogbeat's ``winlog.*`` fields as Winlogbeat maps them, edr's own keys as
:mod:`edr.alerts.ecs_schema` declares them, and the objects whose names come from outside edr
(``edr.event``, ``edr.correlation.group``, ``edr.yara.meta``, ``edr.match``, ``edr.unmapped``) as
``flattened``: one mapping each, every leaf a keyword, however many names the events bring.

Dynamic mapping is off (``"dynamic": "false"``) for the whole document, ``edr.*`` included: a key
the template does not know (one a shipper adds, or one a later edr writes before its template is
installed) is kept in ``_source`` but not indexed, and never gets a guessed type. ``"strict"``
rejects such documents instead; a SIEM that must not lose an alert should keep ``"false"``.

Dotted keys of the NDJSON (``"process.pid": 42``) are objects to Elasticsearch (``process`` ->
``pid``), which is how these mappings are written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from edr import __version__
from edr.alerts.ecs_check import VENDORED, EcsFields, Problem, field_spec
from edr.alerts.ecs_schema import ALL_FIELDS, ECS_SPECS, ECS_VERSION, FieldSpec

#: ECS's ``ignore_above`` for keyword fields: longer values are kept in _source, not indexed.
KEYWORD_IGNORE_ABOVE: Final = 1024
#: Leaves of edr's flattened objects longer than this are not indexed (a keyword term may not exceed
#: 32,766 bytes, which 8,191 characters of four UTF-8 bytes stay under).
FLATTENED_IGNORE_ABOVE: Final = 8191


def field_mapping(spec: FieldSpec) -> dict[str, Any]:
    """The Elasticsearch mapping of one leaf of type ``spec.type`` (arrays need nothing more)."""
    if spec.type == "keyword":
        return {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}
    if spec.type == "flattened":
        return {"type": "flattened", "ignore_above": FLATTENED_IGNORE_ABOVE}
    return {"type": spec.type}


def mappings(fields: Mapping[str, FieldSpec] = ALL_FIELDS, *, dynamic: str = "false",
             containers: Mapping[str, FieldSpec] = ECS_SPECS) -> dict[str, Any]:
    """The ``mappings`` of a template for ``fields``.

    ``containers`` gives the type of a parent that is not a plain object
    (ECS's ``nested`` ones, such as ``threat.enrichments``). Raises
    ValueError when a key is a leaf and also the parent of another.
    """
    if dynamic not in ("false", "strict", "true", "runtime"):
        raise ValueError(f"dynamic must be false, strict, true or runtime, not {dynamic!r}")
    root: dict[str, Any] = {"dynamic": dynamic, "properties": {}}
    for name in sorted(fields):
        parts = name.split(".")
        node = root
        for i, part in enumerate(parts[:-1]):
            props = node.setdefault("properties", {})
            child = props.get(part)
            if child is None:
                parent = ".".join(parts[:i + 1])
                container = containers.get(parent)
                child = {"type": container.type} if container is not None and container.type != "object" else {}
                props[part] = child
            elif "type" in child and child["type"] not in ("object", "nested"):
                raise ValueError(f"{name}: {'.'.join(parts[:i + 1])} is a {child['type']} leaf, not an object")
            node = child
        # names are sorted, so a parent comes before its children: a leaf is never replaced
        node.setdefault("properties", {})[parts[-1]] = field_mapping(fields[name])
    return root


def index_template(index_patterns: Sequence[str] = ("edr-alerts-*",), *, dynamic: str = "false",
                   priority: int = 200) -> dict[str, Any]:
    """A composable index template mapping every key of edr's alerts (see the module docstring).

    ``index_patterns`` are the indices it applies to; ``priority`` orders it
    among other templates matching them (Elasticsearch picks the highest).
    """
    if not index_patterns or not all(isinstance(p, str) and p for p in index_patterns):
        raise ValueError("index_patterns must name at least one pattern")
    return {
        "index_patterns": list(index_patterns),
        "priority": priority,
        "template": {"mappings": mappings(dynamic=dynamic)},
        "_meta": {
            "description": f"edr alerts: ECS {ECS_VERSION}, Winlogbeat winlog.*, rule.severity/engine, edr.*",
            "ecs_version": ECS_VERSION,
            "edr_version": __version__,
        },
    }


def mapping_of(template: Mapping[str, Any], key: str) -> tuple[str, dict[str, Any]] | None:
    """The mapping ``template`` gives dotted ``key``, with the path it is at; a ``flattened`` parent
    maps every key below it. None when the template does not map ``key``."""
    node: Any = template.get("template", {}).get("mappings", {})
    parts = key.split(".")
    for i, part in enumerate(parts):
        props = node.get("properties") if isinstance(node, dict) else None
        if not isinstance(props, dict) or part not in props:
            return None
        node = props[part]
        if node.get("type") == "flattened":
            return ".".join(parts[:i + 1]), node
    if "properties" in node and "type" not in node:
        return None  # an object, not a field
    return key, node


def coverage_problems(doc: Mapping[str, Any], template: Mapping[str, Any],
                      ecs: EcsFields = VENDORED) -> list[Problem]:
    """Keys of ``doc`` that ``template`` does not map, or maps with a type other than their schema type."""
    problems = []
    for key in doc:
        found = mapping_of(template, key)
        if found is None:
            problems.append(Problem(key, "the index template does not map it"))
            continue
        at, mapping = found
        spec = field_spec(at, ecs)
        if spec is not None and mapping.get("type") != spec[0].type:
            problems.append(Problem(key, f"the index template maps {at} as {mapping.get('type')}, "
                                         f"its {spec[1]} type is {spec[0].type}"))
    return problems
