"""Actor kinds: what a graph's ``kind = "..."`` names, resolved lazily.

A :class:`Kind` is two import paths: the actor's class (``module:Class``),
whose ``inputs`` and ``outputs`` a graph is validated against, and
optionally a builder (``module:function``) that makes an actor from the
application's context: ``builder(ctx, name) -> actor``. Without a builder
the class's own ``build(ctx, name)`` classmethod is used. Nothing is
imported until a graph names the kind, so validating a graph never loads a
heavy engine, and the runtime never needs to know what ``ctx`` holds.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs


class KindError(LookupError):
    """A kind that cannot be used: unknown, unimportable, or not an actor (``reason`` says which)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"actor kind {kind!r}: {reason}")
        self.kind = kind
        self.reason = reason


def _load(kind: str, target: str) -> Any:
    module, sep, name = target.partition(":")
    if not sep or not module or not name:
        raise KindError(kind, f"{target!r} is not 'module:name'")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise KindError(kind, f"cannot import {module}: {exc}") from exc
    except AttributeError:
        raise KindError(kind, f"{module} has no {name}") from None


@attrs.frozen
class Kind:
    """Where an actor kind's class and (optionally) its builder are."""

    actor: str
    builder: str | None = None

    def actor_class(self, kind: str) -> type[Any]:
        """The actor class (imported); raises :class:`KindError`."""
        cls = _load(kind, self.actor)
        for attr in ("inputs", "outputs", "run"):
            if not hasattr(cls, attr):
                raise KindError(kind, f"{self.actor} is not an actor (no {attr})")
        actor_class: type[Any] = cls
        return actor_class

    def make(self, kind: str, ctx: object, name: str) -> Any:
        """Build an actor called ``name`` from ``ctx`` (may be slow: rule loading)."""
        if self.builder is not None:
            build: Callable[[object, str], Any] = _load(kind, self.builder)
        else:
            build = self.actor_class(kind).build
        return build(ctx, name)


class Kinds(Mapping[str, Kind]):
    """A table of kinds by name; ``Kinds({"null": Kind("edr.runtime.null:NullSink")})``."""

    def __init__(self, table: Mapping[str, Kind | str]) -> None:
        self._table = {name: Kind(k) if isinstance(k, str) else k for name, k in table.items()}

    def __getitem__(self, kind: str) -> Kind:
        return self._table[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def resolve(self, kind: str) -> Kind:
        """The entry of ``kind``; raises :class:`KindError` when there is none."""
        try:
            return self._table[kind]
        except KeyError:
            raise KindError(kind, f"unknown (known: {', '.join(sorted(self._table))})") from None

    def with_kinds(self, extra: Mapping[str, Kind | str]) -> Kinds:
        """A copy with ``extra`` added (tests add their own actors this way)."""
        return Kinds({**self._table, **extra})
