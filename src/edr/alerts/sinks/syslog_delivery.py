"""Delivery to one syslog receiver: over a stream (tcp, tls) with a confirmation window, or datagrams (udp, unix).

**Streams.** Spooled messages are sent in batches (RFC 6587 octet counting,
one write per batch) on one connection and stay in the spool until
:class:`~edr.alerts.sinks.confirm.ConfirmWindow` confirms them. When the
connection breaks (a send fails, or its watcher sees the receiver close),
everything unconfirmed is sent again on the next connection, after a
backoff. When the input has ended and everything was sent, a TCP connection
is half-closed and the receiver's own close confirms the rest.

**Datagrams.** Each message is one datagram; a batch is acknowledged once
every datagram of it was handed to the system. A local socket (``unix``)
then has it; UDP gives no guarantee at all (that is UDP): a receiver that
is down loses what is sent meanwhile. Use tcp or tls where that matters.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from edr.alerts.sinks.confirm import ConfirmWindow
from edr.alerts.sinks.destination import Destination
from edr.alerts.sinks.retry import Backoff
from edr.alerts.sinks.spool import Spool
from edr.alerts.sinks.syslog_format import octet_frames
from edr.alerts.sinks.syslog_transport import DatagramConnection, StreamConnection

#: Messages and bytes per send at most.
BATCH_RECORDS = 2000
BATCH_BYTES = 1 << 20
_STREAM_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError)


class StreamSyslog(Destination):
    """A tcp:// or tls:// receiver (see the module's notes).

    ``connect`` opens a new connection (bounded by ``timeout`` here);
    ``timeout`` also bounds a send that makes no progress; ``hold`` is the
    confirmation window (``syslog.confirm_secs``).
    """

    kind = "syslog"

    def __init__(self, name: str, spool: Spool, connect: Callable[[], Awaitable[StreamConnection]], *,
                 hold: float, timeout: float, backoff: Backoff, drain_secs: float, log: logging.Logger) -> None:
        super().__init__(name, spool, backoff=backoff, drain_secs=drain_secs, log=log)
        self.connect = connect
        self.timeout = timeout
        self.window = ConfirmWindow(hold)
        #: A send blocked this long means the receiver stopped reading for a while (see ConfirmWindow.stalled).
        self.stall_secs = min(0.25, hold / 4)
        self.connections = 0
        self._conn: StreamConnection | None = None

    async def deliver(self) -> None:
        """Connect, send, confirm; reconnect and resend after a break; end once everything is confirmed."""
        async with trio.open_nursery() as nursery:
            try:
                await self._deliver(nursery)
            finally:
                nursery.cancel_scope.cancel()

    async def _deliver(self, nursery: trio.Nursery) -> None:
        cursor = self.spool.ack_offset
        while True:
            conn = self._conn
            if conn is None:
                if self.done:
                    return
                if self.connections and not self.spool.pending_records:
                    # Nothing to send: connect again when something is (the first connection is made at once,
                    # so a wrong address or certificate shows at start).
                    more = self.arm()
                    if not self.spool.pending_records:
                        await self.wait_for_more(more)
                        continue
                try:
                    with trio.fail_after(self.timeout):
                        conn = await self.connect()
                except (*_STREAM_ERRORS, ValueError) as exc:
                    await self.failure(f"cannot connect: {_why(exc)}")
                    continue
                self._conn = conn
                self.connections += 1
                nursery.start_soon(conn.watch, self.notify)
                cursor = self.spool.ack_offset  # everything not confirmed goes (again) on this connection
            if conn.broken.is_set():
                if not len(self.window) and not self.spool.pending_records:
                    self._conn = None  # an idle connection the receiver closed (a restart, an idle timeout)
                    await conn.aclose()
                    continue
                await self._lost_connection(conn, f"the receiver closed the connection ({_why(conn.error)})")
                continue
            more = self.arm()
            # Taken before the read: the input closing while it runs (the intake's last batch stored just
            # then) must not pass for "everything was sent".
            closed = self.input_closed
            batch = await self.read(cursor, BATCH_RECORDS, BATCH_BYTES)
            if batch is not None:
                started = trio.current_time()
                try:
                    with trio.fail_after(self.timeout):
                        await conn.send(octet_frames(batch.payloads))
                except _STREAM_ERRORS as exc:
                    self.resent += len(batch)  # part of it may have gone: all of it goes again
                    await self._lost_connection(conn, f"sending failed: {_why(exc)}")
                    continue
                now = trio.current_time()
                if now - started > self.stall_secs:
                    self.window.stalled(now)
                self.window.sent(batch.end, len(batch), now)
                cursor = batch.end
                await self._confirm(self.window.due(now))
                continue
            await self._confirm(self.window.due(trio.current_time()))
            if closed and len(self.window):
                # Everything is sent: a receiver that closes after our end has read it all.
                if await conn.finish(self.window.hold):
                    await self._confirm(self.window.confirm_all())
                    self._conn = None
                    await conn.aclose()
                    continue
                if conn.can_finish:
                    await self._lost_connection(conn, "the receiver did not close after the end of the stream")
                    continue
            if self.done:
                self._conn = None
                await conn.aclose()
                return
            await self.wait_for_more(more, self.window.next_due() or float("inf"))

    async def _confirm(self, due: tuple[int, int] | None) -> None:
        if due is not None:
            await self.ack(*due)

    async def _lost_connection(self, conn: StreamConnection, why: str) -> None:
        self._conn = None
        await conn.aclose()
        self.resent += self.window.reset()
        await self.failure(why)

    async def close(self) -> None:
        """Close the connection, then the spool (anything unconfirmed is sent again at the next start)."""
        if self._conn is not None:
            await self._conn.aclose()
            self._conn = None
        self.window.reset()
        await super().close()


class DatagramSyslog(Destination):
    """A udp:// or unix:// receiver (see the module's notes)."""

    kind = "syslog"

    def __init__(self, name: str, spool: Spool, connect: Callable[[], Awaitable[DatagramConnection]], *,
                 backoff: Backoff, drain_secs: float, log: logging.Logger) -> None:
        super().__init__(name, spool, backoff=backoff, drain_secs=drain_secs, log=log)
        self.connect = connect
        self._conn: DatagramConnection | None = None

    async def deliver(self) -> None:
        """Send each spooled message as a datagram; a batch that fails is sent again whole, after a backoff."""
        while True:
            if self.done:
                return
            if self._conn is None:
                try:
                    self._conn = await self.connect()
                except OSError as exc:
                    await self.failure(f"cannot open the socket: {_why(exc)}")
                    continue
            more = self.arm()
            closed = self.input_closed  # before the read: what was stored before the close, it sees
            batch = await self.read(self.spool.ack_offset, BATCH_RECORDS, BATCH_BYTES)
            if batch is None:
                if closed:
                    return
                await self.wait_for_more(more)
                continue
            try:
                await self._conn.send_each(batch.payloads)
            except OSError as exc:
                self._conn.close()
                self._conn = None
                self.resent += len(batch)
                await self.failure(f"sending failed: {_why(exc)}")
                continue
            await self.ack(batch.end, len(batch))

    async def close(self) -> None:
        """Close the socket, then the spool."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        await super().close()


def _why(exc: BaseException | None) -> str:
    if exc is None:
        return "end of file"
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None and not str(exc):
        # trio wraps what broke the stream (an ssl.SSLError: a certificate refused...); that is what to tell
        return _why(exc.__cause__)
    return str(exc) or type(exc).__name__
