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
KEY = b"k" * 20


async def _started(net: MemoryNetwork, nursery: trio.Nursery, *,
                   keys: dict[str, tuple[bytes, tuple[bytes, ...]]] | None = None,
                   address: dict[str, str] = ADDRESS,
                   version_of: dict[str, int] | None = None) -> dict[str, PeerNet]:
    """A running PeerNet, serving its router, for each node of ``keys`` (name -> cluster
    key, accepted keys); by default a and b with one key."""
    nets = {}
    for name, (key, accepted) in (keys or {"a": (KEY, ()), "b": (KEY, ())}).items():
        transport = net.transport(address[name])
        nets[name] = PeerNet(name, transport, key, address.get, accepted_keys=accepted,
                             version_of=None if version_of is None else version_of.__getitem__)
        await nursery.start(nets[name].run)
        await nursery.start(StreamRouter(transport).run, nets[name].serve)
    return nets


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
        nets = await _started(net, nursery)
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
        nets = await _started(net, nursery, keys={"a": (b"wrong-key-0123456789", ()),
                                                  "b": (b"right-key-0123456789", ())})
        a, b = nets["a"], nets["b"]
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
        nets = await _started(net, nursery)
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
        nets = await _started(net, nursery, keys=keys, address=address)
        for peers in nets.values():
            peers.on_call("echo", echo)
        assert await nets["a"].call("b", "echo", b"1", timeout_s=1) == b"a:1"
        assert await nets["b"].call("a", "echo", b"2", timeout_s=1) == b"b:2"
        with pytest.raises(CallFailed):
            await nets["c"].call("a", "echo", b"3", timeout_s=1)
        await trio.testing.wait_all_tasks_blocked()
        assert nets["a"].counters["rejected"] >= 1
        nursery.cancel_scope.cancel()


# -- payloads outside the MAC, and channel versions ---------------------------------------

async def test_payloads_go_only_where_they_are_checked(
        autojump_clock: trio.testing.MockClock) -> None:
    """A payload (a chunk) reaches a handler registered to check it; an answer sent as a
    payload reaches only a caller that checks it."""
    net = MemoryNetwork(random.Random(5))
    chunk = bytes(range(256)) * 1024

    async def store(peer: str, body: bytes) -> bytes:
        return b"ok" if bytes(body[:4]) == b"head" and bytes(body[4:]) == chunk else b"bad"

    async def fetch(peer: str, body: bytes) -> bytes:
        return chunk

    async with trio.open_nursery() as nursery:
        nets = await _started(net, nursery)
        nets["b"].on_call("store", store, raw=True, checks_payload=True)
        nets["b"].on_call("fetch", fetch, answers_payload=True)
        assert await nets["a"].call("b", "store", b"head", payload=chunk, timeout_s=5) == b"ok"
        assert await nets["a"].call("b", "fetch", b"", checks_answer=True,
                                    timeout_s=5) == chunk
        with pytest.raises(CallFailed, match="outside the channel's MAC"):
            await nets["a"].call("b", "fetch", b"", timeout_s=5)
        nursery.cancel_scope.cancel()


async def test_a_payload_for_a_handler_that_does_not_check_it_ends_the_channel(
        autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(random.Random(6))
    ran: list[bytes] = []

    async def echo(peer: str, body: bytes) -> bytes:
        ran.append(body)
        return body

    async with trio.open_nursery() as nursery:
        nets = await _started(net, nursery)
        nets["b"].on_call("echo", echo)
        with pytest.raises(CallFailed):
            await nets["a"].call("b", "echo", b"head", payload=b"unchecked", timeout_s=5)
        assert ran == [] and nets["b"].counters["rejected"] == 1
        assert await nets["a"].call("b", "echo", b"again", timeout_s=5) == b"again"
        nursery.cancel_scope.cancel()


async def test_channels_use_the_version_the_peer_announces(
        autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that announces version 1 (an older node, which refuses version 2) gets
    version 1 channels, payloads under the MAC. Once it announces version 2, new calls go
    on a version 2 channel at once, while a call already sent on the old one still gets
    its answer there; then the old one closes."""
    import functools

    import node.rpc.peers as peers_module
    from node.rpc import channel
    net = MemoryNetwork(random.Random(7))
    versions = {"a": 2, "b": 1}
    monkeypatch.setattr(peers_module, "accept_channel",
                        functools.partial(channel.accept_channel, versions=(1,)))
    release = trio.Event()

    async def store(peer: str, body: bytes) -> bytes:
        if bytes(body[:4]) == b"slow":
            await release.wait()
        return bytes(body[4:])

    async with trio.open_nursery() as nursery:
        nets = await _started(net, nursery, version_of=versions)
        nets["b"].on_call("store", store, raw=True, checks_payload=True)
        assert await nets["a"].call("b", "store", b"head", payload=b"data",
                                    timeout_s=5) == b"data"
        peer = nets["a"]._peers["b"]
        first = peer.channel
        assert first is not None and first.version == 1
        slow: list[bytes] = []

        async def slow_call() -> None:
            slow.append(await nets["a"].call("b", "store", b"slow", payload=b"late",
                                             timeout_s=30))
        nursery.start_soon(slow_call)
        await trio.testing.wait_all_tasks_blocked()
        monkeypatch.setattr(peers_module, "accept_channel", channel.accept_channel)
        versions["b"] = 2  # upgraded, and gossip says so
        assert await nets["a"].call("b", "store", b"head", payload=b"more",
                                    timeout_s=5) == b"more"
        second = peer.channel
        assert second is not None and second is not first and second.version == 2
        assert peer.retiring == {first}
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert slow == [b"late"] and peer.retiring == set()
        with pytest.raises(trio.ClosedResourceError):
            await first.stream.send_all(b"x")
        nursery.cancel_scope.cancel()


async def test_a_replaced_channel_closes_when_its_last_call_is_given_up(
        autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch) -> None:
    import functools

    import node.rpc.peers as peers_module
    from node.rpc import channel
    net = MemoryNetwork(random.Random(8))
    versions = {"a": 2, "b": 1}
    monkeypatch.setattr(peers_module, "accept_channel",
                        functools.partial(channel.accept_channel, versions=(1,)))

    async def hangs(peer: str, body: bytes) -> bytes:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with trio.open_nursery() as nursery:
        nets = await _started(net, nursery, version_of=versions)
        nets["b"].on_call("hangs", hangs)

        async def echo(peer: str, body: bytes) -> bytes:
            return body
        nets["b"].on_call("echo", echo)

        async def given_up() -> None:
            with pytest.raises(CallFailed, match="did not answer"):
                await nets["a"].call("b", "hangs", b"", timeout_s=30)
        nursery.start_soon(given_up)
        await trio.testing.wait_all_tasks_blocked()
        peer = nets["a"]._peers["b"]
        old = peer.channel
        assert old is not None and old.version == 1
        monkeypatch.setattr(peers_module, "accept_channel", channel.accept_channel)
        versions["b"] = 2
        await nets["a"].call("b", "echo", b"x", timeout_s=5)
        assert peer.retiring == {old} and peer.channel is not old
        await trio.sleep(31)
        assert peer.retiring == set() and old not in peer.readers
        with pytest.raises(trio.ClosedResourceError):
            await old.stream.send_all(b"x")
        nursery.cancel_scope.cancel()
