"""Values that fit the types of edr's alert schema, and putting a key into an alert document in the type
:mod:`edr.alerts.ecs_schema` declares for it, sans-IO.

:func:`place` sets a key when its value fits the key's type, converted where the conversion loses
nothing (an integer for a keyword is its decimal text, a single text for a keyword list is a list of
one, an epoch time for a date its RFC 3339 text); a key the schema does not know, or a value that
does not fit (a list for a single keyword, text for a long, an integer beyond 64 bits, an address
that is no IP), is kept under ``edr.unmapped`` by the raw-field rule (:mod:`edr.alerts.raw_fields`)
and logged once per key. None is an absent value. :func:`place_all` does the same for a whole mapping
(an event's origin, an alert's engine keys), with the few keys that are renamed or split on the way.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from datetime import datetime, timedelta
from typing import Any, Final

from edr.alerts.ecs_schema import ALL_FIELDS, WRITER_KEYS, FieldSpec
from edr.alerts.raw_fields import put_raw, raw_name, raw_object, raw_value

log = logging.getLogger("edr.alerts")

LONG_MIN: Final = -(1 << 63)
LONG_END: Final = 1 << 63
_EPOCH: Final = datetime(1970, 1, 1)


def iso_time(ts: float) -> str | None:
    """RFC 3339 UTC with milliseconds, as ``@timestamp`` wants; None for a time no date can hold.

    Computed from the epoch rather than by ``datetime.fromtimestamp``, which
    refuses times before 1970 on Windows and writes years before 1000 with
    fewer than four digits.
    """
    try:
        moment = _EPOCH + timedelta(seconds=ts)
    except (OverflowError, ValueError, TypeError):  # beyond years 1-9999, NaN, not a number
        return None
    return moment.isoformat(timespec="milliseconds") + "Z"


def as_long(value: Any) -> int | None:
    """``value`` as a 64-bit signed integer (from an int or integer text), or None."""
    kind = type(value)
    if kind is int:
        n = value
    elif kind is str:
        try:
            n = int(value, 0)
        except ValueError:  # not a number, or more digits than Python converts
            return None
    else:
        return None
    return n if LONG_MIN <= n < LONG_END else None


def as_keyword(value: Any) -> str | None:
    """``value`` as keyword text: non-empty text, or an integer's decimal text; None otherwise."""
    kind = type(value)
    if kind is str:
        text: str = value
        return text if text else None
    if kind is int:
        text_or_none = raw_value(value)  # an int gives text, never a list
        return text_or_none if isinstance(text_or_none, str) else None
    return None


_IP_MEMO_LIMIT: Final = 4096
_ips: dict[str, bool] = {}


def is_ip(value: Any) -> bool:
    """True for text Elasticsearch's ``ip`` type takes: an IPv4 or IPv6 address, without a zone (``%eth0``)."""
    if type(value) is not str:
        return False
    known = _ips.get(value)
    if known is None:
        try:
            ipaddress.ip_address(value)
            known = "%" not in value
        except ValueError:
            known = False
        if len(_ips) < _IP_MEMO_LIMIT:
            _ips[value] = known
    return known


#: What :func:`fit` returns for a value that does not fit the type.
MISFIT: Final = object()
_TEXT_TYPES: Final = ("keyword", "wildcard", "match_only_text")
#: Keys holding one text value, which take a string as it is.
_TEXT_KEYS: Final = frozenset(k for k, spec in ALL_FIELDS.items()
                              if spec.type in _TEXT_TYPES and not spec.array and k not in WRITER_KEYS)
#: Keys holding a list of text, which take a list of strings as it is.
_TEXT_LIST_KEYS: Final = frozenset(k for k, spec in ALL_FIELDS.items() if spec.type in _TEXT_TYPES and spec.array)
#: Keys holding one 64-bit integer.
_LONG_KEYS: Final = frozenset(k for k, spec in ALL_FIELDS.items()
                              if spec.type == "long" and not spec.array and k not in WRITER_KEYS)


def _fit_scalar(kind: str, value: Any) -> Any:
    if kind in _TEXT_TYPES:
        if type(value) is str:
            return value
        return raw_value(value) if type(value) in (int, float, bool) else MISFIT
    if kind == "long":
        n = as_long(value)
        return MISFIT if n is None else n
    if kind in ("double", "float"):
        if type(value) in (int, float) and math.isfinite(value):
            return float(value)
        return MISFIT
    if kind == "date":
        if type(value) in (int, float):
            text = iso_time(value)
            return MISFIT if text is None else text
        if type(value) is str:
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return MISFIT
            return value
        return MISFIT
    if kind == "ip":
        return value if is_ip(value) else MISFIT
    if kind == "boolean":
        return value if type(value) is bool else MISFIT
    if kind == "flattened":
        return raw_object(value) if isinstance(value, dict) else MISFIT
    return MISFIT


def fit(spec: FieldSpec, value: Any) -> Any:
    """``value`` converted to ``spec``'s type (a list when ``spec.array``); :data:`MISFIT` when it does not fit."""
    if not spec.array:
        if type(value) in (list, tuple):
            return MISFIT
        return _fit_scalar(spec.type, value)
    items = value if type(value) in (list, tuple) else (value,)
    out = []
    for item in items:
        if item is None:
            continue
        fitted = _fit_scalar(spec.type, item)
        if fitted is MISFIT:
            return MISFIT
        out.append(fitted)
    return out


_warned: set[str] = set()
_WARN_LIMIT: Final = 256


def _unmapped(doc: dict[str, Any], key: Any, value: Any, why: str) -> None:
    name = raw_name(key)
    put_raw(doc.setdefault("edr.unmapped", {}), name, raw_value(value))
    if name not in _warned and len(_warned) < _WARN_LIMIT:
        _warned.add(name)
        log.warning("alert key %r %s: kept under edr.unmapped.%s", key, why, name)


def place(doc: dict[str, Any], key: str, value: Any) -> None:
    """Set ``doc[key]`` to ``value`` in the type the schema declares for ``key``, else keep it under edr.unmapped.

    None means absent. Keys the alert chain owns (``edr.chain.*``) are never set here.
    """
    # the common cases first: text for a keyword, an integer for a long, a list of text for a keyword list
    kind = type(value)
    if kind is str:
        if key in _TEXT_KEYS:
            doc[key] = value
            return
    elif kind is int:
        if key in _LONG_KEYS and LONG_MIN <= value < LONG_END:
            doc[key] = value
            return
    elif kind is list and key in _TEXT_LIST_KEYS and all(type(v) is str for v in value):
        doc[key] = list(value)
        return
    if value is None:
        return
    spec = ALL_FIELDS.get(key) if type(key) is str else None
    if spec is None or key in WRITER_KEYS:
        _unmapped(doc, key, value, "is not in edr's ECS schema")
        return
    fitted = fit(spec, value)
    if fitted is MISFIT:
        _unmapped(doc, key, value, f"holds a value that is no {spec.type}{' list' if spec.array else ''}")
    else:
        doc[key] = fitted


_GROUP_PREFIX: Final = "edr.correlation.group."
#: Keys of an origin or of an alert's engine keys written under another name.
_RENAMED: Final = {
    # the record's position in the replayed file (the EVTX record number is winlog.record_id)
    "log.record": "edr.log.record",
}


def place_all(doc: dict[str, Any], mapping: dict[Any, Any]) -> None:
    """:func:`place` every key of ``mapping`` (an event's origin, an alert's engine keys), with the keys
    that are renamed or split on the way."""
    text_keys, long_keys, list_keys = _TEXT_KEYS, _LONG_KEYS, _TEXT_LIST_KEYS
    for key, value in mapping.items():
        kind = type(value)
        key = _RENAMED.get(key, key)
        if key == "winlog.event_id":
            place(doc, "winlog.event_id", value)
            place(doc, "event.code", value)
            continue
        # the common cases inline; place() does the same, slower
        if kind is str:
            if key in text_keys:
                doc[key] = value
                continue
            if key in list_keys:
                doc[key] = [value]
                continue
        elif kind is int and LONG_MIN <= value < LONG_END:
            if key in long_keys:
                doc[key] = value
                continue
            if key in text_keys:
                doc[key] = str(value)
                continue
        elif kind is list and key in list_keys and all(type(v) is str for v in value):
            doc[key] = list(value)
            continue
        if key == "rule.reference" and kind in (list, tuple):
            # ECS: one keyword. The first reference there, all of them (in order) under edr.
            refs = [v for v in value if v is not None]
            if refs:
                place(doc, "rule.reference", refs[0])
                place(doc, "edr.rule.references", refs)
        elif type(key) is str and key.startswith(_GROUP_PREFIX):
            put_raw(doc.setdefault("edr.correlation.group", {}), raw_name(key[len(_GROUP_PREFIX):]),
                    raw_value(value))
        else:
            place(doc, key, value)
