"""The alert every detection engine produces (severities are :mod:`edr.severity`'s)."""

from __future__ import annotations

from typing import Any, Final, Protocol

import attrs

from edr.event import Event

#: ``edr.scan.object`` of alerts on a file a process wrote: the process is the
#: file's writer, not its program, so active response leaves it alone
WRITTEN_FILE: Final = "written_file"
#: ``edr.scan.object`` of alerts on a new process's own executable
PROCESS_IMAGE: Final = "process_image"


@attrs.define(slots=True)
class Alert:
    """A detection: which rule fired, how severe, on which event.

    ``ecs`` holds engine-specific ECS fields as flat dotted keys
    (``threat.technique.id``, ``file.hash.sha256``, ``yara.*`` goes under
    ``edr.``); the alert mapper merges them over the event's fields.
    ``debug`` is the match detail written when ``alerts.match_debug`` asks.
    """

    rule_id: str
    rule_name: str
    severity: str
    engine: str
    event: Event | None
    tags: tuple[str, ...] = ()
    description: str = ""
    ecs: dict[str, Any] = attrs.field(factory=dict)
    debug: dict[str, Any] | None = None
    timestamp: float | None = None

    @property
    def time(self) -> float:
        """When it happened: the alert's own time, else its event's."""
        if self.timestamp is not None:
            return self.timestamp
        return self.event.timestamp if self.event is not None else 0.0


class Detector(Protocol):
    """A sans-IO detection engine: one event in, zero or more alerts out.

    Implementations must not raise on odd events (missing fields, wrong
    types); ``match`` is called once per event, in event order. An engine
    may also offer ``match_batch(events) -> list[Alert]`` (the alerts of
    ``match`` over ``events``, in event order), which the detection actor
    prefers: one call per batch instead of one per event.
    """

    name: str

    def match(self, event: Event) -> list[Alert]:
        """Return the alerts ``event`` raises."""
        ...
