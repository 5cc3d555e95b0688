"""An actor that drains its input: for benchmarks and graphs without a consumer."""

from __future__ import annotations

from typing import ClassVar

from edr.runtime.actor import ActorBase, Ports


class NullSink(ActorBase):
    """Receives and discards every batch."""

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ()

    @classmethod
    def build(cls, ctx: object, name: str) -> NullSink:
        """Needs nothing from ``ctx``."""
        return cls(name)

    async def run(self, ports: Ports) -> None:
        """Receive and discard."""
        async for _ in ports.input("in"):
            pass
