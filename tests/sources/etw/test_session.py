"""The ETW session over a stand-in pywintrace: providers, stale sessions, loss counters, settings."""

from __future__ import annotations

import pytest

from edr.config import ETW_PROVIDERS, ConfigError, EtwConfig, load_config
from edr.sources.etw.providers import PROVIDERS
from edr.sources.etw.session import EVENT_ENABLE_PROPERTY_SID, EtwSession, EtwUnavailable
from tests.sources.etw.standin_etw import SessionTable, make_module, stale_session


def _session(table: SessionTable, **kw: object) -> EtwSession:
    return EtwSession(make_module(table, list, **kw), name="edr-etw", providers=list(PROVIDERS.values()),  # type: ignore[arg-type]
                      callback=lambda record: None, buffer_kb=128, min_buffers=32, max_buffers=96)


def test_providers_buffers_and_sid_are_passed_to_pywintrace() -> None:
    table = SessionTable()
    s = _session(table)
    s.start()
    try:
        etw = table.running["edr-etw"]
        assert (etw.ring_buf_size, etw.min_buffers, etw.max_buffers) == (128, 32, 96)
        assert etw.ignore_exists_error is False
        by_name = {p.name: p for p in etw.providers}
        assert str(by_name["Microsoft-Windows-Kernel-Process"].guid) == "{22FB2CD6-0E7B-422B-A0C7-2FAD1FD0E716}"
        assert by_name["Microsoft-Windows-Kernel-Process"].any_bitmask == 0x50
        assert by_name["Microsoft-Windows-Kernel-Registry"].any_bitmask == 0x7300
        assert by_name["Microsoft-Windows-Kernel-Process"].params.event_property == EVENT_ENABLE_PROPERTY_SID
        assert by_name["Microsoft-Windows-Kernel-Network"].params is None
        assert all(p.level == 5 for p in etw.providers)
        assert s.stale_stopped is False
    finally:
        s.stop()
    assert table.running == {}
    s.stop()  # idempotent
    assert [e[0] for e in table.log] == ["start", "stop"]


def test_a_stale_session_is_stopped_before_ours_starts() -> None:
    table = SessionTable()
    stale_session(table, "edr-etw")
    s = _session(table)
    s.start()
    assert s.stale_stopped is True
    assert [e[0] for e in table.log] == ["control_stop", "start"]
    s.stop()


def test_loss_counters_are_reported_and_kept_after_stop() -> None:
    table = SessionTable()
    s = _session(table)
    s.start()
    table.running["edr-etw"].events_lost = 17
    assert s.statistics()["events_lost"] == 17
    s.stop()
    assert s.statistics()["events_lost"] == 17


def test_a_failed_start_raises_with_the_fix_and_leaves_nothing() -> None:
    table = SessionTable()
    s = _session(table, fail_provider="Microsoft-Windows-DNS-Client")
    with pytest.raises(EtwUnavailable, match="elevated prompt"):
        s.start()
    assert table.running == {} and not s.running


def test_settings_defaults_and_validation() -> None:
    cfg = EtwConfig()
    assert cfg.session_name == "edr-etw" and cfg.providers == list(PROVIDERS)
    assert cfg.bridge_records >= 4000 * 32 * 2
    with pytest.raises(ValueError, match="unknown ETW providers"):
        EtwConfig(providers=["Microsoft-Windows-Nope"])
    with pytest.raises(ValueError, match="must be greater than 0"):
        EtwConfig(bridge_records=0)
    # the [etw] section of the configuration, with its key named on a bad value
    assert load_config(None, environ={}).config.etw == EtwConfig()
    with pytest.raises(ConfigError, match=r"etw\.providers .*unknown ETW providers"):
        load_config(None, environ={"EDR__ETW__PROVIDERS": '["Microsoft-Windows-Nope"]'})


def test_the_configuration_names_every_provider_the_sensor_knows() -> None:
    """config.ETW_PROVIDERS (what a config file may name) and the sensor's provider table stay in step."""
    assert list(ETW_PROVIDERS) == list(PROVIDERS)
