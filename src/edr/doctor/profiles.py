"""The :class:`~edr.doctor.rule_verdicts.SensorProfile` of each platform, as a configuration sets it up (sans-IO)."""

from __future__ import annotations

from collections.abc import Iterable

from edr import event as ev
from edr.detect.sigma.logsources import Route
from edr.doctor.rule_verdicts import RouteFields, SensorProfile
from edr.doctor.sensor_fields import (
    ETW_PE_FIELDS,
    ETW_PROVIDER_ROUTES,
    LINUX_FAMILY_CATEGORIES,
    WINDOWS_ETW_FIELDS,
    linux_ebpf_fields,
)


def linux_profile(families: Iterable[str]) -> SensorProfile:
    """The eBPF sensor collecting ``families`` (``sensor.families``)."""
    enabled = set(families)
    routes: dict[Route, RouteFields] = {}
    disabled: dict[str, str] = {}
    for family, categories in LINUX_FAMILY_CATEGORIES.items():
        for category in categories:
            if family in enabled:
                routes[(ev.LINUX, category, None)] = linux_ebpf_fields()[category]
            else:
                disabled[category] = (f"comes from the sensor family '{family}', which sensor.families leaves out "
                                      f"(add \"{family}\" to [sensor] families)")
    return SensorProfile("linux", "eBPF", ev.LINUX, routes, disabled)


def windows_profile(providers: Iterable[str], *, pe_info: bool) -> SensorProfile:
    """The ETW sensor with ``providers`` enabled (``etw.providers``); ``pe_info``: whether process images'
    hashes and version resources are read (pefile importable and ``etw.pe_wait_ms`` > 0)."""
    enabled = set(providers)
    routes: dict[Route, RouteFields] = {}
    disabled: dict[str, str] = {}
    for provider, provided in ETW_PROVIDER_ROUTES.items():
        for category, service in provided:
            if provider not in enabled:
                disabled.setdefault(category, f"comes from the ETW provider {provider}, which etw.providers "
                                              "leaves out")
                continue
            fields = WINDOWS_ETW_FIELDS[(category, service)]
            if category == ev.PROCESS_CREATION and pe_info and fields is not None:
                fields = fields | ETW_PE_FIELDS
            routes[(ev.WINDOWS, category, service)] = fields
    for category in {route[1] for route in routes}:
        disabled.pop(category, None)  # fed by another provider (wmi_event and winlog share one)
    return SensorProfile("windows", "ETW", ev.WINDOWS, routes, disabled)


def profile_for(platform: str, *, families: Iterable[str] = (), providers: Iterable[str] = (),
                pe_info: bool = False) -> SensorProfile:
    """:func:`linux_profile` or :func:`windows_profile` by platform name."""
    if platform == "windows":
        return windows_profile(providers, pe_info=pe_info)
    return linux_profile(families)
