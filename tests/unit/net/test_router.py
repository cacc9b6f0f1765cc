"""The stream router: RPC channels and gossip push-pulls share one port."""

from __future__ import annotations

import random

import trio
import trio.testing

from node.net.memory import MemoryNetwork
from node.net.router import PEEK_TIMEOUT_S, StreamRouter


async def test_streams_are_told_apart_by_their_first_bytes(
        autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(random.Random(1))
    server = net.transport("10.0.0.1:7946")
    client = net.transport("10.0.0.2:7946")
    router = StreamRouter(server)
    rpc_seen: list[bytes] = []

    async def rpc(stream: trio.abc.Stream, head: bytes) -> None:
        rpc_seen.append(head + await stream.receive_some(100))
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        await nursery.start(router.run, rpc)
        gossip_stream = await client.connect(server.address, timeout_s=1)
        await gossip_stream.send_all(b"\x00\x00\x00\x05hello")
        rpc_stream = await client.connect(server.address, timeout_s=1)
        await rpc_stream.send_all(b"BRPC\x01rest")
        accepted, _ = await router.gossip.accept()
        data = b""
        while len(data) < 9:
            data += await accepted.receive_some(100)
        assert data == b"\x00\x00\x00\x05hello"
        await trio.sleep(1)
        assert rpc_seen == [b"BRPC\x01rest"]
        assert router.gossip.address == server.address
        silent = await client.connect(server.address, timeout_s=1)
        await trio.sleep(PEEK_TIMEOUT_S + 1)
        assert router.dropped == 1
        assert await silent.receive_some(10) == b""
        nursery.cancel_scope.cancel()


async def test_streams_gossip_never_took_are_closed_when_the_router_stops(
        autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(random.Random(1))
    server = net.transport("10.0.0.1:7946")
    client = net.transport("10.0.0.2:7946")
    router = StreamRouter(server)

    async def rpc(stream: trio.abc.Stream, head: bytes) -> None:
        await stream.aclose()

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(router.run, rpc)
            stream = await client.connect(server.address, timeout_s=1)
            await stream.send_all(b"\x00\x00\x00\x05hello")
            await trio.sleep(1)  # routed to gossip, which never accepts it
            scope.cancel()
    with trio.fail_after(5):
        try:
            assert await stream.receive_some(10) == b""
        except trio.BrokenResourceError:
            pass  # closed from the other side: what this test wants either way
