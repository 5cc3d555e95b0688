"""When messages sent on a syslog stream count as delivered, sans-IO.

Plain syslog over TCP or TLS has no acknowledgement: a message is
``send``-complete once the kernel has it, and lost if the receiver dies (or
restarts) before reading it from its socket. So the sink keeps what it sent
in its spool until the connection has stayed up ``hold`` seconds after the
send; a connection that breaks before sends everything unconfirmed again on
the next one (at least once: receivers deduplicate by ``event.id``).

This covers a receiver that stops, crashes or restarts while it reads
promptly, which is what happens in practice: what its kernel buffers held
was sent within the last moments. A send that blocks (the receiver stopped
reading, its window closed) is a *stall*: everything sent before it then
waits ``hold`` seconds from the end of the stall, since it may still sit
unread in the receiver's buffers. What the window cannot cover is a
receiver that stops reading for longer than ``hold`` while the sink has
nothing more to send, and then dies: the webhook sink, whose receiver
answers each request, has no such gap.

At a clean end the sink closes its side of a TCP connection and waits for
the receiver to close its own: a receiver closes after reading up to the
end, which confirms everything at once (:meth:`ConfirmWindow.confirm_all`).
"""

from __future__ import annotations

from collections import deque

import attrs


@attrs.define
class _Sent:
    end: int  #: spool offset after the batch
    records: int
    ready: float  #: when it counts as delivered if the connection is still up


class ConfirmWindow:
    """Batches sent on one connection and not yet confirmed, oldest first."""

    def __init__(self, hold: float) -> None:
        if hold <= 0:
            raise ValueError(f"hold must be more than 0 seconds, not {hold}")
        self.hold = hold
        self._sent: deque[_Sent] = deque()

    def __len__(self) -> int:
        return len(self._sent)

    @property
    def records(self) -> int:
        """Records sent and not yet confirmed."""
        return sum(s.records for s in self._sent)

    def sent(self, end: int, records: int, now: float) -> None:
        """A batch ending at spool offset ``end`` was handed to the connection at ``now``."""
        self._sent.append(_Sent(end, records, now + self.hold))

    def stalled(self, now: float) -> None:
        """A send blocked until ``now``: what was sent before may still be unread, so it waits ``hold`` again."""
        ready = now + self.hold
        for s in self._sent:
            s.ready = max(s.ready, ready)

    def due(self, now: float) -> tuple[int, int] | None:
        """Confirm what is ready at ``now``: ``(offset to ack, records)``, or None when nothing is."""
        end = records = 0
        while self._sent and self._sent[0].ready <= now:
            s = self._sent.popleft()
            end, records = s.end, records + s.records
        return (end, records) if records else None

    def next_due(self) -> float | None:
        """When the oldest unconfirmed batch becomes ready (None: nothing unconfirmed)."""
        return self._sent[0].ready if self._sent else None

    def confirm_all(self) -> tuple[int, int] | None:
        """The receiver proved it read everything (it closed after our end): confirm it all."""
        if not self._sent:
            return None
        end = self._sent[-1].end
        records = self.records
        self._sent.clear()
        return end, records

    def reset(self) -> int:
        """The connection broke: forget what was sent on it (it is sent again); returns how many records."""
        records = self.records
        self._sent.clear()
        return records
