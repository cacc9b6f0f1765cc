"""One Transport contract, two implementations and a wrapper: UDP/TCP on loopback, the
in-memory network, and UDP/TCP with every stream in TLS (``node.net.tls``).

Every test in the first part runs against all three (the ``net`` fixture), but
for what TLS streams do not do: half-close (``send_eof``; the contract does not
promise it). The last part covers what only the real driver
has (IPv6, binding, the accept queue, OS send errors).
"""

from __future__ import annotations

import errno
import random
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from node.net import (
    MAX_PACKET_BYTES,
    MemoryNetwork,
    Transport,
    TransportError,
    TlsContexts,
    TlsTransport,
    open_udp_tcp_transport,
    split_address,
)
from tests.tls_files import Authority

MiB = 1024 * 1024
CONNECT_TIMEOUT_S = 2.0


class Net:
    """Makes transports of one implementation, within the test's own task."""

    lossless: bool
    #: Streams can half-close (send_eof).
    tcp_like: bool = True

    def open(self, count: int) -> AbstractAsyncContextManager[Sequence[Transport]]:
        raise NotImplementedError

    def reopen(self, address: str) -> AbstractAsyncContextManager[Transport]:
        raise NotImplementedError

    async def dead_address(self) -> str:
        """An address nothing listens at."""
        raise NotImplementedError


class UdpTcpNet(Net):
    lossless = False

    @asynccontextmanager
    async def open(self, count: int) -> AsyncIterator[Sequence[Transport]]:
        async with AsyncExitStack() as stack:
            yield [await stack.enter_async_context(open_udp_tcp_transport("127.0.0.1", 0))
                   for _ in range(count)]

    @asynccontextmanager
    async def reopen(self, address: str) -> AsyncIterator[Transport]:
        host, port = split_address(address)
        async with open_udp_tcp_transport(host, port) as transport:
            yield transport

    async def dead_address(self) -> str:
        async with open_udp_tcp_transport("127.0.0.1", 0) as transport:
            return transport.address


class MemoryNet(Net):
    lossless = True

    def __init__(self) -> None:
        self.network = MemoryNetwork(random.Random(0))
        self._next_port = 20000

    @asynccontextmanager
    async def open(self, count: int) -> AsyncIterator[Sequence[Transport]]:
        transports = [self.network.transport(f"127.0.0.1:{self._next_port + i}")
                      for i in range(count)]
        self._next_port += count
        try:
            yield transports
        finally:
            for transport in transports:
                await transport.aclose()

    @asynccontextmanager
    async def reopen(self, address: str) -> AsyncIterator[Transport]:
        transport = self.network.transport(address)
        try:
            yield transport
        finally:
            await transport.aclose()

    async def dead_address(self) -> str:
        return "127.0.0.1:9"


class TlsNet(UdpTcpNet):
    """UDP/TCP transports with TLS streams, every one with the certificate of one CA."""

    tcp_like = False

    def __init__(self, contexts: TlsContexts) -> None:
        self.contexts = contexts

    @asynccontextmanager
    async def open(self, count: int) -> AsyncIterator[Sequence[Transport]]:
        async with super().open(count) as transports:
            yield [TlsTransport(t, self.contexts) for t in transports]

    @asynccontextmanager
    async def reopen(self, address: str) -> AsyncIterator[Transport]:
        async with super().reopen(address) as transport:
            yield TlsTransport(transport, self.contexts)


@pytest.fixture(scope="module")
def tls_contexts() -> Iterator[TlsContexts]:
    with tempfile.TemporaryDirectory() as directory:
        ca = Authority(Path(directory))
        yield ca.node("loopback", ips=("127.0.0.1",)).contexts()


@pytest.fixture(params=["udp_tcp", "memory", "tls"])
def net(request: pytest.FixtureRequest, tls_contexts: TlsContexts) -> Net:
    if request.param == "tls":
        return TlsNet(tls_contexts)
    return UdpTcpNet() if request.param == "udp_tcp" else MemoryNet()


def needs_tcp_like(net: Net) -> None:
    if not net.tcp_like:
        pytest.skip("TLS streams cannot half-close")


async def connected_pair(client: Transport, server: Transport,
                         ) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    """A connected pair (the accept runs alongside, as a TLS connect needs it)."""
    accepted: list[trio.abc.Stream] = []

    async def accept() -> None:
        accepted.append((await server.accept())[0])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept)
        stream = await client.connect(server.address, timeout_s=CONNECT_TIMEOUT_S)
    return stream, accepted[0]


async def receive_all(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything until EOF."""
    received = bytearray()
    while chunk := await stream.receive_some(256 * 1024):
        received += chunk
    return bytes(received)


async def expect_eof_or_broken(stream: trio.abc.ReceiveStream) -> None:
    """What a closed or reset peer looks like: a clean EOF or BrokenResourceError."""
    with trio.fail_after(5):
        try:
            assert await stream.receive_some(1) == b""
        except trio.BrokenResourceError:
            pass


# ---- packets ----

async def test_packet_round_trip_and_the_sender_address_takes_a_reply(net: Net) -> None:
    async with net.open(2) as (a, b):
        await a.send_packet(b.address, b"ping")
        with trio.fail_after(5):
            sender, data = await b.receive_packet()
        assert (sender, data) == (a.address, b"ping")

        await b.send_packet(sender, b"ack")
        with trio.fail_after(5):
            assert await a.receive_packet() == (b.address, b"ack")

        assert (a.packets_sent, a.bytes_sent, a.packets_received, a.bytes_received) == (1, 4, 1, 3)
        assert (b.packets_sent, b.bytes_sent, b.packets_received, b.bytes_received) == (1, 3, 1, 4)


async def test_a_packet_of_max_size_arrives_and_a_larger_one_is_refused(net: Net) -> None:
    async with net.open(2) as (a, b):
        largest = bytes(range(256)) * (MAX_PACKET_BYTES // 256) + b"x" * (MAX_PACKET_BYTES % 256)
        await a.send_packet(b.address, largest)
        await a.send_packet(b.address, b"")
        with trio.fail_after(5):
            assert await b.receive_packet() == (a.address, largest)
            assert await b.receive_packet() == (a.address, b"")

        with pytest.raises(ValueError, match="MAX_PACKET_BYTES"):
            await a.send_packet(b.address, largest + b"!")
        assert a.packets_sent == 2


@pytest.mark.parametrize("address", ["nohost", "host:", ":80", "host:http", "host:0",
                                     "host:65536", "::1:80", "[::1]"])
async def test_malformed_addresses_are_refused(net: Net, address: str) -> None:
    async with net.open(1) as (a,):
        with pytest.raises(ValueError):
            await a.send_packet(address, b"x")
        with pytest.raises(ValueError):
            await a.connect(address, timeout_s=CONNECT_TIMEOUT_S)


async def test_sending_to_nobody_does_not_raise(net: Net) -> None:
    dead = await net.dead_address()
    async with net.open(2) as (a, b):
        for _ in range(3):
            await a.send_packet(dead, b"anyone?")
            await a.send_packet("[::1]:9", b"anyone?")
        # ... and the transport still works afterwards.
        await a.send_packet(b.address, b"still here")
        with trio.fail_after(5):
            assert await b.receive_packet() == (a.address, b"still here")


async def test_many_packets_arrive(net: Net) -> None:
    count = 1000
    received: list[bytes] = []
    async with net.open(2) as (a, b):

        async def receive() -> None:
            with trio.move_on_after(2):
                while len(received) < count:
                    received.append((await b.receive_packet())[1])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            for i in range(count):
                await a.send_packet(b.address, i.to_bytes(4, "big") * 50)

    expected = [i.to_bytes(4, "big") * 50 for i in range(count)]
    if net.lossless:
        assert received == expected
    else:
        assert len(received) >= 0.9 * count
        assert set(received) <= set(expected)


# ---- streams ----

async def test_stream_echo_of_a_large_payload_with_half_close(net: Net) -> None:
    needs_tcp_like(net)
    payload = random.Random(1).randbytes(MiB)
    async with net.open(2) as (a, b):
        client, server = await connected_pair(a, b)
        # What needs_tcp_like stands for: both drivers' streams can half-close.
        assert isinstance(client, trio.abc.HalfCloseableStream)
        assert isinstance(server, trio.abc.HalfCloseableStream)
        echoed = b""

        async def echo() -> None:
            while chunk := await server.receive_some(64 * 1024):
                await server.send_all(chunk)
            await server.send_eof()

        async def read_echo() -> None:
            nonlocal echoed
            echoed = await receive_all(client)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(echo)
                nursery.start_soon(read_echo)
                await client.send_all(payload)
                await client.send_eof()
        assert echoed == payload
        await client.aclose()
        await server.aclose()


async def test_stream_carries_large_payloads_both_ways_at_once(net: Net) -> None:
    needs_tcp_like(net)
    up = random.Random(2).randbytes(MiB)
    down = random.Random(3).randbytes(MiB)
    async with net.open(2) as (a, b):
        client, server = await connected_pair(a, b)
        got: dict[str, bytes] = {}

        async def send(stream: trio.abc.Stream, data: bytes) -> None:
            assert isinstance(stream, trio.abc.HalfCloseableStream)
            await stream.send_all(data)
            await stream.send_eof()

        async def receive(name: str, stream: trio.abc.Stream) -> None:
            got[name] = await receive_all(stream)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send, client, up)
                nursery.start_soon(send, server, down)
                nursery.start_soon(receive, "at server", server)
                nursery.start_soon(receive, "at client", client)
        assert got == {"at server": up, "at client": down}
        await client.aclose()
        await server.aclose()


async def test_streams_pass_trios_stream_checks(net: Net) -> None:
    """Half-closeable streams pass trio's half-closeable checks, TLS streams its two-way
    stream checks."""
    async with net.open(2) as (a, b):

        async def stream_maker() -> tuple[trio.abc.Stream, trio.abc.Stream]:
            return await connected_pair(a, b)

        with trio.fail_after(10):
            if net.tcp_like:
                await trio.testing.check_half_closeable_stream(
                    stream_maker, None)  # type: ignore[arg-type]
            else:
                await trio.testing.check_two_way_stream(stream_maker, None)


async def test_a_large_payload_crosses_both_ways_with_framing(net: Net) -> None:
    """What the protocols above do instead of half-closing: delimit their own messages."""
    payload = random.Random(4).randbytes(MiB)
    async with net.open(2) as (a, b):
        client, server = await connected_pair(a, b)

        async def receive_exactly(stream: trio.abc.Stream, size: int) -> bytes:
            data = bytearray()
            while len(data) < size:
                chunk = await stream.receive_some(size - len(data))
                assert chunk, "EOF before the whole payload"
                data += chunk
            return bytes(data)

        async def echo() -> None:
            size = int.from_bytes(await receive_exactly(server, 4), "big")
            await server.send_all(size.to_bytes(4, "big") + await receive_exactly(server, size))

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(echo)
                await client.send_all(len(payload).to_bytes(4, "big") + payload)
                size = int.from_bytes(await receive_exactly(client, 4), "big")
                assert await receive_exactly(client, size) == payload
        await client.aclose()
        await server.aclose()


async def test_accept_reports_the_connecting_host_and_a_connection_port(net: Net) -> None:
    async with net.open(2) as (a, b):
        peers: list[str] = []

        async def accept() -> None:
            stream, peer = await b.accept()
            peers.append(peer)
            accepted.append(stream)

        accepted: list[trio.abc.Stream] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept)
            client = await a.connect(b.address, timeout_s=CONNECT_TIMEOUT_S)
        server, peer = accepted[0], peers[0]
        host, _ = split_address(peer)
        assert host == split_address(a.address)[0]
        assert peer != a.address  # an ephemeral port, not the peer's transport
        await client.aclose()
        await server.aclose()


async def test_connect_to_a_dead_address_fails_within_the_timeout(net: Net) -> None:
    dead = await net.dead_address()
    async with net.open(1) as (a,):
        with trio.fail_after(CONNECT_TIMEOUT_S + 1), pytest.raises(TransportError):
            await a.connect(dead, timeout_s=CONNECT_TIMEOUT_S)


# ---- closing ----

async def test_aclose_wakes_blocked_calls_with_closed_resource_error(net: Net) -> None:
    async with net.open(1) as (a,):
        outcomes: list[str] = []

        async def expect_closed(call: str) -> None:
            try:
                await (a.receive_packet() if call == "receive_packet" else a.accept())
            except trio.ClosedResourceError:
                outcomes.append(call)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(expect_closed, "receive_packet")
                nursery.start_soon(expect_closed, "accept")
                await trio.testing.wait_all_tasks_blocked()
                await a.aclose()
        assert sorted(outcomes) == ["accept", "receive_packet"]


async def test_aclose_releases_everything(net: Net) -> None:
    async with net.open(2) as (a, b):
        address = b.address
        pending = await a.connect(address, timeout_s=CONNECT_TIMEOUT_S)  # never accepted
        await b.aclose()
        await b.aclose()  # idempotent
        calls: list[Callable[[], Awaitable[object]]] = [
            b.receive_packet, b.accept, lambda: b.send_packet(a.address, b"x"),
            lambda: b.connect(a.address, timeout_s=CONNECT_TIMEOUT_S)]
        for call in calls:
            with pytest.raises(trio.ClosedResourceError):
                await call()
        with pytest.raises(TransportError):
            await a.connect(address, timeout_s=CONNECT_TIMEOUT_S)
        # The connection queued for accept() was closed with the transport.
        await expect_eof_or_broken(pending)
        await pending.aclose()

        async with net.reopen(address) as again:
            assert again.address == address
            await a.send_packet(address, b"welcome back")
            with trio.fail_after(5):
                assert await again.receive_packet() == (a.address, b"welcome back")
            client, server = await connected_pair(a, again)
            await client.aclose()
            await server.aclose()


# ---- the real driver only ----

def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback here")
async def test_udp_tcp_over_ipv6() -> None:
    async with open_udp_tcp_transport("::1", 0) as a, open_udp_tcp_transport("::1", 0) as b:
        assert a.address.startswith("[::1]:")
        await a.send_packet(b.address, b"ping6")
        with trio.fail_after(5):
            sender, data = await b.receive_packet()
        assert (sender, data) == (a.address, b"ping6")
        client, server = await connected_pair(b, a)
        assert isinstance(client, trio.abc.HalfCloseableStream)  # a TCP stream
        await client.send_all(b"over tcp")
        await client.send_eof()
        assert await receive_all(server) == b"over tcp"
        await client.aclose()
        await server.aclose()


async def test_udp_tcp_binds_both_protocols_on_one_port() -> None:
    async with open_udp_tcp_transport("127.0.0.1", 0) as transport:
        host, port = split_address(transport.address)
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(socket.AF_INET, kind) as other, \
                    pytest.raises(OSError) as taken:
                other.bind((host, port))
            assert taken.value.errno == errno.EADDRINUSE
        with pytest.raises(TransportError, match="cannot bind"):
            async with open_udp_tcp_transport(host, port):
                pass


async def test_udp_tcp_wants_an_ip_literal() -> None:
    with pytest.raises(ValueError):
        async with open_udp_tcp_transport("localhost", 0):
            pass


async def test_udp_tcp_counts_send_errors_instead_of_raising() -> None:
    async with open_udp_tcp_transport("127.0.0.1", 0) as a:
        await a.send_packet("[::1]:9", b"wrong family")  # an IPv4 socket cannot send there
        assert (a.send_errors, a.packets_sent) == (1, 0)


async def test_udp_tcp_closes_connections_beyond_the_accept_queue() -> None:
    async with open_udp_tcp_transport("127.0.0.1", 0, max_pending_streams=1) as server, \
            open_udp_tcp_transport("127.0.0.1", 0) as client:
        streams = [await client.connect(server.address, timeout_s=CONNECT_TIMEOUT_S)
                   for _ in range(3)]
        with trio.fail_after(5):
            while server.streams_dropped < 2:
                await trio.sleep(0.01)
            accepted, _ = await server.accept()
            await streams[0].send_all(b"first")
            assert await accepted.receive_some(5) == b"first"
            for dropped in streams[1:]:
                await expect_eof_or_broken(dropped)
        for stream in [accepted, *streams]:
            await stream.aclose()
