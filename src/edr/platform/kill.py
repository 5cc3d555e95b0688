"""The result of a termination attempt, shared by the platform layers."""

from __future__ import annotations

from typing import Final

import attrs

TERMINATED: Final = "terminated"
GONE: Final = "gone"
MISMATCH: Final = "mismatch"
FAILED: Final = "failed"


@attrs.frozen
class KillResult:
    """``outcome``: terminated, gone (already exited), mismatch (not the alerted process), failed."""

    outcome: str
    detail: str = ""
