"""The agent's retention pass over its configured families (real files in a private directory)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from edr.alerts.retention_task import retained_families, retention_pass
from edr.config import load_config


def test_families_follow_the_configuration(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(f'[alerts]\ndirectory = "{tmp_path / "a"}"\n[logging]\ndirectory = "{tmp_path / "l"}"\n'
                    f'[events]\nenabled = false\n[retention]\nlogs_max_days = 0\nlogs_max_total_mb = 0\n')
    families = retained_families(load_config(str(conf)).config)
    assert [(f.kind, f.directory) for f in families] == [("alerts", str(tmp_path / "a"))]  # logs unlimited
    conf.write_text(conf.read_text().replace("enabled = false", "enabled = true"))
    assert [f.kind for f in retained_families(load_config(str(conf)).config)] == ["alerts", "events"]


def test_a_pass_keeps_the_last_days_and_todays_file(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o700)
    for day in ("2026-02-01", "2026-02-27", "2026-02-28", "2026-03-01"):
        (logs / f"alerts.json.{day}").write_bytes(b"x\n")
    conf = tmp_path / "c.toml"
    conf.write_text(f'[alerts]\ndirectory = "{logs}"\n[logging]\ndirectory = "{logs}"\n'
                    '[retention]\nalerts_max_days = 2\n')
    now = datetime(2026, 3, 1, 12, tzinfo=UTC).timestamp()
    results = retention_pass(retained_families(load_config(str(conf)).config), now=now)
    assert sorted(r.name for res in results for r in res.removed) == ["alerts.json.2026-02-01",
                                                                       "alerts.json.2026-02-27"]
    assert sorted(p.name for p in logs.iterdir()) == ["alerts.json.2026-02-28", "alerts.json.2026-03-01"]
