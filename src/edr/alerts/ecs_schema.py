"""Every key an edr alert document may hold and its Elasticsearch type: the schema the ECS mapping
(:mod:`edr.alerts.ecs`), the checker (:mod:`edr.alerts.ecs_check`) and the index template
(:mod:`edr.alerts.ecs_template`) share.

A key of an alert is one of four kinds, and nothing else:

1. **An ECS field** (:data:`EMITTED_ECS_FIELDS`), with ECS's own type and array normalization. They
   are read from ECS's field list into :mod:`edr.alerts.ecs_fields`, a generated module that is
   never edited by hand::

       python -m edr.alerts.ecs_schema ../shared/ecs/ecs-9.4.0-fields.json > src/edr/alerts/ecs_fields.py

   (a test regenerates it and fails when it is stale).
2. **A Winlogbeat field** (:data:`WINLOGBEAT_FIELDS`). ECS has no field for a Windows event log's
   channel, record number or computer name, nor for its event ID as such (``event.code`` is set as
   well). Winlogbeat's ``winlog.*`` fields are what Elastic's Windows content, and SIEM content
   written for Winlogbeat data, already search, so edr uses their names with Winlogbeat's types (all
   ``keyword``: a record ID and an event ID are written as strings), as defined in elastic/beats
   ``winlogbeat/_meta/fields.common.yml``.
3. **A compatibility key** (:data:`COMPAT_FIELDS`): ``rule.severity`` and ``rule.engine``. They are
   not ECS; the alert format of the seed edr grew from (Rustinel's) carries them and SIEM content
   built for it reads them, so they stay.
4. **An ``edr.*`` key** (:data:`EDR_FIELDS`): edr's own, each declared here with one type. Keys that
   come from outside edr (raw event fields, a correlation's group, YARA metadata, match details,
   keys an engine sends that this schema does not know) are never keys of their own: they are
   members of one ``flattened`` object each (``edr.event``, ``edr.correlation.group``,
   ``edr.yara.meta``, ``edr.match``, ``edr.unmapped``), with names and values normalized by the
   rule of :mod:`edr.alerts.raw_fields`.

The document is written with flat dotted keys (``"process.pid": 42``); the ``flattened`` objects are
JSON objects under their one key (``"edr.event": {"ThreatName": "..."}``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import Final, NamedTuple

from edr.alerts import ecs_fields


class FieldSpec(NamedTuple):
    """One key's Elasticsearch type (``keyword``, ``long``, ``date``, ``ip``, ``flattened``...) and
    whether its value is always a JSON list (ECS's ``normalize: array``)."""

    type: str
    array: bool = False


#: The ECS release the mapping is checked against (``ecs.version`` of every alert).
ECS_VERSION: Final = ecs_fields.ECS_VERSION

_HASHES: Final = ("md5", "sha1", "sha256", "sha384", "sha512")

#: The ECS fields edr writes. Their types come from ECS's field list (:mod:`edr.alerts.ecs_fields`).
EMITTED_ECS_FIELDS: Final[tuple[str, ...]] = (
    "@timestamp", "ecs.version", "message", "tags",
    "agent.type", "agent.version", "host.name", "host.os.type",
    "event.kind", "event.category", "event.type", "event.action", "event.module", "event.dataset",
    "event.id", "event.severity", "event.risk_score", "event.created", "event.sequence", "event.code",
    "event.provider",
    "rule.id", "rule.name", "rule.ruleset", "rule.description", "rule.reference", "rule.author",
    "process.executable", "process.name", "process.command_line", "process.working_directory", "process.pid",
    "process.entity_id", "process.exit_code", "process.pe.original_file_name", "process.pe.imphash",
    *(f"process.hash.{a}" for a in _HASHES),
    "process.parent.executable", "process.parent.name", "process.parent.command_line", "process.parent.pid",
    "process.parent.entity_id",
    "user.name", "user.domain", "user.id", "user.effective.id", "group.id", "container.id",
    "source.ip", "source.port", "source.domain", "destination.ip", "destination.port", "destination.domain",
    "network.transport", "network.direction",
    "dns.question.name", "dns.question.type", "dns.resolved_ip", "dns.answers.ttl",
    "file.path", "file.name", "file.directory", "file.pe.imphash", *(f"file.hash.{a}" for a in _HASHES),
    "dll.path", "dll.pe.imphash", *(f"dll.hash.{a}" for a in _HASHES),
    "registry.path", "log.file.path",
    "threat.framework", "threat.technique.id", "threat.tactic.name",
    "threat.indicator.type", "threat.indicator.name", "threat.indicator.provider", "threat.indicator.description",
    "threat.indicator.ip", "threat.indicator.url.domain", "threat.indicator.file.path",
    *(f"threat.indicator.file.hash.{a}" for a in _HASHES),
    "threat.enrichments.matched.atomic", "threat.enrichments.matched.field", "threat.enrichments.matched.type",
)

#: Hash algorithms ECS has a ``<object>.hash.<algorithm>`` field for, among those edr writes.
ECS_HASHES: Final = frozenset(_HASHES)

#: Winlogbeat's ``winlog.*`` fields edr writes, with Winlogbeat's types.
WINLOGBEAT_FIELDS: Final[Mapping[str, FieldSpec]] = {
    "winlog.channel": FieldSpec("keyword"),
    "winlog.event_id": FieldSpec("keyword"),
    "winlog.record_id": FieldSpec("keyword"),
    "winlog.computer_name": FieldSpec("keyword"),
}

#: Keys of the seed's (Rustinel's) alert format that are not ECS.
COMPAT_FIELDS: Final[Mapping[str, FieldSpec]] = {
    "rule.severity": FieldSpec("keyword"),
    "rule.engine": FieldSpec("keyword"),
}

#: edr's own keys: type, and what each holds.
EDR_FIELDS: Final[Mapping[str, tuple[FieldSpec, str]]] = {
    "edr.event": (FieldSpec("flattened"), "the event's fields with no ECS home, by the raw-field rule"),
    "edr.logsource.product": (FieldSpec("keyword"), "Sigma logsource product of the event (linux, windows)"),
    "edr.logsource.category": (FieldSpec("keyword"), "Sigma logsource category of the event"),
    "edr.logsource.service": (FieldSpec("keyword"), "Sigma logsource service of the event (security, system...)"),
    "edr.aggregate.count": (FieldSpec("long"), "identical events the event stands for (network aggregation)"),
    "edr.log.line": (FieldSpec("long"), "line of the replayed NDJSON file the event was read from"),
    "edr.log.record": (FieldSpec("long"), "position of the record in the replayed EVTX file or dump (1 = first)"),
    "edr.alert.timestamp": (FieldSpec("keyword"), "the alert's own time, as text, when no date can hold it"),
    "edr.alert.event_timestamp": (FieldSpec("keyword"), "the event's time, as text, when no date can hold it"),
    "edr.alert.count": (FieldSpec("long"), "alerts a dedup rollup stands for, the first included"),
    "edr.alert.first_seen": (FieldSpec("date"), "time of the first alert of a dedup rollup"),
    "edr.alert.last_seen": (FieldSpec("date"), "time of the last alert of a dedup rollup"),
    "edr.file.source_path": (FieldSpec("keyword"), "source of a rename, link or symlink"),
    "edr.file.operation": (FieldSpec("keyword"), "what was done to the file (file_create, file_write, ...)"),
    "edr.process.exit_signal": (FieldSpec("keyword"), "the signal that ended the process (SIGKILL...), if one did"),
    "edr.rule.references": (FieldSpec("keyword", array=True), "every reference of the rule (rule.reference: 1st)"),
    "edr.correlation.type": (FieldSpec("keyword"), "Sigma correlation type"),
    "edr.correlation.rules": (FieldSpec("keyword", array=True), "rules whose matches made the correlation fire"),
    "edr.correlation.timespan": (FieldSpec("double"), "correlation window, seconds"),
    "edr.correlation.value": (FieldSpec("double"), "the measured count or value that fired"),
    "edr.correlation.group": (FieldSpec("flattened"), "the group-by fields and values, by the raw-field rule"),
    "edr.ioc.type": (FieldSpec("keyword"), "indicator type (md5, ip, domain, path_regex...)"),
    "edr.ioc.source": (FieldSpec("keyword"), "indicator list file and line"),
    "edr.yara.rule": (FieldSpec("keyword"), "YARA rule name"),
    "edr.yara.namespace": (FieldSpec("keyword"), "YARA namespace (rule file)"),
    "edr.yara.tags": (FieldSpec("keyword", array=True), "YARA rule tags"),
    "edr.yara.meta": (FieldSpec("flattened"), "YARA rule metadata, by the raw-field rule"),
    "edr.yara.scan_target": (FieldSpec("keyword"), "file or memory"),
    "edr.scan.object": (FieldSpec("keyword"), "written_file or process_image"),
    "edr.match": (FieldSpec("flattened"), "match details (alerts.match_debug), by the raw-field rule"),
    "edr.unmapped": (FieldSpec("flattened"), "keys an engine sent that the schema lacks, by the raw-field rule"),
    "edr.error": (FieldSpec("keyword"), "why the alert was written without its event"),
    "edr.replay": (FieldSpec("boolean"), "true: the alert comes from `edr replay` of a recording (host.* is the "
                                         "recorded host), not from this host live"),
    "edr.response.mode": (FieldSpec("keyword"), "response mode when the alert was raised: prevention or dry_run"),
    "edr.response.breaker.rule_id": (FieldSpec("keyword"), "response breaker: rule whose kill found a budget empty"),
    "edr.response.breaker.rule_name": (FieldSpec("keyword"), "response breaker: that rule's name"),
    "edr.response.breaker.budget": (FieldSpec("keyword"), "response breaker: the budget exceeded, rule or global"),
    "edr.response.breaker.limit_per_minute": (FieldSpec("long"), "response breaker: that budget, kills per minute"),
    "edr.response.breaker.rule_granted": (FieldSpec("long"), "response breaker: kills the budgets granted the rule"),
    "edr.response.breaker.total_granted": (FieldSpec("long"), "response breaker: kills the budgets granted, all rules"),
    "edr.response.breaker.cooldown_secs": (FieldSpec("double"), "response breaker: seconds open (0: until restart)"),
    "edr.response.breaker.trips": (FieldSpec("long"), "response breaker: times opened since start"),
    "edr.telemetry.kind": (FieldSpec("keyword"), "telemetry loss: kernel_lost (sensor) or edge_dropped (pipeline)"),
    "edr.telemetry.count": (FieldSpec("long"), "telemetry loss: events lost since the previous alert of this kind"),
    "edr.telemetry.total": (FieldSpec("long"), "telemetry loss: events lost of this kind since the agent started"),
    "edr.telemetry.sources": (FieldSpec("keyword", array=True), "telemetry loss: the sensor families (or ETW "
                              "providers) or the pipeline edges that lost events, sorted"),
    "edr.telemetry.counts": (FieldSpec("long", array=True), "telemetry loss: events each of edr.telemetry.sources "
                             "lost since the previous alert of this kind (same order)"),
    "edr.telemetry.totals": (FieldSpec("long", array=True), "telemetry loss: events each of edr.telemetry.sources "
                             "lost since the start (same order)"),
    "edr.telemetry.suppressed": (FieldSpec("long"), "telemetry loss: checks that found loss while the rate limit "
                                 "held this alert back"),
    "edr.telemetry.window": (FieldSpec("double"), "telemetry loss: seconds since the previous alert of this kind"),
    "edr.chain.seq": (FieldSpec("long"), "alert hash chain: sequence number"),
    "edr.chain.hash": (FieldSpec("keyword"), "alert hash chain: this line's link"),
    "edr.chain.start": (FieldSpec("keyword"), "alert hash chain: why a segment starts here"),
    "edr.chain.alg": (FieldSpec("keyword"), "alert hash chain: sha256 or hmac-sha256"),
}

#: Keys the alert writer's hash chain (:mod:`edr.alerts.chain`) adds itself; the mapping never writes them.
WRITER_KEYS: Final = frozenset(k for k in EDR_FIELDS if k.startswith("edr.chain."))


def _ecs_specs() -> dict[str, FieldSpec]:
    return {name: FieldSpec(t, a) for name, (t, a) in ecs_fields.FIELDS.items()}


#: ECS fields edr writes, and the ECS fields above them that are not plain objects (``nested``).
ECS_SPECS: Final[Mapping[str, FieldSpec]] = _ecs_specs()

#: Every key edr writes and its type: the four kinds above.
ALL_FIELDS: Final[Mapping[str, FieldSpec]] = {
    **{name: ECS_SPECS[name] for name in EMITTED_ECS_FIELDS},
    **WINLOGBEAT_FIELDS,
    **COMPAT_FIELDS,
    **{name: spec for name, (spec, _doc) in EDR_FIELDS.items()},
}

#: The keys holding one ``flattened`` object each.
FLATTENED: Final = frozenset(k for k, spec in ALL_FIELDS.items() if spec.type == "flattened")


def load_ecs_field_list(text: str | bytes) -> tuple[str, dict[str, FieldSpec]]:
    """ECS's version and fields from the text of its field list (``ecs-<version>-fields.json``).

    Raises ValueError, naming what is wrong, for a file not of that shape.
    """
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("ecs_version"), str):
        raise ValueError("not an ECS field list: no ecs_version")
    fields = data.get("fields")
    if not isinstance(fields, dict):
        raise ValueError("not an ECS field list: no fields object")
    out: dict[str, FieldSpec] = {}
    for name, spec in fields.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            raise ValueError(f"field {name!r}: no type")
        normalize = spec.get("normalize", [])
        out[name] = FieldSpec(spec["type"], isinstance(normalize, list) and "array" in normalize)
    return data["ecs_version"], out


def vendored_subset(fields: Mapping[str, FieldSpec], names: Iterable[str]) -> dict[str, FieldSpec]:
    """``names`` and, for each, the fields above it ECS types other than ``object`` (``nested``), with their specs.

    Raises KeyError naming a field ECS does not have.
    """
    out: dict[str, FieldSpec] = {}
    for name in names:
        if name not in fields:
            raise KeyError(f"{name} is not an ECS field")
        out[name] = fields[name]
        parts = name.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            spec = fields.get(parent)
            if spec is not None and spec.type != "object":
                out[parent] = spec
    return dict(sorted(out.items()))


def render_ecs_fields(version: str, subset: Mapping[str, FieldSpec]) -> str:
    """The source of :mod:`edr.alerts.ecs_fields` for ``subset`` of ECS ``version``."""
    lines = [
        f'"""ECS {version}: the fields edr writes, with their types and array normalization.',
        "",
        "Generated from ECS's field list by ``python -m edr.alerts.ecs_schema FIELDS.json``; do not edit.",
        '"""',
        "",
        "from typing import Final",
        "",
        f'ECS_VERSION: Final = "{version}"',
        "",
        "#: name -> (Elasticsearch type, whether the value is always a list)",
        "FIELDS: Final[dict[str, tuple[str, bool]]] = {",
    ]
    lines += [f'    "{name}": ("{spec.type}", {spec.array}),' for name, spec in subset.items()]
    lines += ["}", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Print :mod:`edr.alerts.ecs_fields` generated from the ECS field list named by ``argv[0]``."""
    if len(argv) != 1:
        print("usage: python -m edr.alerts.ecs_schema ECS-FIELDS.json > src/edr/alerts/ecs_fields.py",
              file=sys.stderr)
        return 2
    try:
        with open(argv[0], "rb") as fh:
            version, fields = load_ecs_field_list(fh.read())
        subset = vendored_subset(fields, EMITTED_ECS_FIELDS)
    except (OSError, ValueError, KeyError) as exc:
        print(f"{argv[0]}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(render_ecs_fields(version, subset))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
