"""The rule that turns a raw field (a name and a value as a source recorded them) into an ``edr.*`` leaf, sans-IO.

Raw event fields with no ECS home (``edr.event``), the group of a Sigma
correlation (``edr.correlation.group``), YARA metadata (``edr.yara.meta``),
match details (``edr.match``) and anything an engine sends that edr's schema
does not know (``edr.unmapped``) are objects whose keys and values come from
outside edr: an EVTX file may name a field ``Threat Name`` in one document and
hold ``true`` or ``"true"`` in another. Elasticsearch maps these objects as
``flattened`` (one mapping for the whole object, every leaf a keyword), and
this rule makes their content the same shape in every document:

**Names** (:func:`raw_name`): whitespace is removed (``Threat Name`` ->
``ThreatName``, which is how SigmaHQ writes Defender's fields); then every
character that is neither a Unicode letter or digit (``str.isalnum``) nor
``_`` nor ``-`` becomes ``_``, dots included, so that a name is exactly one
level of the object (``a.b`` -> ``a_b``); a name left empty becomes ``_``.
A normalized name matches :data:`RAW_NAME`.

**Values** (:func:`raw_value`): a string is kept as it is; ``True``/``False``
become ``"true"``/``"false"`` (as Sysmon writes them); an integer its decimal
text (hexadecimal ``0x...`` beyond Python's 4,300-digit limit); a float its
Python ``repr`` (``"0.5"``, ``"1e+300"``, ``"nan"``); ``None`` means the
field is absent. A list (or tuple) becomes a list of strings, one per
element by the same rule, where ``None`` is ``""`` and a nested list or
object is its compact JSON text. Any other value (an object) becomes its
compact JSON text. So every leaf is a string, or a list of strings where the
source recorded a list: both are the same ``keyword`` to Elasticsearch, so
no document can bring a mapping conflict.

When two raw names normalize to the same name (``New Value`` beside
``NewValue``), the first in the event's order keeps it; a later one with an
equal value is the same information and is not repeated; a later one with a
different value is kept as ``<name>_2`` (``_3``...). Nothing is dropped.
"""

from __future__ import annotations

import re
from typing import Any, Final

from edr.alerts.ndjson import dumps_line

#: What a normalized name looks like: Unicode letters and digits, ``_`` and ``-``.
RAW_NAME: Final = re.compile(r"[\w-]+")
_SPACE: Final = re.compile(r"\s+")
_OTHER: Final = re.compile(r"[^\w-]")
#: Names are few (a schema's worth per source) but a hostile recording may
#: hold any number: the memo stops growing here and later names are computed.
_MEMO_LIMIT: Final = 8192
_SMALL: Final = 1 << 64  # integers whose decimal text Python always writes
#: Names already normalized (read directly by the ECS mapping's loop).
NAMES: Final[dict[str, str]] = {}


def raw_name(name: Any) -> str:
    """``name`` as a key of an ``edr.*`` object (see the module docstring)."""
    known = NAMES.get(name) if type(name) is str else None
    if known is not None:
        return known
    text = name if isinstance(name, str) else raw_value(name)
    if not isinstance(text, str):  # a list or None as a name: its JSON text
        text = _json_text(name)
    out = _OTHER.sub("_", _SPACE.sub("", text)) or "_"
    if type(name) is str and len(NAMES) < _MEMO_LIMIT:
        NAMES[name] = out
    return out


def raw_value(value: Any) -> str | list[str] | None:
    """``value`` as a leaf of an ``edr.*`` object: a string, a list of strings, or None (absent)."""
    if type(value) is str:
        return value
    kind = type(value)
    if kind is int and -_SMALL < value < _SMALL:
        return str(value)
    if kind is list or kind is tuple:
        return [_element(v) for v in value]
    if value is None:
        return None
    return _scalar(value)


def raw_object(mapping: dict[Any, Any]) -> dict[str, Any]:
    """``mapping`` (match details, YARA metadata) with names and values by the rule; nested objects stay objects."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            put_raw(out, raw_name(key), raw_object(value))
        else:
            put_raw(out, raw_name(key), raw_value(value))
    return out


def put_raw(target: dict[str, Any], name: str, value: Any) -> None:
    """Set ``target[name] = value`` unless None; a name taken by an earlier field: see the module docstring."""
    if value is None:
        return
    if name not in target:
        target[name] = value
        return
    if target[name] == value:
        return
    n = 2
    while f"{name}_{n}" in target:
        if target[f"{name}_{n}"] == value:
            return
        n += 1
    target[f"{name}_{n}"] = value


def is_raw_leaf(value: Any) -> bool:
    """True for what :func:`raw_value` returns: a string or a list of strings."""
    if isinstance(value, str):
        return True
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _element(value: Any) -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    kind = type(value)
    if kind is list or kind is tuple or kind is dict:
        return _json_text(value)
    return _scalar(value)


def _scalar(value: Any) -> str:
    kind = type(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return _int_text(value)
    if kind is float:
        return repr(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return _int_text(int(value))
    if isinstance(value, float):
        return repr(float(value))
    return _json_text(value)


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # beyond sys.get_int_max_str_digits(); hexadecimal has no such limit
        return hex(value)


def _json_text(value: Any) -> str:
    # dumps_line writes anything (deep nesting, huge integers, lone surrogates, objects); its newline is cut
    return dumps_line(value)[:-1].decode("utf-8")
