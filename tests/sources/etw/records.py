"""Test support: single ETW records in pywintrace's shape, built from typed properties."""

from __future__ import annotations

from typing import Any

from tests.sources.etw.pywintrace_shape import to_pywintrace

GUIDS = {
    "process": "22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716", "file": "edd08927-9cc4-4e65-b970-c2560fb5c289",
    "network": "7dd42a49-5329-4832-8dfd-43d979153a88", "registry": "70eb4f03-c1de-4f73-a051-33d13d5413bd",
    "dns": "1c95126e-7eea-49a9-a3fe-a378b03ddb4d", "powershell": "a0c1853b-5c40-4b15-8766-3cf1c58f985a",
    "task": "de7b24ea-73c8-4a09-985d-5bdadcfa9017", "wmi": "1418ef04-b0b4-4623-bf7e-d74ab47bbdaa",
}
#: 2026-10-09 07:58:20 UTC as a FILETIME
T0 = 134360063001409789


def typed(value: Any, kind: str | None = None) -> dict[str, Any]:
    """A property of the recording format: strings as ``string``, ints as ``u32`` unless told."""
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, str):
        return {"string": value}
    return {kind or "u32": value}


def record(provider: str, event_id: int, props: dict[str, Any], *, pid: int = 6340, ts: int = T0,
           opcode: int = 0, version: int = 0, kinds: dict[str, str] | None = None,
           extended: dict[str, Any] | None = None, ints_as_text: bool = False) -> tuple[int, dict[str, Any]]:
    """A pywintrace callback argument for one event."""
    kinds = kinds or {}
    rec = {"header": {"provider": GUIDS[provider], "event_id": event_id, "opcode": opcode, "version": version,
                      "process_id": pid, "timestamp": ts},
           "properties": {k: typed(v, kinds.get(k)) for k, v in props.items()}}
    return to_pywintrace(rec, ints_as_text=ints_as_text, extended=extended)
