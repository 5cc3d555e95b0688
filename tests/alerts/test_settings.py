"""The new configuration keys: documented, validated by edr.config's machinery with the key and source named."""

from __future__ import annotations

import attrs
import pytest

from edr.alerts.dedup import AlertDeduplicator
from edr.alerts.retention import RetentionPolicy
from edr.config import AlertsConfig, ConfigError, RetentionConfig, _build


def test_every_key_is_documented() -> None:
    for cls in (AlertsConfig, RetentionConfig):
        for field in attrs.fields(cls):
            assert field.metadata.get("doc"), f"{cls.__name__}.{field.name} has no doc"


def test_defaults_make_working_cores() -> None:
    alerts = AlertsConfig()
    assert alerts.dedup_enabled and alerts.chain_key_file == ""
    dedup = AlertDeduplicator(alerts.dedup_window_secs, max_entries=alerts.dedup_max_entries,
                              max_bytes=alerts.dedup_max_bytes)
    assert dedup.window == 10.0
    r = RetentionConfig()
    assert RetentionPolicy.from_megabytes(r.alerts_max_days, r.alerts_max_total_mb) == RetentionPolicy(90, 0)
    assert RetentionPolicy.from_megabytes(r.events_max_days, r.events_max_total_mb).max_total_bytes == 2048 << 20


def test_values_from_a_file_are_checked_by_the_config_loader() -> None:
    built = _build(AlertsConfig, {"dedup_window_secs": 2, "chain_key_file": "/etc/edr/chain.key"},
                   {}, "alerts.")
    assert built.dedup_window_secs == 2 and built.chain_key_file == "/etc/edr/chain.key"
    cases = [
        (RetentionConfig, {"alerts_max_days": -1}, "retention.alerts_max_days", "must be 0 or more"),
        (RetentionConfig, {"interval_secs": 0}, "retention.interval_secs", "must be greater than 0"),
        (RetentionConfig, {"logs_max_total_mb": "1G"}, "retention.logs_max_total_mb", "expected an integer"),
        (AlertsConfig, {"dedup_window_secs": 0}, "alerts.dedup_window_secs", "must be greater than 0"),
        (AlertsConfig, {"dedup_enabled": 1}, "alerts.dedup_enabled", "expected true or false"),
        (AlertsConfig, {"dedup_windows_secs": 1}, "alerts.dedup_windows_secs", "unknown key"),
    ]
    for cls, data, key, reason in cases:
        section = key.partition(".")[0]
        with pytest.raises(ConfigError) as info:
            _build(cls, data, {key: "conf/config.toml"}, f"{section}.")
        assert info.value.key == key and reason in info.value.reason
        assert str(info.value).startswith(f"configuration {key} (from conf/config.toml): ")
