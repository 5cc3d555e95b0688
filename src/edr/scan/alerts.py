"""Turning scan verdicts into alerts: YARA hits (always critical) and hash IOC matches."""

from __future__ import annotations

from typing import Any, Protocol

from edr.detect.alert import PROCESS_IMAGE, WRITTEN_FILE, Alert
from edr.detect.yara_rules import YaraHit
from edr.event import Event
from edr.scan.file_scan import FileVerdict, MemoryVerdict


class HashMatcher(Protocol):
    """What the scanner needs from the IOC engine."""

    def match_hashes(self, hashes: dict[str, str], event: Event | None,
                     path: str | None = None) -> list[Alert]:
        """Alerts for listed digests."""
        ...


def yara_alert(hit: YaraHit, event: Event | None, *, debug: bool, ecs: dict[str, Any]) -> Alert:
    """One YARA alert; ``ecs`` carries the scanned object's fields (file.* or process.*)."""
    doc = dict(ecs)
    doc["edr.yara.rule"] = hit.rule
    doc["edr.yara.namespace"] = hit.namespace
    doc["edr.yara.tags"] = list(hit.tags)
    if hit.meta:
        doc["edr.yara.meta"] = {k: v for k, v in hit.meta.items() if isinstance(v, (str, int, bool))}
    description = str(hit.meta.get("description", "")) if hit.meta else ""
    return Alert(
        rule_id=hit.rule_id, rule_name=hit.rule, severity="critical", engine="yara", event=event,
        tags=tuple(hit.tags), description=description, ecs=doc,
        debug={"strings": list(hit.strings)} if debug and hit.strings else None,
    )


def file_alerts(verdict: FileVerdict, event: Event | None, iocs: HashMatcher | None,
                *, debug: bool, written: bool = False) -> list[Alert]:
    """YARA and hash-IOC alerts for a scanned file (``written``: just written, not executed)."""
    scanned = WRITTEN_FILE if written else PROCESS_IMAGE
    ecs: dict[str, Any] = {"file.path": verdict.path, "edr.yara.scan_target": "file", "edr.scan.object": scanned}
    if verdict.hashes:
        for algo, digest in verdict.hashes.items():
            ecs[f"file.hash.{algo}"] = digest
    alerts = [yara_alert(hit, event, debug=debug, ecs=ecs) for hit in verdict.hits]
    if iocs is not None and verdict.hashes:
        for alert in iocs.match_hashes(verdict.hashes, event, verdict.path):
            alert.ecs["edr.scan.object"] = scanned
            alerts.append(alert)
    return alerts


def memory_alerts(verdict: MemoryVerdict, event: Event | None, *, debug: bool) -> list[Alert]:
    """YARA alerts for a process memory scan."""
    ecs: dict[str, Any] = {"process.pid": verdict.pid, "edr.yara.scan_target": "memory"}
    return [yara_alert(hit, event, debug=debug, ecs=ecs) for hit in verdict.hits]
