"""Alert severities, lowest first, as Sigma names its levels."""

from __future__ import annotations

from typing import Final

SEVERITIES: Final = ("informational", "low", "medium", "high", "critical")
_RANK: Final = {name: i for i, name in enumerate(SEVERITIES)}


def severity_rank(severity: str) -> int:
    """Order of a severity name; unknown names rank lowest."""
    return _RANK.get(severity.lower(), 0)
