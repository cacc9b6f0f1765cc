"""TlsTransport: mutual authentication against the cluster CA, on the in-memory network.

Certificates come from the tooling's own functions (tools.certs). Everything
runs under MockClock: handshakes are CPU work, never a wait. A refused
handshake breaks the stream on its first use (``trio.BrokenResourceError``,
the cause saying why), as a connection reset would.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio
import trio.testing

from node.net.memory import MemoryNetwork
from node.net.router import StreamRouter
from node.net.tls import TlsSetupError, TlsTransport, load_tls
from node.rpc.peers import PeerNet
from tests.tls_files import Authority, NodeFiles

A, B, C = "10.0.0.1:7946", "10.0.0.2:7946", "10.0.0.3:7946"


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "cluster")


@pytest.fixture
def other_ca(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "other", "another CA")


def host(address: str) -> tuple[str, ...]:
    return (address.rsplit(":", 1)[0],)


async def refused(stream: trio.abc.Stream) -> bool:
    """Whether the peer refused: its handshake failed, and it closed (as the stream router
    does), so this end reads EOF or a broken stream, never data."""
    with trio.fail_after(5):
        try:
            return await stream.receive_some(10) == b""
        except trio.BrokenResourceError:
            return True


async def first_use_fails(stream: trio.abc.Stream) -> str:
    """The stream is refused on its first use; the reason."""
    with trio.fail_after(5), pytest.raises(trio.BrokenResourceError) as info:
        await stream.send_all(b"BRPC")
        await stream.receive_some(10)
    await trio.aclose_forcefully(stream)
    return str(info.value.__cause__)


async def expect_handshake_failure(transport: TlsTransport) -> None:
    """Accept one stream, see its handshake fail, close it as the stream router does."""
    stream, _ = await transport.accept()
    with pytest.raises(trio.BrokenResourceError):
        await stream.receive_some(10)
    await trio.aclose_forcefully(stream)


async def exchange(client: TlsTransport, server: TlsTransport) -> bytes:
    """Connect, send a line, read the server's echo of it in upper case."""
    async with trio.open_nursery() as nursery:
        async def echo() -> None:
            stream, _ = await server.accept()
            data = await stream.receive_some(100)
            await stream.send_all(data.upper())
            await stream.aclose()
        nursery.start_soon(echo)
        stream = await client.connect(server.address, timeout_s=2)
        await stream.send_all(b"hello")
        answer = await stream.receive_some(100)
        await stream.aclose()
        return bytes(answer)


async def test_nodes_with_certificates_of_the_cluster_ca_talk(
        autojump_clock: trio.testing.MockClock, ca: Authority) -> None:
    net = MemoryNetwork(random.Random(1))
    a = TlsTransport(net.transport(A), ca.node("a", ips=host(A)).contexts())
    b = TlsTransport(net.transport(B), ca.node("b", ips=host(B)).contexts())
    assert await exchange(a, b) == b"HELLO"
    assert await exchange(b, a) == b"HELLO"
    # Datagrams pass through untouched (gossip authenticates them itself).
    await a.send_packet(B, b"ping")
    assert await b.receive_packet() == (A, b"ping")
    assert (a.packets_sent, b.packets_received) == (1, 1)
    assert (a.handshakes_failed_in, a.handshakes_failed_out, b.handshakes_failed_in) == (0, 0, 0)


async def test_a_server_whose_certificate_another_ca_signed_is_refused(
        autojump_clock: trio.testing.MockClock, ca: Authority, other_ca: Authority) -> None:
    net = MemoryNetwork(random.Random(1))
    client = TlsTransport(net.transport(A), ca.node("a", ips=host(A)).contexts())
    impostor = TlsTransport(net.transport(B), other_ca.node("b", ips=host(B),
                                                            trust=ca.ca_file).unchecked_contexts())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(expect_handshake_failure, impostor)
        why = await first_use_fails(await client.connect(B, timeout_s=2))
    assert "unable to get local issuer certificate" in why
    assert client.handshakes_failed_out == 1 and impostor.handshakes_failed_in == 1


async def test_a_client_whose_certificate_another_ca_signed_is_refused(
        autojump_clock: trio.testing.MockClock, ca: Authority, other_ca: Authority) -> None:
    """TLS 1.3: the client finishes its side first, so it learns of the refusal on its
    first read; the server never hands out a byte."""
    net = MemoryNetwork(random.Random(1))
    server = TlsTransport(net.transport(B), ca.node("b", ips=host(B)).contexts())
    intruder = TlsTransport(net.transport(A), other_ca.node("a", ips=host(A),
                                                            trust=ca.ca_file).unchecked_contexts())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(expect_handshake_failure, server)
        stream = await intruder.connect(B, timeout_s=2)
        try:
            await stream.send_all(b"BRPC")
            assert await refused(stream)
        except trio.BrokenResourceError:
            pass  # refused before it could even send: just as good
    assert server.handshakes_failed_in == 1


async def test_a_certificate_for_another_address_is_refused(
        autojump_clock: trio.testing.MockClock, ca: Authority) -> None:
    net = MemoryNetwork(random.Random(1))
    client = TlsTransport(net.transport(A), ca.node("a", ips=host(A)).contexts())
    elsewhere = TlsTransport(net.transport(B), ca.node("b", ips=host(C)).contexts())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(expect_handshake_failure, elsewhere)
        why = await first_use_fails(await client.connect(B, timeout_s=2))
    assert "mismatch" in why


async def test_plain_streams_and_tls_do_not_mix(
        autojump_clock: trio.testing.MockClock, ca: Authority) -> None:
    net = MemoryNetwork(random.Random(1))
    tls_node = TlsTransport(net.transport(A), ca.node("a", ips=host(A)).contexts())
    plain = net.transport(B)
    async with trio.open_nursery() as nursery:
        async def serve_plain() -> None:
            stream, _ = await plain.accept()
            await stream.receive_some(1000)  # a ClientHello it cannot read
            await stream.send_all(b"\x00\x00\x00\x05hello")
            await stream.aclose()
        nursery.start_soon(serve_plain)
        await first_use_fails(await tls_node.connect(B, timeout_s=2))

        nursery.start_soon(expect_handshake_failure, tls_node)
        stream = await plain.connect(A, timeout_s=2)
        await stream.send_all(b"BRPC\x01 a plain RPC channel")
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(1000):
                data += chunk
        assert not data.startswith(b"\x00") and b"BRPC" not in data  # no RPC, no gossip
        await stream.aclose()
    assert tls_node.handshakes_failed_in == 1 and tls_node.handshakes_failed_out == 1


async def test_rpc_and_routing_run_unchanged_over_tls(
        autojump_clock: trio.testing.MockClock, ca: Authority, other_ca: Authority) -> None:
    """PeerNet and the stream router on TLS transports; a node whose certificate another
    CA signed gets no call through, even with the cluster key."""
    net = MemoryNetwork(random.Random(2))
    address = {"a": A, "b": B, "x": C}
    files = {"a": ca.node("a", ips=host(A)), "b": ca.node("b", ips=host(B)),
             "x": other_ca.node("x", ips=host(C), trust=ca.ca_file)}
    key = b"k" * 20

    async def echo(peer: str, body: bytes) -> bytes:
        return peer.encode() + b":" + body

    async with trio.open_nursery() as nursery:
        nets: dict[str, PeerNet] = {}
        transports: dict[str, TlsTransport] = {}
        for name in address:
            transport = transports[name] = TlsTransport(net.transport(address[name]),
                                                        files[name].unchecked_contexts())
            peers = nets[name] = PeerNet(name, transport, key, address.get)
            peers.on_call("echo", echo)
            await nursery.start(peers.run)
            await nursery.start(StreamRouter(transport).run, peers.serve)
        for i in range(3):
            assert await nets["a"].call("b", "echo", b"%d" % i, timeout_s=1) == b"a:%d" % i
            assert await nets["b"].call("a", "echo", b"%d" % i, timeout_s=1) == b"b:%d" % i
        for caller, callee in (("x", "a"), ("a", "x")):
            with pytest.raises(Exception):  # CallNotSent, CallFailed: never an answer
                await nets[caller].call(callee, "echo", b"let me in", timeout_s=1)
        assert transports["a"].handshakes_failed_in >= 1
        assert transports["a"].handshakes_failed_out >= 1
        nursery.cancel_scope.cancel()


def test_load_tls_names_the_setting_to_fix(tmp_path: Path, ca: Authority,
                                           other_ca: Authority) -> None:
    good = ca.node("a")
    load_tls(good.cert, good.key, good.ca, own_host="127.0.0.1")
    foreign = other_ca.node("b")
    cases: list[tuple[NodeFiles, str | None, str, str]] = [
        (NodeFiles(tmp_path / "missing.crt", good.key, good.ca), None, "tls_cert", "no such"),
        (NodeFiles(good.cert, tmp_path / "missing.key", good.ca), None, "tls_key", "no such"),
        (NodeFiles(good.cert, good.key, tmp_path / "missing.pem"), None, "tls_ca", "no such"),
        (NodeFiles(good.cert, foreign.key, good.ca), None, "tls_cert", "cannot load"),
        (NodeFiles(good.cert, good.key, good.key), None, "tls_ca", "cannot load the CA"),
        (NodeFiles(foreign.cert, foreign.key, good.ca), None, "tls_cert",
         "does not verify against tls_ca"),
        (good, "10.9.9.9", "tls_cert", "does not name its gossip address 10.9.9.9"),
    ]
    for files, own_host, setting, message in cases:
        with pytest.raises(TlsSetupError, match=message) as info:
            load_tls(files.cert, files.key, files.ca, own_host=own_host)
        assert info.value.setting == setting
    # A host name or a wildcard is not checked (peers dial the resolved IP).
    load_tls(good.cert, good.key, good.ca, own_host="localhost")
    load_tls(good.cert, good.key, good.ca, own_host="0.0.0.0")
