"""The trio gossip driver (node.gossip.driver) on an in-memory network under MockClock.

Two or three ``Gossip`` objects share one ``MemoryNetwork``; an attacker is just
another endpoint on it (or a ``Tap`` that injects datagrams of any size). Every
test runs on the ``autojump_clock`` fixture, so waits cost no wall time.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import Any, cast

import pytest
import trio
import trio.testing

from node.gossip.config import TESTS
from node.gossip.driver import MAX_PUSH_PULLS, PUSH_PULL_TIMEOUT_S, Gossip
from node.gossip.members import MembershipView, MemberState
from node.gossip.messages import Alive, MemberMeta, Packet, Ping, PushPull, Suspect
from node.gossip.wire import (MAX_PACKET_BYTES, WireError, seal_packet, seal_push_pull,
                              update_size)
from node.net import MemoryNetwork, MemoryStream, MemoryTransport, Transport

KEY = b"cluster-key-0123456789abcdef0123"
OTHER_KEY = b"another-cluster-key-0123456789ab"
EPOCH_MS = 1_700_000_000_000
ALIVE, LEFT = MemberState.ALIVE, MemberState.LEFT


def addr(i: int) -> str:
    return f"10.0.0.{i}:7946"


def meta(i: int, tags: dict[str, str] | None = None) -> MemberMeta:
    return MemberMeta(f"n{i}", addr(i), f"10.0.0.{i}:80", tags=MappingProxyType(tags or {}))


def wall_ms() -> int:
    return EPOCH_MS + int(trio.current_time() * 1000)


def state_of(g: Gossip, node_id: str) -> MemberState | None:
    for m in g.view.members:
        if m.node_id == node_id:
            return m.state
    return None


async def wait_until(predicate: Callable[[], bool], within_s: float = 30.0) -> float:
    """Poll (in virtual time) until ``predicate()``; return how long it took."""
    start = trio.current_time()
    with trio.fail_after(within_s):
        while not predicate():
            await trio.sleep(0.01)
    return trio.current_time() - start


class Tap:
    """A MemoryTransport whose inbox also takes datagrams the test injects, of any size."""

    def __init__(self, inner: MemoryTransport) -> None:
        self.inner = inner
        self._in, self._out = trio.open_memory_channel[tuple[str, bytes]](1000)

    def __getattr__(self, name: str) -> Any:
        """Everything but the inbox is the inner transport's (address, counters, ...)."""
        return getattr(self.inner, name)

    def inject(self, source: str, data: bytes) -> None:
        self._in.send_nowait((source, data))

    async def pump(self) -> None:
        while True:
            self._in.send_nowait(await self.inner.receive_packet())

    async def send_packet(self, to: str, data: bytes) -> None:
        await self.inner.send_packet(to, data)

    async def receive_packet(self) -> tuple[str, bytes]:
        return await self._out.receive()

    async def connect(self, to: str, *, timeout_s: float) -> MemoryStream:
        return await self.inner.connect(to, timeout_s=timeout_s)

    async def accept(self) -> tuple[MemoryStream, str]:
        return await self.inner.accept()

    async def aclose(self) -> None:
        await self.inner.aclose()


class Cluster:
    def __init__(self, net: MemoryNetwork, nursery: trio.Nursery) -> None:
        self.net = net
        self.nursery = nursery
        self.nodes: dict[int, Gossip] = {}
        self.scopes: dict[int, trio.CancelScope] = {}
        self.crashes: list[BaseException] = []

    async def start(self, i: int, *, seeds: tuple[int, ...] = (1,), key: bytes = KEY,
                    tags: dict[str, str] | None = None, tap: bool = False,
                    on_view: Callable[[MembershipView], None] | None = None,
                    accepted_keys: tuple[bytes, ...] = ()) -> Gossip:
        transport: MemoryTransport | Tap = self.net.transport(addr(i))
        if tap:
            assert isinstance(transport, MemoryTransport)
            transport = Tap(transport)
            self.nursery.start_soon(transport.pump)
        # cast: Tap's counters are read-only views of the wrapped transport's
        g = Gossip(meta(i, tags), TESTS, cast(Transport, transport), key, rng=random.Random(i), wall_ms=wall_ms,
                   seeds=tuple(addr(s) for s in seeds if s != i), on_view=on_view,
                   accepted_keys=accepted_keys)
        scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                try:
                    await g.run(task_status=task_status)
                except Exception as exc:  # recorded, so a test can say the node crashed
                    self.crashes.append(exc)

        await self.nursery.start(run)
        self.nodes[i] = g
        self.scopes[i] = scope
        return g

    def stop(self, i: int) -> None:
        self.scopes[i].cancel()
        self.net.detach(addr(i))

    def alive_everywhere(self, ids: set[int]) -> bool:
        return all({m.node_id for m in self.nodes[i].view.members
                    if m.state is ALIVE} == {f"n{j}" for j in ids} for i in ids)


@asynccontextmanager
async def cluster(seed: int = 1) -> AsyncIterator[Cluster]:
    net = MemoryNetwork(random.Random(seed), delay_s=(0.0005, 0.002))
    async with net.running():
        async with trio.open_nursery() as nursery:
            c = Cluster(net, nursery)
            yield c
            nursery.cancel_scope.cancel()
    assert not c.crashes, c.crashes


def datagram(packet: Packet, *, sender: str = "n2", counter: int = 1, key: bytes = KEY,
             boot: int = 99, now_ms: int | None = None) -> bytes:
    return seal_packet(packet, key=key, sender=sender, boot=boot, counter=counter,
                       now_ms=wall_ms() if now_ms is None else now_ms)


async def read_all(stream: MemoryStream) -> bytes:
    """Everything until the peer closes (or the link breaks)."""
    data = b""
    try:
        while chunk := await stream.receive_some(65536):
            data += chunk
    except trio.BrokenResourceError:
        pass
    return data


# -- basics --------------------------------------------------------------------------------


async def test_three_nodes_join_through_one_seed(autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        for i in (1, 2, 3):
            await c.start(i)
        took = await wait_until(lambda: c.alive_everywhere({1, 2, 3}))
        assert took < 5.0
        stats = c.nodes[1].stats()
        assert stats["datagrams_accepted"] > 0 and stats["push_pulls_answered"] >= 2
        for key in ("bad_mac", "replayed", "stale", "malformed", "probes_sent"):
            assert key in stats


async def test_a_member_with_huge_tags_is_refused_at_construction(
        autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(random.Random(1))
    huge = {f"tag{i:02d}": "x" * 256 for i in range(16)}
    with pytest.raises(WireError):
        Gossip(meta(1, huge), TESTS, net.transport(addr(1)), KEY, rng=random.Random(1),
               wall_ms=wall_ms)
    bad_key = {"k" * 65: "v"}  # longer than a tag key may be: could never be encoded
    with pytest.raises(WireError):
        Gossip(meta(2, bad_key), TESTS, net.transport(addr(2)), KEY, rng=random.Random(1),
               wall_ms=wall_ms)
    fits = {f"tag{i:02d}": "x" * 40 for i in range(16)}
    Gossip(meta(3, fits), TESTS, net.transport(addr(3)), KEY, rng=random.Random(1),
           wall_ms=wall_ms)


async def test_changed_tags_reach_every_view(autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        for i in (1, 2, 3):
            await c.start(i)
        await wait_until(lambda: c.alive_everywhere({1, 2, 3}))
        c.nodes[1].set_tags({"raft": "member"})
        await wait_until(lambda: all(
            g.swim.member("n1").tags == {"raft": "member"}  # type: ignore[union-attr]
            for g in c.nodes.values()), within_s=5.0)
        with pytest.raises(WireError):
            c.nodes[1].set_tags({f"tag{i:02d}": "x" * 256 for i in range(16)})
        assert c.nodes[1].swim.own_meta.tags == {"raft": "member"}


# -- hostile datagrams ---------------------------------------------------------------------


async def test_bad_datagrams_are_dropped_counted_and_harmless(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        a = await c.start(1, tap=True)
        await c.start(2)
        await wait_until(lambda: c.alive_everywhere({1, 2}))
        tap = a.transport
        assert isinstance(tap, Tap)
        before = a.stats()
        accepted = before["datagrams_accepted"]

        # A datagram from n2, captured on the wire, then replayed.
        captured: list[bytes] = []

        def capture(src: str, dst: str, data: bytes) -> bool:
            if (src, dst) == (addr(2), addr(1)):
                captured.append(data)
            return True  # delivered all the same

        c.net.route_hook = capture
        await wait_until(lambda: bool(captured))
        c.net.route_hook = None
        await trio.sleep(0.1)
        tap.inject(addr(2), captured[0])

        ping_from_stranger = Packet(Ping(1, "n9", "n1"), (Alive(0, meta(9)),))
        tap.inject(addr(9), datagram(ping_from_stranger, sender="n9", key=OTHER_KEY))
        sealed = bytearray(datagram(ping_from_stranger, sender="n9"))
        sealed[-1] ^= 1  # tampered in flight
        tap.inject(addr(9), bytes(sealed))
        rng = random.Random(5)
        tap.inject(addr(9), b"\x00" + rng.randbytes(300))
        tap.inject(addr(9), b"")
        tap.inject(addr(9), b"\xb5\x01P")
        tap.inject(addr(9), datagram(ping_from_stranger, sender="n9") + b"\x00" * 1400)
        tap.inject(addr(9), datagram(ping_from_stranger, sender="n9",
                                     now_ms=wall_ms() - 3_600_000))
        await trio.sleep(1.0)

        stats = a.stats()
        assert stats["replayed"] == before["replayed"] + 1
        assert stats["bad_mac"] == before["bad_mac"] + 2
        assert stats["malformed"] == before["malformed"] + 4
        assert stats["stale"] == before["stale"] + 1
        assert stats["datagrams_accepted"] > accepted  # still listening to n2
        assert state_of(a, "n9") is None
        # Still healthy: n2 keeps seeing n1 alive, well past several probe periods.
        await trio.sleep(10 * TESTS.probe_interval_s)
        assert c.alive_everywhere({1, 2})


async def test_random_datagrams_never_crash_the_node(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        a = await c.start(1, tap=True)
        await c.start(2)
        await wait_until(lambda: c.alive_everywhere({1, 2}))
        tap = a.transport
        assert isinstance(tap, Tap)
        rng = random.Random(7)
        valid = datagram(Packet(Ping(3, "n2", "n1")), counter=10**6)
        for k in range(300):
            data = bytearray(valid)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            tap.inject(addr(9), bytes(data[:rng.randint(0, len(data))]) if k % 3 == 0
                       else bytes(data))
            if k % 50 == 0:
                await trio.sleep(0.05)
        await trio.sleep(5.0)
        stats = a.stats()
        assert stats["bad_mac"] + stats["malformed"] >= 290
        assert c.alive_everywhere({1, 2})


async def test_a_claim_at_the_largest_incarnation_does_not_crash_the_node(
        autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(random.Random(1))
    async with trio.open_nursery() as nursery:
        c = Cluster(net, nursery)
        a = await c.start(1, tap=True)
        await c.start(2)
        await wait_until(lambda: c.alive_everywhere({1, 2}))
        assert isinstance(a.transport, Tap)
        a.transport.inject(addr(2), datagram(
            Packet(Ping(1, "n2", "n1"), (Suspect("n1", 2**63 - 1, "n2"),)), counter=10**9))
        await trio.sleep(5.0)
        crashes = list(c.crashes)
        nursery.cancel_scope.cancel()
    assert crashes == []


# -- hostile push-pull streams -------------------------------------------------------------


async def test_garbage_and_wrong_key_push_pulls_are_closed_and_counted(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        a = await c.start(1)
        attacker = c.net.transport(addr(66))
        rng = random.Random(3)
        frames = [
            (100).to_bytes(4, "big") + rng.randbytes(100),                  # garbage body
            (2**31).to_bytes(4, "big"),                                   # absurd length
            seal_push_pull(PushPull("n9", True, (Alive(0, meta(9)),)), key=OTHER_KEY,
                           now_ms=wall_ms()),                            # wrong key
            b"\x00\x00",                                                  # then hang up
        ]
        for k, frame in enumerate(frames, 1):
            stream = await attacker.connect(addr(1), timeout_s=1.0)
            await stream.send_all(frame)
            if k == len(frames):
                await stream.send_eof()
            with trio.fail_after(1.0):
                reply = await read_all(stream)
            assert reply == b""  # nothing of our state goes to a stranger; the stream is closed
            await stream.aclose()
            assert a.stats()["push_pulls_rejected"] == k
        assert state_of(a, "n9") is None


async def test_a_stalled_inbound_push_pull_is_closed_after_the_timeout(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        await c.start(1)
        attacker = c.net.transport(addr(66))
        stream = await attacker.connect(addr(1), timeout_s=1.0)
        start = trio.current_time()
        with trio.fail_after(PUSH_PULL_TIMEOUT_S + 1.0):
            assert await read_all(stream) == b""
        assert trio.current_time() - start == pytest.approx(PUSH_PULL_TIMEOUT_S, abs=0.5)


async def test_a_stalled_inbound_push_pull_is_counted(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        a = await c.start(1)
        before = a.stats()
        stream = await c.net.transport(addr(66)).connect(addr(1), timeout_s=1.0)
        await read_all(stream)
        after = a.stats()
        failures = ("push_pulls_rejected", "push_pulls_failed")
        assert sum(after.get(k, 0) for k in failures) > sum(before.get(k, 0) for k in failures)


async def test_stalled_inbound_push_pulls_do_not_block_a_join(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        await c.start(1)
        attacker = c.net.transport(addr(66))
        stalls = [await attacker.connect(addr(1), timeout_s=1.0)
                  for _ in range(MAX_PUSH_PULLS - 1)]
        await trio.sleep(0.5)
        await c.start(2)
        took = await wait_until(lambda: c.alive_everywhere({1, 2}))
        assert took < 2.0
        for s in stalls:
            await s.aclose()


async def test_a_flood_of_stalled_push_pulls_only_delays_a_join_until_the_timeout(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        await c.start(1)
        attacker = c.net.transport(addr(66))
        stalls = [await attacker.connect(addr(1), timeout_s=1.0)
                  for _ in range(MAX_PUSH_PULLS)]
        await c.start(2)
        took = await wait_until(lambda: c.alive_everywhere({1, 2}), within_s=60.0)
        assert took < PUSH_PULL_TIMEOUT_S + 5.0
        for s in stalls:
            await s.aclose()


async def test_a_peer_that_never_answers_our_push_pull_is_given_up_and_counted(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        silent = c.net.transport(addr(66))
        held: list[MemoryStream] = []

        async def accept_and_ignore() -> None:
            while True:
                stream, _ = await silent.accept()
                held.append(stream)  # read nothing, answer nothing

        c.nursery.start_soon(accept_and_ignore)
        await c.start(2)
        a = await c.start(1, seeds=(66, 2))  # one seed stalls, the other answers
        took = await wait_until(lambda: c.alive_everywhere({1, 2}))
        assert took < 2.0  # not held up by the stalled one
        assert a.stats().get("push_pulls_failed", 0) == 0
        await wait_until(lambda: a.stats().get("push_pulls_failed", 0) >= 1,
                         within_s=PUSH_PULL_TIMEOUT_S + 1.0)
        assert held and c.alive_everywhere({1, 2})


# -- keys, views, leaving ------------------------------------------------------------------


async def test_a_node_with_another_key_never_appears_in_views(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        a = await c.start(1)
        b = await c.start(2)
        stranger = await c.start(3, key=OTHER_KEY)
        # Even a stranger that believes it is a member keeps probing in vain.
        stranger.swim.apply(trio.current_time(), Alive(0, meta(1)))
        await trio.sleep(20.0)
        assert c.alive_everywhere({1, 2})
        assert state_of(a, "n3") is None and state_of(b, "n3") is None
        assert {m.node_id for m in stranger.view.members if m.state is ALIVE} == {"n3"}
        stats = a.stats()
        assert stats["push_pulls_rejected"] >= 1 and stats["bad_mac"] >= 1


async def test_on_view_gets_each_new_view_with_a_higher_version(
        autojump_clock: trio.testing.MockClock) -> None:
    seen: list[MembershipView] = []
    async with cluster() as c:
        a = await c.start(1, on_view=seen.append)
        assert seen == []  # nothing changed yet
        await c.start(2)
        await c.start(3)
        await wait_until(lambda: c.alive_everywhere({1, 2, 3}))
        await c.nodes[3].leave(2.0)
        c.stop(3)
        await wait_until(lambda: state_of(a, "n3") is LEFT)
        await trio.sleep(1.0)
    versions = [v.version for v in seen]
    assert len(seen) >= 3
    assert versions == sorted(set(versions))  # strictly increasing: every call is a new view
    assert all(isinstance(v, MembershipView) for v in seen)
    assert seen[-1] == a.view and seen[-1].version == a.swim.view().version
    states = [{m.node_id: m.state for m in v.members} for v in seen]
    assert any(s.get("n2") is ALIVE for s in states)
    assert states[-1]["n3"] is LEFT


async def test_leave_returns_promptly_and_peers_see_left(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        for i in (1, 2, 3):
            await c.start(i)
        await wait_until(lambda: c.alive_everywhere({1, 2, 3}))
        leaver = c.nodes[2]
        start = trio.current_time()
        await leaver.leave(5.0)
        assert trio.current_time() - start < 1.0
        assert leaver.swim.pending_updates == 0
        c.stop(2)
        await wait_until(lambda: all(state_of(c.nodes[i], "n2") is LEFT for i in (1, 3)),
                         within_s=2.0)
        await trio.sleep(30.0)  # stays left: never suspected or declared dead
        assert all(state_of(c.nodes[i], "n2") is LEFT for i in (1, 3))
        assert c.alive_everywhere({1, 3})


async def test_metadata_too_big_to_piggyback_is_refused_at_construction(
        autojump_clock: trio.testing.MockClock) -> None:
    """Small enough for a datagram, too big for the piggyback budget: it could only ever
    spread by push-pull, and every peer's leave() would wait for it, so it is refused."""
    tags = {f"k{i:02d}": "v" * 70 for i in range(16)}
    assert update_size(Alive(0, meta(3, tags))) > TESTS.piggyback_budget_bytes
    assert update_size(Alive(0, meta(3, tags))) < MAX_PACKET_BYTES - 100
    net = MemoryNetwork(random.Random(1))
    with pytest.raises(WireError):
        Gossip(meta(3, tags), TESTS, net.transport(addr(3)), KEY, rng=random.Random(1),
               wall_ms=wall_ms)


async def test_nodes_in_the_middle_of_a_key_rotation_stay_one_cluster(
        autojump_clock: trio.testing.MockClock) -> None:
    """Nodes that sign with the old key and nodes that sign with the new one, each
    accepting the other's, gossip as one cluster; a third key stays out."""
    async with cluster() as c:
        await c.start(1, key=KEY, accepted_keys=(OTHER_KEY,))
        await c.start(2, key=OTHER_KEY, accepted_keys=(KEY,))
        await c.start(3, key=OTHER_KEY, accepted_keys=(KEY,), seeds=(2,))
        stranger = await c.start(4, key=b"a-third-cluster-key-0123456789ab", seeds=(1, 2))
        await wait_until(lambda: c.alive_everywhere({1, 2, 3}))
        await trio.sleep(20 * TESTS.probe_interval_s)
        assert c.alive_everywhere({1, 2, 3})
        assert all(state_of(c.nodes[i], "n4") is None for i in (1, 2, 3))
        assert {m.node_id for m in stranger.view.members if m.state is ALIVE} == {"n4"}
        stats = c.nodes[1].stats()
        assert stats["push_pulls_rejected"] >= 1 and stats["datagrams_accepted"] > 0
