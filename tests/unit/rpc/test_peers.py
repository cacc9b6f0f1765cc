"""PeerNet: one-way messages and calls between nodes, over the router and channels."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from node.net.memory import MemoryNetwork
from node.net.router import StreamRouter
from node.rpc.peers import CallFailed, CallNotSent, CallRefused, PeerNet, Refused

ADDRESS = {"a": "10.0.0.1:7946", "b": "10.0.0.2:7946"}


async def test_messages_calls_errors_and_an_unreachable_peer(
        autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(random.Random(3))
    got: list[tuple[str, bytes]] = []

    async def echo(peer: str, body: bytes) -> bytes:
        return peer.encode() + b":" + body

    async def broken(peer: str, body: bytes) -> bytes:
        raise ValueError("no such thing")

    async def refuses(peer: str, body: bytes) -> bytes:
        raise Refused("not today")

    async with trio.open_nursery() as nursery:
        nets = {}
        for name, key in (("a", b"k" * 20), ("b", b"k" * 20)):
            transport = net.transport(ADDRESS[name])
            peers = nets[name] = PeerNet(name, transport, key, ADDRESS.get)
            await nursery.start(peers.run)
            await nursery.start(StreamRouter(transport).run, peers.serve)
        nets["b"].on_message("t", lambda peer, body: got.append((peer, body)))
        nets["b"].on_call("echo", echo)
        nets["b"].on_call("broken", broken)
        nets["b"].on_call("refuses", refuses)
        for i in range(10):
            assert nets["a"].send("b", "t", b"m%d" % i)
        assert await nets["a"].call("b", "echo", b"hi", timeout_s=1) == b"a:hi"
        assert got == [("a", b"m%d" % i) for i in range(10)]
        # A handler's error leaves the outcome unknown; a refusal says nothing was done.
        with pytest.raises(CallFailed, match="no such thing") as failed:
            await nets["a"].call("b", "broken", b"", timeout_s=1)
        assert not isinstance(failed.value, (CallRefused, CallNotSent))
        with pytest.raises(CallRefused, match="not today"):
            await nets["a"].call("b", "refuses", b"", timeout_s=1)
        with pytest.raises(CallRefused, match="no handler"):
            await nets["a"].call("b", "nobody-serves-this", b"", timeout_s=1)
        with pytest.raises(CallNotSent, match="no address"):
            await nets["a"].call("zz", "echo", b"", timeout_s=1)
        net.detach(ADDRESS["b"])
        with pytest.raises(CallFailed):
            await nets["a"].call("b", "echo", b"", timeout_s=1)
        nursery.cancel_scope.cancel()


async def test_a_peer_with_another_key_gets_nothing_through(
        autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(random.Random(3))
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:
        ta, tb = net.transport(ADDRESS["a"]), net.transport(ADDRESS["b"])
        a = PeerNet("a", ta, b"wrong-key-0123456789", ADDRESS.get)
        b = PeerNet("b", tb, b"right-key-0123456789", ADDRESS.get)
        for peers, transport in ((a, ta), (b, tb)):
            await nursery.start(peers.run)
            await nursery.start(StreamRouter(transport).run, peers.serve)
        b.on_message("t", lambda peer, body: got.append(body))
        a.send("b", "t", b"sneaky")
        await trio.sleep(5)
        assert got == [] and b.counters["rejected"] >= 1
        nursery.cancel_scope.cancel()


async def test_calls_fail_as_soon_as_their_connection_breaks_not_at_their_deadline(
        autojump_clock: trio.testing.MockClock) -> None:
    """A peer that crashes with calls in flight: the callers learn at once (outcome
    unknown), and a call that cannot even be sent is CallNotSent, also at once."""
    net = MemoryNetwork(random.Random(3))
    started = trio.Event()

    async def hangs(peer: str, body: bytes) -> bytes:
        started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with trio.open_nursery() as nursery:
        nets = {}
        for name in ("a", "b"):
            transport = net.transport(ADDRESS[name])
            nets[name] = PeerNet(name, transport, b"k" * 20, ADDRESS.get)
            await nursery.start(nets[name].run)
            await nursery.start(StreamRouter(transport).run, nets[name].serve)
        nets["b"].on_call("hangs", hangs)
        outcome: list[BaseException] = []

        async def caller() -> None:
            try:
                await nets["a"].call("b", "hangs", b"", timeout_s=60)
            except CallFailed as exc:
                outcome.append(exc)

        nursery.start_soon(caller)
        await started.wait()
        before = trio.current_time()
        net.detach(ADDRESS["b"])
        with trio.fail_after(5):
            while not outcome:
                await trio.sleep(0.01)
        assert trio.current_time() - before < 1.0
        assert type(outcome[0]) is CallFailed and "lost" in str(outcome[0])
        before = trio.current_time()
        with pytest.raises(CallNotSent):
            await nets["a"].call("b", "hangs", b"", timeout_s=60)
        assert trio.current_time() - before < 5.0  # one connect attempt, not the deadline
        nursery.cancel_scope.cancel()


async def test_calls_cross_a_key_rotation_both_ways(
        autojump_clock: trio.testing.MockClock) -> None:
    """One node signs with the new key, the other still with the old one; each accepts the
    other's: calls go both ways. A node with neither key is refused."""
    old, new = b"o" * 20, b"n" * 20
    net = MemoryNetwork(random.Random(4))
    address = {**ADDRESS, "c": "10.0.0.3:7946"}
    keys = {"a": (old, (new,)), "b": (new, (old,)), "c": (b"x" * 20, ())}

    async def echo(peer: str, body: bytes) -> bytes:
        return peer.encode() + b":" + body

    async with trio.open_nursery() as nursery:
        nets = {}
        for name, (key, accepted) in keys.items():
            transport = net.transport(address[name])
            peers = nets[name] = PeerNet(name, transport, key, address.get,
                                         accepted_keys=accepted)
            peers.on_call("echo", echo)
            await nursery.start(peers.run)
            await nursery.start(StreamRouter(transport).run, peers.serve)
        assert await nets["a"].call("b", "echo", b"1", timeout_s=1) == b"a:1"
        assert await nets["b"].call("a", "echo", b"2", timeout_s=1) == b"b:2"
        with pytest.raises(CallFailed):
            await nets["c"].call("a", "echo", b"3", timeout_s=1)
        await trio.testing.wait_all_tasks_blocked()
        assert nets["a"].counters["rejected"] >= 1
        nursery.cancel_scope.cancel()
