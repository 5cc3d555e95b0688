"""The loop most actors are: receive a batch, compute, send the result, let go of both.

:func:`transform` owns the memory discipline of :mod:`edr.runtime.flight`:
the batch and the result are released before the actor waits for its next
batch, so a replay's next batch is decoded into memory the last one freed,
still in the cache. An actor whose core is a function from a batch to a
batch (a decoder, the enricher, the detection engines) need write no loop of
its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from edr.runtime.actor import Ports


async def transform(ports: Ports, compute: Callable[[Sequence[Any]], Sequence[Any] | None], *,
                    inp: str = "in", out: str = "out") -> None:
    """Send ``compute(batch)`` on ``out`` for every batch received on ``inp``, until ``inp`` ends.

    An empty or None result sends nothing. Backpressure and drops are the
    out edges' (their policies); cancellation is taken at the receive and
    the send, never between taking a batch and computing it. An exception
    from ``compute`` propagates (the supervisor's ``on_error`` decides).
    """
    output = ports.output(out)
    async for batch in ports.input(inp):
        result = compute(batch)
        if result:
            await output.send(result)
        del batch, result  # freed before the wait for the next: see edr.runtime.flight
