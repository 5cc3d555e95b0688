"""Connections to syslog receivers, on trio: TCP and TLS streams, UDP and local datagram sockets.

Stream connections (:class:`StreamConnection`) are watched by a task that
reads from them: a syslog receiver never writes, so end-of-file or an error
there means the connection is gone, which :attr:`StreamConnection.broken`
then says before the next send fails. The sockets have
``TCP_USER_TIMEOUT`` set below the confirmation window (where the system has
it): data the receiver's host has not acknowledged within that time breaks
the connection, so a receiver that vanished without a word (a host down, a
cable cut) is noticed before what was sent to it counts as delivered.

TLS contexts are made at each connection attempt, so a certificate or key
that was wrong when the agent started is used once it is fixed; a problem
with them is an :class:`OSError` naming the file, like any connection error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
import stat
from collections.abc import Awaitable, Callable, Sequence

import trio

from edr.sink_targets import SyslogTarget

_RECEIVE: int = 4096


class StreamConnection:
    """A TCP or TLS connection to a syslog receiver, and what its watcher learnt about it."""

    def __init__(self, stream: trio.abc.Stream, *, can_finish: bool) -> None:
        self.stream = stream
        #: True when :meth:`finish` can prove delivery (a TCP half-close; TLS has none).
        self.can_finish = can_finish
        #: Set once the connection is gone (end-of-file, reset, close).
        self.broken = trio.Event()
        #: Why, once broken: None after a clean end-of-file from the receiver.
        self.error: BaseException | None = None
        self._on_break: Callable[[], None] | None = None

    async def watch(self, on_break: Callable[[], None]) -> None:
        """Read until the receiver closes or the connection fails; then set :attr:`broken` and call ``on_break``."""
        self._on_break = on_break
        try:
            while True:
                data = await self.stream.receive_some(_RECEIVE)
                if not data:
                    break
                # A syslog receiver has nothing to say; whatever it sends is ignored.
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.error = exc
        finally:
            self.broken.set()
            on_break()

    async def send(self, data: bytes) -> None:
        """Send ``data``; raises ``trio.BrokenResourceError``/``trio.ClosedResourceError``/OSError when it cannot."""
        if self.broken.is_set():
            raise trio.BrokenResourceError(f"connection closed by the receiver ({self.error or 'end of file'})")
        await self.stream.send_all(data)

    async def finish(self, timeout: float) -> bool:
        """Close our side and wait up to ``timeout`` for the receiver to close its own, which it does after
        reading everything: True when it did (everything sent was read), False otherwise."""
        stream = self.stream
        if not self.can_finish or not isinstance(stream, trio.abc.HalfCloseableStream):
            return False
        try:
            await stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return False
        with trio.move_on_after(timeout):
            await self.broken.wait()
        return self.broken.is_set() and self.error is None

    async def aclose(self) -> None:
        """Close the connection (never raises)."""
        with contextlib.suppress(Exception):
            await trio.aclose_forcefully(self.stream)


class DatagramConnection:
    """A connected UDP or local (``AF_UNIX``) datagram socket: one message per datagram."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock

    async def send_each(self, messages: Sequence[bytes]) -> None:
        """Send each message as one datagram; raises OSError on the first that fails."""
        for message in messages:
            await self.sock.send(message)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


def _user_timeout(sock: trio.socket.SocketType | socket.socket, seconds: float) -> None:
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, max(1000, int(seconds * 1000)))


def _check_key_file(path: str) -> None:
    """A private key must be readable by its owner only: whoever can read it can pose as this agent."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise OSError(exc.errno, f"syslog TLS key file {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise PermissionError(f"syslog TLS key file {path} is accessible to group or others "
                              f"(mode {stat.S_IMODE(st.st_mode):04o}): chmod 600 {path}")


def tls_context(ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext:
    """A client context: the receiver's certificate checked against ``ca_file`` (else the system's CAs) and its
    name; our certificate presented when ``cert_file`` is set. OSError naming the file when one is unusable."""
    try:
        context = ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise OSError(f"syslog.tls_ca_file {ca_file}: {exc}") from None
    if cert_file:
        if key_file:
            _check_key_file(key_file)
        try:
            context.load_cert_chain(cert_file, key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise OSError(f"syslog.tls_cert_file {cert_file} / tls_key_file {key_file or '(in the same file)'}: "
                          f"{exc}") from None
    return context


def stream_connector(target: SyslogTarget, *, user_timeout: float, ca_file: str = "", cert_file: str = "",
                     key_file: str = "") -> Callable[[], Awaitable[StreamConnection]]:
    """A function that opens a new connection to ``target`` (tcp or tls); raises OSError (or a trio or ssl
    error) when it cannot. The caller bounds it in time."""

    async def connect() -> StreamConnection:
        context = tls_context(ca_file, cert_file, key_file) if target.transport == "tls" else None
        tcp = await trio.open_tcp_stream(target.host, target.port)
        try:
            _user_timeout(tcp.socket, user_timeout)
            if context is None:
                return StreamConnection(tcp, can_finish=True)
            tls = trio.SSLStream(tcp, context, server_hostname=target.host)
            await tls.do_handshake()
            return StreamConnection(tls, can_finish=False)
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise

    return connect


def datagram_connector(target: SyslogTarget) -> Callable[[], Awaitable[DatagramConnection]]:
    """A function that opens a connected datagram socket to ``target`` (udp or unix); raises OSError."""

    async def connect() -> DatagramConnection:
        if target.transport == "unix":
            sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            address: object = target.path
        else:
            infos = await trio.socket.getaddrinfo(target.host, target.port, type=socket.SOCK_DGRAM)
            if not infos:
                raise OSError(f"{target.host}: no address")
            family, kind, proto, _, address = infos[0]
            sock = trio.socket.socket(family, kind, proto)
        try:
            await sock.connect(address)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EPROTOTYPE:
                raise OSError(exc.errno, f"{target.path} is not a datagram socket (a syslog daemon's /dev/log is)"
                              ) from None
            raise
        return DatagramConnection(sock)

    return connect
