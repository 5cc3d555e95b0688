"""Configuration keys for alert dedup, the alert chain and retention, in the style of :mod:`edr.config`.

Two attrs sections, with the same ``metadata=_doc(...)`` and validators as
:mod:`edr.config`, so that they can be merged there as they are:

- :class:`AlertIntegrityConfig`: keys that belong in ``[alerts]``
  (``AlertsConfig``): ``dedup_*`` and ``chain_key_file``;
- :class:`RetentionConfig`: a new ``[retention]`` section, one pair of
  limits per family of daily files (alerts, events, the operational log).

It imports nothing of edr but :mod:`edr.config`'s helpers, as config.py
must not import the subsystems; the cores take plain values
(:class:`~edr.alerts.dedup.AlertDeduplicator`,
:meth:`~edr.alerts.retention.RetentionPolicy.from_megabytes`).
"""

from __future__ import annotations

import attrs

from edr.config import _doc, _non_negative, _positive

_MB = 1 << 20


@attrs.define
class AlertIntegrityConfig:
    """[alerts] additions: dedup and rollup of identical alerts, the hash chain's key."""

    dedup_enabled: bool = attrs.field(
        default=True, metadata=_doc("Fold identical alerts (same rule, acting process and key fields) within "
                                    "dedup_window_secs into the first, written at once, and one rollup "
                                    "carrying edr.alert.count."),
    )
    dedup_window_secs: float = attrs.field(
        default=10.0, validator=_positive,
        metadata=_doc("Seconds from the first of identical alerts during which the others are counted; the "
                      "rollup is written when the window closes."),
    )
    dedup_max_entries: int = attrs.field(
        default=4096, validator=_positive,
        metadata=_doc("Open dedup windows at most; beyond, the oldest closes early (its rollup written, counted)."),
    )
    dedup_max_bytes: int = attrs.field(
        default=8 * _MB, validator=_positive,
        metadata=_doc("Bytes the dedup windows may hold; beyond, the oldest closes early (its rollup written, "
                      "counted)."),
    )
    chain_key_file: str = attrs.field(
        default="",
        metadata=_doc('File holding the HMAC key of the alert chain (mode 0600, at least 16 bytes: '
                      '"openssl rand -hex 32"); "" chains with plain SHA-256.'),
    )


@attrs.define
class RetentionConfig:
    """[retention]: how long and how much of the daily files to keep (edr addition); 0 = no limit."""

    interval_secs: int = attrs.field(
        default=3600, validator=_positive, metadata=_doc("Seconds between retention passes (one runs at start)."),
    )
    alerts_max_days: int = attrs.field(
        default=90, validator=_non_negative,
        metadata=_doc("Alert files of the last N UTC days are kept (today included); older ones removed."),
    )
    alerts_max_total_mb: int = attrs.field(
        default=0, validator=_non_negative,
        metadata=_doc("MiB the alert files may hold together; the oldest are removed first (never today's)."),
    )
    events_max_days: int = attrs.field(
        default=7, validator=_non_negative, metadata=_doc("Event stream files of the last N UTC days are kept."),
    )
    events_max_total_mb: int = attrs.field(
        default=2048, validator=_non_negative,
        metadata=_doc("MiB the event stream files may hold together; the oldest are removed first."),
    )
    logs_max_days: int = attrs.field(
        default=30, validator=_non_negative, metadata=_doc("Operational log files of the last N UTC days are kept."),
    )
    logs_max_total_mb: int = attrs.field(
        default=512, validator=_non_negative,
        metadata=_doc("MiB the operational log files may hold together; the oldest are removed first."),
    )


SECTION_CLASSES = (AlertIntegrityConfig, RetentionConfig)
for _cls in SECTION_CLASSES:
    attrs.resolve_types(_cls)
