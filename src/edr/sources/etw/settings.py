"""``[etw]``: settings of the Windows ETW sensor.

Not yet a section of :class:`edr.config.Config` (that file has another
owner): the actors read ``config.etw`` when it exists and these defaults
otherwise. Wiring it in is one line in ``Config`` plus ``EtwConfig`` in
``_SECTION_CLASSES``.

Sizing for a fork storm (4,000 processes started as fast as Windows can):
each start brings about 32 records (start, stop, ~25 image loads, a few
file and registry opens), ~128,000 records in all. The bridge holds
``bridge_records`` = 262,144 between two hand-overs to Trio, twice that,
so even a pipeline that took nothing during the whole storm loses nothing
(``tests/etw/test_bridge.py`` replays such a storm). The kernel side gets
``min_buffers`` x ``buffer_kb`` = 16 MiB up front, growing to
``max_buffers`` x ``buffer_kb`` = 64 MiB (records are 200-400 bytes: over
160,000 records) before ETW counts a lost event.
"""

from __future__ import annotations

from typing import Any

import attrs

from edr.sources.etw.providers import PROVIDERS


def _positive(_inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be greater than 0, not {value!r}")


def _non_negative(_inst: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be 0 or more, not {value!r}")


def _known_providers(_inst: Any, attribute: attrs.Attribute[Any], values: list[str]) -> None:
    unknown = sorted(set(values) - set(PROVIDERS))
    if unknown:
        raise ValueError(f"unknown ETW providers {unknown} (known: {', '.join(sorted(PROVIDERS))})")


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@attrs.define
class EtwConfig:
    """[etw]: the real-time ETW session, the callback bridge and the normalizer's caches."""

    session_name: str = attrs.field(
        default="edr-etw",
        metadata=_doc("Name of the real-time session; a stale one of that name is stopped at start."))
    providers: list[str] = attrs.field(
        factory=lambda: list(PROVIDERS), validator=_known_providers,
        metadata=_doc("Providers to enable, by manifest name."))
    buffer_kb: int = attrs.field(default=256, validator=_positive, metadata=_doc("ETW buffer size (KiB)."))
    min_buffers: int = attrs.field(default=64, validator=_positive, metadata=_doc("ETW buffers allocated at start."))
    max_buffers: int = attrs.field(default=256, validator=_positive,
                                   metadata=_doc("ETW buffers at most; beyond them ETW counts lost events."))
    bridge_records: int = attrs.field(
        default=262_144, validator=_positive,
        metadata=_doc("Records the callback bridge holds for Trio; beyond them records are dropped, counted."))
    pe_wait_ms: int = attrs.field(
        default=100, validator=_non_negative,
        metadata=_doc("Per batch, how long new process images' hashes and version info are waited for; "
                      "0 never waits (they fill the cache for the next start)."))
    pe_max_file_mb: int = attrs.field(default=64, validator=_positive, metadata=_doc("Larger images are not hashed."))
    pe_workers: int = attrs.field(default=2, validator=_positive, metadata=_doc("Threads reading PE files."))
    pe_cache_entries: int = attrs.field(default=4096, validator=_positive,
                                        metadata=_doc("PE results kept, by file identity."))
    sid_cache_entries: int = attrs.field(default=4096, validator=_positive, metadata=_doc("SID -> account names kept."))
    pointer_cache_entries: int = attrs.field(
        default=65536, validator=_positive,
        metadata=_doc("FileObject, FileKey and KeyObject names kept (each); oldest evicted, counted."))
    script_block_timeout_secs: float = attrs.field(
        default=30.0, validator=_non_negative,
        metadata=_doc("A PowerShell script block whose parts stop coming is reported incomplete after this."))


def etw_config(config: Any) -> EtwConfig:
    """``config.etw`` when the configuration has the section, else the defaults."""
    section = getattr(config, "etw", None)
    return section if isinstance(section, EtwConfig) else EtwConfig()
