"""Domain indicators: exact names and suffixes (``*.example.com`` or ``.example.com``).

A suffix entry matches the name itself and every name under it, as
Rustinel's lists do: ``*.example.com`` matches ``example.com`` and
``a.b.example.com`` but not ``badexample.com``. Lookups walk the labels of
the observed name (a handful of dict probes), never the list.
"""

from __future__ import annotations

import re
from typing import Final

from edr.detect.ioc.lists import Indicator

_LABEL: Final = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def normalize_domain(text: str) -> str | None:
    """Lower-case name without a trailing dot; None if it cannot be a domain name."""
    name = text.strip().lower().rstrip(".")
    if not name or len(name) > 253 or " " in name:
        return None
    return name


def validate_listed(name: str) -> str | None:
    """Why a listed name is invalid, or None when it is a valid domain name."""
    labels = name.split(".")
    if len(labels) < 2 and name != "localhost":
        return "a domain needs at least two labels"
    for label in labels:
        if not _LABEL.match(label):
            return f"invalid label {label!r}"
    return None


class DomainSet:
    """Exact and suffix domain indicators."""

    def __init__(self) -> None:
        self.exact: dict[str, Indicator] = {}
        self.suffix: dict[str, Indicator] = {}

    def __len__(self) -> int:
        return len(self.exact) + len(self.suffix)

    def lookup(self, name: str) -> list[Indicator]:
        """Indicators matching the normalized ``name`` (exact first, then the longest suffix up)."""
        out = []
        hit = self.exact.get(name)
        if hit is not None:
            out.append(hit)
        if self.suffix:
            probe = name
            while True:
                hit = self.suffix.get(probe)
                if hit is not None:
                    out.append(hit)
                dot = probe.find(".")
                if dot < 0:
                    break
                probe = probe[dot + 1:]
        return out

    def lookup_text(self, text: str) -> list[Indicator]:
        """``lookup`` for a raw field value."""
        name = normalize_domain(text)
        return self.lookup(name) if name is not None else []
