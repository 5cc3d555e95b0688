"""Fixtures of the ETW tests: the normalizer with this lab machine's device table."""

from __future__ import annotations

from typing import Final

import pytest

from edr.sources.etw.host import DeviceMap, SidResolver
from edr.sources.etw.normalize import EtwNormalizer

#: QueryDosDevice on the recording machine: C: is \Device\HarddiskVolume3 (its paths say so).
LAB_DEVICES: Final = {"\\Device\\HarddiskVolume3": "C:"}
LAB_ACCOUNTS: Final = {"S-1-5-21-1-2-3-1001": "lab-windows\\theo-rdp", "S-1-5-18": "NT AUTHORITY\\SYSTEM"}


@pytest.fixture
def normalizer() -> EtwNormalizer:
    """A normalizer with the lab's drive letters and accounts, no live host facts."""
    return EtwNormalizer(devices=DeviceMap(LAB_DEVICES), sids=SidResolver(LAB_ACCOUNTS.get))
