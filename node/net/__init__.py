"""The network seam: one Transport contract, a UDP/TCP driver and an in-memory network.

See ``node.net.transport`` for the contract, ``node.net.udp_tcp`` for the real
driver, ``node.net.memory`` for the simulated network and ``node.net.tls`` for
the wrapper that puts either's streams in TLS.
"""

from typing import TYPE_CHECKING

from node.net.memory import DropReason, MemoryNetwork, MemoryStream, MemoryTransport, NetworkStats
from node.net.transport import (
    MAX_PACKET_BYTES,
    Transport,
    TransportError,
    join_address,
    split_address,
)
from node.net.tls import TlsContexts, TlsSetupError, TlsTransport, load_tls
from node.net.udp_tcp import UdpTcpTransport, open_udp_tcp_transport

__all__ = [
    "MAX_PACKET_BYTES",
    "DropReason",
    "MemoryNetwork",
    "MemoryStream",
    "MemoryTransport",
    "NetworkStats",
    "TlsContexts",
    "TlsSetupError",
    "TlsTransport",
    "Transport",
    "TransportError",
    "UdpTcpTransport",
    "join_address",
    "load_tls",
    "open_udp_tcp_transport",
    "split_address",
]

if TYPE_CHECKING:  # mypy proves here that both drivers satisfy the contract
    _memory: type[Transport] = MemoryTransport
    _udp_tcp: type[Transport] = UdpTcpTransport
    _tls: type[Transport] = TlsTransport
