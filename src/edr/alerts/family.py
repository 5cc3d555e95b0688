"""Which names belong to a family of daily files (``<filename>.YYYY-MM-DD``), sans-IO.

:class:`~edr.alerts.daily_file.DailyFile` names each day's file
``<filename>.YYYY-MM-DD`` (UTC). Anything that acts on the family as a whole
(retention removes old files, chain recovery reads the newest one) must
recognise exactly those names and nothing else: ``alerts.json.2026-03-01``
is a member of the ``alerts.json`` family, ``alerts.json.2026-03-01.gz``,
``alerts.json.2026-3-1``, ``alerts.json.2026-02-30`` and
``old-alerts.json.2026-03-01`` are not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from typing import Final

# [0-9], not \d: \d also matches other scripts' digits (U+FF11, fullwidth 1), which no daily file name holds
_DAY: Final = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")


def family_day(name: str, filename: str) -> date | None:
    """The UTC day of ``name`` if it is ``<filename>.YYYY-MM-DD`` exactly (a real date), else None."""
    if len(name) != len(filename) + 11 or not name.startswith(filename) or name[len(filename)] != ".":
        return None
    m = _DAY.fullmatch(name, len(filename) + 1)
    if m is None:
        return None
    try:
        return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:  # 2026-02-30
        return None


def family_members(names: Iterable[str], filename: str) -> list[tuple[date, str]]:
    """``(day, name)`` of every member of the family among ``names``, oldest first."""
    found = []
    for name in names:
        day = family_day(name, filename)
        if day is not None:
            found.append((day, name))
    found.sort()
    return found
