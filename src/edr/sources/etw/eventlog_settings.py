"""``[eventlog]``: settings of the Windows Event Log channel source.

Like ``[etw]`` (:mod:`edr.sources.etw.settings`), not yet a section of
:class:`edr.config.Config` (that file has another owner): the builders read
``config.eventlog`` when it exists and these defaults otherwise. Wiring it
in is one line in ``Config`` plus ``EventLogConfig`` in ``_SECTION_CLASSES``.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

#: The channels SigmaHQ's ``service: security|system|application|windefend`` rules are written for.
DEFAULT_CHANNELS: Final = ("Security", "System", "Application", "Microsoft-Windows-Windows Defender/Operational")
#: WaitForMultipleObjects waits on at most 64 handles: one per channel, one spare.
MAX_CHANNELS: Final = 63


def _channels(_inst: Any, attribute: attrs.Attribute[Any], values: list[str]) -> None:
    if not values:
        raise ValueError(f"{attribute.name} must name at least one channel (or leave the source out of the graph)")
    if len(values) > MAX_CHANNELS:
        raise ValueError(f"{attribute.name} names {len(values)} channels; at most {MAX_CHANNELS} can be watched")
    seen: set[str] = set()
    for value in values:
        if not isinstance(value, str) or not value.strip() or value != value.strip():
            raise ValueError(f"{attribute.name}: {value!r} is not a channel name")
        if value.lower() in seen:  # channel names ignore case on Windows
            raise ValueError(f"{attribute.name}: {value!r} is named twice")
        seen.add(value.lower())


def _positive(_inst: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be greater than 0, not {value!r}")


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@attrs.define
class EventLogConfig:
    """[eventlog]: which Event Log channels are read live, and where their bookmarks are kept."""

    channels: list[str] = attrs.field(
        factory=lambda: list(DEFAULT_CHANNELS), validator=_channels,
        metadata=_doc("Event Log channels read live (EvtSubscribe); a channel that cannot be read is logged "
                      "and retried, the others run."))
    bookmark_directory: str = attrs.field(
        default="", metadata=_doc("Where each channel's bookmark (the last record passed on) is kept; "
                                  "empty: agent.state_directory."))
    bookmark_interval_secs: float = attrs.field(
        default=5.0, validator=_positive,
        metadata=_doc("How often the bookmarks are written while the agent runs (and always when it stops)."))
    retry_secs: float = attrs.field(
        default=30.0, validator=_positive,
        metadata=_doc("After a channel could not be subscribed to or read, how long before it is tried again."))


def eventlog_config(config: Any) -> EventLogConfig:
    """``config.eventlog`` when the configuration has the section, else the defaults."""
    section = getattr(config, "eventlog", None)
    return section if isinstance(section, EventLogConfig) else EventLogConfig()
