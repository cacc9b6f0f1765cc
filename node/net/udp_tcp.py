"""The real Transport: UDP datagrams and TCP streams on one host and port.

Usage::

    async with open_udp_tcp_transport("10.0.0.5", 7946) as transport:
        await transport.send_packet("10.0.0.6:7946", b"ping")

The context manager owns a nursery with one task, the accept loop, which takes
inbound TCP connections off the listener as they arrive and queues them (at
most ``max_pending_streams``; extra connections are closed and counted in
``streams_dropped``) until ``accept()`` picks them up. Leaving the block
closes the transport; ``aclose()`` may also be called earlier.

This is the only module that touches ``trio.socket`` (see pyproject.toml).
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.socket

from node.net.transport import TransportError, check_packet, join_address, split_address

#: Largest datagram ``receive_packet`` takes in (the UDP maximum); senders of
#: this module never send more than ``MAX_PACKET_BYTES``.
MAX_DATAGRAM_BYTES = 65535
#: Inbound connections queued for ``accept()`` before extra ones are closed.
DEFAULT_PENDING_STREAMS = 64
LISTEN_BACKLOG = 128
#: With port 0, how often to pick a new UDP port when TCP cannot bind it.
BIND_ATTEMPTS = 10
#: Pause after accept() fails for lack of resources (EMFILE, ENOBUFS) before trying again.
ACCEPT_ERROR_PAUSE_S = 0.1

#: ICMP errors some platforms report on a later recvfrom of an unconnected
#: UDP socket; they concern an earlier send, not this receive.
_TRANSIENT_RECEIVE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET,
                                       errno.ENETUNREACH, errno.EHOSTUNREACH})


@asynccontextmanager
async def open_udp_tcp_transport(
    host: str, port: int, *, max_pending_streams: int = DEFAULT_PENDING_STREAMS,
) -> AsyncIterator[UdpTcpTransport]:
    """Bind UDP and TCP on ``host:port`` and run the transport for the block.

    Args:
      host: an IPv4 or IPv6 literal (no name resolution). Bind a concrete
        address: with a wildcard (``0.0.0.0``, ``::``) ``address`` reports
        the wildcard, which peers cannot use.
      port: the port for both protocols; 0 picks a free one (UDP binds first,
        then TCP takes the same number, retrying with a new port if it is taken).

    Raises:
      ValueError: ``host`` is not an IP literal.
      TransportError: the port cannot be bound.
    """
    udp, tcp = await _bind_pair(host, port)
    transport = UdpTcpTransport(udp, tcp, host, max_pending_streams=max_pending_streams)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport._accept_loop)
        try:
            yield transport
        finally:
            transport._close_now()  # ends the accept loop, so the nursery can exit


class UdpTcpTransport:
    """One UDP socket and one TCP listener; made by ``open_udp_tcp_transport``.

    Counters beyond the Transport ones: ``send_errors`` (datagrams the OS
    refused to send: no route, unreachable, wrong address family),
    ``receive_errors`` (ICMP errors reported on receive), ``streams_dropped``
    (inbound connections closed because the accept queue was full) and
    ``accept_errors`` (accept failures for lack of resources).
    """

    def __init__(self, udp: trio.socket.SocketType, tcp: trio.socket.SocketType, host: str,
                 *, max_pending_streams: int) -> None:
        self._udp = udp
        self._listener = trio.SocketListener(tcp)
        self._address = join_address(host, udp.getsockname()[1])
        self._pending_send, self._pending_receive = trio.open_memory_channel[
            tuple[trio.SocketStream, str]](max_pending_streams)
        self._closed = False
        self._accept_scope = trio.CancelScope()
        self.packets_sent = 0
        self.packets_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.send_errors = 0
        self.receive_errors = 0
        self.streams_dropped = 0
        self.accept_errors = 0

    @property
    def address(self) -> str:
        return self._address

    async def send_packet(self, to: str, data: bytes) -> None:
        host, port = check_packet(to, data)
        self._check_open()
        try:
            await self._udp.sendto(data, (host, port))
        except OSError:  # unreachable, no route, refused, wrong family, unresolvable name
            if self._closed:
                raise trio.ClosedResourceError from None
            self.send_errors += 1
            return
        self.packets_sent += 1
        self.bytes_sent += len(data)

    async def receive_packet(self) -> tuple[str, bytes]:
        while True:
            self._check_open()
            try:
                data, sender = await self._udp.recvfrom(MAX_DATAGRAM_BYTES)
            except OSError as exc:
                if self._closed:
                    raise trio.ClosedResourceError from None
                if exc.errno not in _TRANSIENT_RECEIVE_ERRNOS:
                    raise
                self.receive_errors += 1
                continue
            self.packets_received += 1
            self.bytes_received += len(data)
            return _format_sockaddr(sender), data

    async def connect(self, to: str, *, timeout_s: float) -> trio.SocketStream:
        """Open a TCP connection (``TCP_NODELAY`` set, as trio does for every SocketStream)."""
        host, port = split_address(to)
        self._check_open()
        with trio.move_on_after(timeout_s):
            try:
                return await trio.open_tcp_stream(host, port)
            except OSError as exc:
                raise TransportError(f"cannot connect to {to}: {exc}") from exc
        raise TransportError(f"cannot connect to {to}: timed out after {timeout_s} s")

    async def accept(self) -> tuple[trio.SocketStream, str]:
        self._check_open()
        try:
            return await self._pending_receive.receive()
        except trio.EndOfChannel:
            raise trio.ClosedResourceError from None

    async def aclose(self) -> None:
        """Close both sockets and every queued, not yet accepted, connection."""
        self._close_now()
        await trio.lowlevel.checkpoint()

    def _close_now(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._accept_scope.cancel()
        self._udp.close()
        self._listener.socket.close()
        while True:
            try:
                stream, _ = self._pending_receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            stream.socket.close()
        self._pending_receive.close()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("transport closed")

    async def _accept_loop(self) -> None:
        with self._accept_scope:
            await self._accept_forever()

    async def _accept_forever(self) -> None:
        while True:
            try:
                stream = await self._listener.accept()
            except trio.ClosedResourceError:
                return
            except OSError:  # EMFILE, ENFILE, ENOBUFS, ENOMEM: wait for resources
                self.accept_errors += 1
                await trio.sleep(ACCEPT_ERROR_PAUSE_S)
                continue
            try:
                peer = _format_sockaddr(stream.socket.getpeername())
                self._pending_send.send_nowait((stream, peer))
            except (OSError, trio.WouldBlock, trio.BrokenResourceError):
                # Peer already gone, queue full, or transport closing.
                self.streams_dropped += 1
                stream.socket.close()


async def _bind_pair(host: str, port: int) -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    family = trio.socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else \
        trio.socket.AF_INET
    attempts = BIND_ATTEMPTS if port == 0 else 1
    for attempt in range(attempts):
        udp = trio.socket.socket(family, trio.socket.SOCK_DGRAM)
        tcp = trio.socket.socket(family, trio.socket.SOCK_STREAM)
        try:
            await udp.bind((host, port))
            bound_port = udp.getsockname()[1]
            # Rebind right after a close even with connections in TIME_WAIT
            # (never two listeners: Linux refuses a port someone listens on).
            tcp.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
            await tcp.bind((host, bound_port))
            tcp.listen(LISTEN_BACKLOG)
        except OSError as exc:
            udp.close()
            tcp.close()
            if exc.errno == errno.EADDRINUSE and attempt + 1 < attempts:
                continue
            raise TransportError(f"cannot bind {join_address(host, port)}: {exc}") from exc
        except BaseException:
            udp.close()
            tcp.close()
            raise
        return udp, tcp
    raise AssertionError("unreachable: the last attempt returns or raises")


def _format_sockaddr(sockaddr: Any) -> str:
    """(host, port) or IPv6 (host, port, flowinfo, scope_id) -> ``"host:port"``."""
    return join_address(sockaddr[0], sockaddr[1])


async def resolve_host(host: str) -> str:
    """An IP literal for ``host`` (the first address the resolver gives).

    Gossip sends to and compares addresses as IP literals; names from the
    command line (``localhost``) are resolved once, at start-up.

    Raises:
      TransportError: the name does not resolve.
    """
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = await trio.socket.getaddrinfo(host, None, type=trio.socket.SOCK_DGRAM)
    except OSError as exc:
        raise TransportError(f"cannot resolve {host!r}: {exc}") from exc
    return str(infos[0][4][0])


async def resolve_address(address: str) -> str:
    """``"name:port"`` -> ``"ip:port"`` (see ``resolve_host``).

    Raises:
      TransportError: the name does not resolve.
      ValueError: ``address`` is not ``host:port``.
    """
    host, port = split_address(address)
    return join_address(await resolve_host(host), port)
