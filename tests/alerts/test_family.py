"""Members of a family of daily files: exactly <filename>.YYYY-MM-DD with a real date."""

from __future__ import annotations

from datetime import date

from edr.alerts.family import family_day, family_members


def test_family_names_are_exact() -> None:
    assert family_day("alerts.json.2026-03-01", "alerts.json") == date(2026, 3, 1)
    for name in ("alerts.json.2026-03-01.gz", "alerts.json.2026-3-1", "alerts.json.2026-02-30",
                 "xalerts.json.2026-03-01", "alerts.json-2026-03-01", "alerts.json.", "alerts.json",
                 "alerts.jsonX2026-03-01", "alerts.json.2026-03-0\uff11"):
        assert family_day(name, "alerts.json") is None, name
    assert family_day("edr.log.2026-12-31", "edr.log") == date(2026, 12, 31)
    assert family_members(["b", "alerts.json.2026-03-02", "alerts.json.2026-03-01"], "alerts.json") == [
        (date(2026, 3, 1), "alerts.json.2026-03-01"), (date(2026, 3, 2), "alerts.json.2026-03-02")]
