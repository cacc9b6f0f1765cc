"""The Transport contract: "the packet interface is best-effort, the stream interface is reliable".

Two implementations and one wrapper share it and one conformance suite
(``tests/conformance/test_transport.py``):

- ``node.net.udp_tcp``: UDP datagrams and TCP streams on one host and port;
- ``node.net.memory``: an in-memory network of many endpoints in one process,
  with seeded loss, duplication, delay, partitions and a per-packet route hook;
- ``node.net.tls``: any of them with every stream in mutually authenticated TLS.

Streams are ``trio.abc.Stream``: the two drivers' streams can also half-close
(``send_eof``), but TLS streams cannot, so nothing above this layer may rely on
it; every protocol on a stream delimits its own messages.

Addresses are strings ``"host:port"``; an IPv6 host is written in brackets,
``"[::1]:7946"``. ``split_address`` and ``join_address`` are the one place
that format is parsed and written.
"""

from __future__ import annotations

from typing import Protocol

import trio

#: Largest datagram ``send_packet`` accepts: fits one Ethernet frame with
#: room for IP/UDP headers, so packets are never fragmented.
MAX_PACKET_BYTES = 1400


class TransportError(Exception):
    """A stream could not be set up: refused, unreachable, timed out, cannot bind."""


class Transport(Protocol):
    """One endpoint: best-effort datagrams plus reliable byte streams.

    Counters (monotonic, for metrics): ``packets_sent``/``bytes_sent`` count
    datagrams handed to the network (a packet lost later still counts);
    ``packets_received``/``bytes_received`` count datagrams returned by
    ``receive_packet``. Stream bytes are not counted here.

    Resource handling: after ``aclose`` every method raises
    ``trio.ClosedResourceError``, including calls blocked in
    ``receive_packet`` or ``accept`` at the time; streams already handed out
    are the caller's to close.
    """

    @property
    def packets_sent(self) -> int: ...

    @property
    def packets_received(self) -> int: ...

    @property
    def bytes_sent(self) -> int: ...

    @property
    def bytes_received(self) -> int: ...

    @property
    def address(self) -> str:
        """``"host:port"`` peers reach us at (the bound port when port 0 was asked)."""
        ...

    async def send_packet(self, to: str, data: bytes) -> None:
        """Send one datagram, best effort.

        Never raises for network trouble (unreachable, refused, no route, lost):
        such a packet is silently dropped. Does not wait for delivery.

        Raises:
          ValueError: ``len(data) > MAX_PACKET_BYTES`` or ``to`` is not ``host:port``.
        """
        ...

    async def receive_packet(self) -> tuple[str, bytes]:
        """Wait for the next datagram; return ``(sender address, data)``.

        The sender address is one ``send_packet`` can reply to.
        """
        ...

    async def connect(self, to: str, *, timeout_s: float) -> trio.abc.Stream:
        """Open a reliable byte stream to the transport listening at ``to``.

        Raises:
          TransportError: refused, unreachable, or not connected within ``timeout_s``.
          ValueError: ``to`` is not ``host:port``.
        """
        ...

    async def accept(self) -> tuple[trio.abc.Stream, str]:
        """Wait for the next inbound stream; return it with the peer's address.

        The peer address identifies the connection (for TCP it has the peer's
        ephemeral port); it is not the peer transport's ``address`` and cannot
        be connected to. Peers that must be called back say who they are in
        the protocol.
        """
        ...

    async def aclose(self) -> None:
        """Stop listening and release the address; idempotent."""
        ...


def split_address(address: str) -> tuple[str, int]:
    """``"10.0.0.1:7946"`` -> ``("10.0.0.1", 7946)``; ``"[::1]:7946"`` -> ``("::1", 7946)``.

    Raises:
      ValueError: not ``host:port`` with a non-empty host and a port in 1..65535.
    """
    host, sep, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 host must be in brackets: {address!r}")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"not a host:port address: {address!r}")
    return host, int(port_text)


def join_address(host: str, port: int) -> str:
    """The inverse of ``split_address``: brackets around IPv6 hosts."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_packet(to: str, data: bytes) -> tuple[str, int]:
    """Validate a ``send_packet`` call; return the destination as ``(host, port)``."""
    if len(data) > MAX_PACKET_BYTES:
        raise ValueError(f"packet of {len(data)} bytes exceeds MAX_PACKET_BYTES "
                         f"({MAX_PACKET_BYTES})")
    return split_address(to)
