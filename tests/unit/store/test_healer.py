"""Healer's counters on a fake network of three nodes (real chunk stores on disk)."""

from __future__ import annotations

import os
from pathlib import Path

from node.gossip.members import Member, MembershipView
from node.ring.ring import Ring
from node.rpc.peers import CallFailed
from node.store.chunks import ChunkStore, chunk_id
from node.store.healer import Healer

NODES = ("a", "b", "c")


class FakePeers:
    """Routes calls to the other nodes' handlers; ``chunk.put`` stores the chunk named by
    the body's first 32 bytes (whatever else the body carries) straight into the peer's
    store. Calls to a node in ``down`` fail."""

    def __init__(self, node_id: str, net: FakeNet) -> None:
        self.node_id = node_id
        self.net = net
        self.handlers: dict[str, object] = {}

    def on_call(self, topic: str, handler: object, **flags: bool) -> None:
        self.handlers[topic] = handler

    async def call(self, peer_id: str, topic: str, body: bytes, *, timeout_s: float,
                   payload: bytes = b"", checks_answer: bool = False) -> bytes:
        if peer_id in self.net.down:
            raise CallFailed(f"{peer_id} is down")
        if topic == "chunk.put":
            digest = body[:32]
            await self.net.stores[peer_id].put(digest, self.net.known[digest])
            return b""
        handler = self.net.peers[peer_id].handlers[topic]
        return await handler(self.node_id, body)  # type: ignore[operator, no-any-return]


class FakeNet:
    def __init__(self) -> None:
        self.peers: dict[str, FakePeers] = {}
        self.stores: dict[str, ChunkStore] = {}
        self.known: dict[bytes, bytes] = {}
        self.down: set[str] = set()


async def three_healers(tmp_path: Path, garbage: set[bytes] | None = None
                        ) -> tuple[FakeNet, dict[str, Healer]]:
    """``garbage``: chunk ids no manifest references (None: every chunk is referenced)."""
    net = FakeNet()

    async def unreferenced(batch: list[bytes]) -> list[bytes]:
        return [d for d in batch if garbage is not None and d in garbage]

    ring = Ring.build(MembershipView(tuple(Member(n, "", "") for n in NODES), version=1))
    healers = {}
    for name in NODES:
        store = ChunkStore(tmp_path / name, fsync=False)
        await store.open()
        net.stores[name] = store
        net.peers[name] = FakePeers(name, net)
        healers[name] = Healer(name, store, net.peers[name],  # type: ignore[arg-type]
                               ring=lambda: ring, replicas=3, interval_s=600.0,
                               unreferenced=unreferenced)
    return net, healers


async def test_under_replicated_counts_only_the_copies_a_pass_could_not_restore(
        tmp_path: Path) -> None:
    net, healers = await three_healers(tmp_path)
    chunks = [os.urandom(1000) for _ in range(4)]
    for data in chunks:  # every chunk on a and b; c (an owner: R = 3 of 3) lacks them
        net.known[chunk_id(data)] = data
        for name in ("a", "b"):
            await net.stores[name].put(chunk_id(data), data)
    net.down.add("c")
    for name in ("a", "b"):
        await healers[name].heal_once()
    # c lacks 4 copies and cannot take them; each is counted by the owner meant to send it.
    assert healers["a"].under_replicated + healers["b"].under_replicated == 4
    assert healers["a"].counters["send_failed"] + healers["b"].counters["send_failed"] == 4
    net.down.clear()
    for name in ("a", "b"):
        await healers[name].heal_once()
    # The passes restored every copy, each exactly once (the first owner holding a copy
    # sends it), and nothing is under-replicated any more (it used to report the copies it
    # had found missing until the next pass, heal_interval_s later).
    assert healers["a"].counters["copies_sent"] + healers["b"].counters["copies_sent"] == 4
    assert [await net.stores["c"].has(chunk_id(d)) for d in chunks] == [True] * 4
    assert healers["a"].under_replicated == healers["b"].under_replicated == 0
    await healers["c"].heal_once()
    assert healers["c"].under_replicated == 0 and healers["c"].counters["copies_sent"] == 0


async def test_garbage_is_left_to_the_collector_and_keeps_the_healer_looking(
        tmp_path: Path) -> None:
    """Copies of chunks no manifest references are neither sent nor counted as missing:
    sending them would give owners fresh copies that outlive the collector's grace there,
    and garbage would hop between nodes for ever. It keeps the healer looking again soon,
    since a manifest committed meanwhile makes a chunk referenced."""
    kept, junk = os.urandom(1000), os.urandom(1000)
    garbage = {chunk_id(junk)}
    net, healers = await three_healers(tmp_path, garbage)
    for data in (kept, junk):
        net.known[chunk_id(data)] = data
        await net.stores["a"].put(chunk_id(data), data)
    await healers["a"].heal_once()
    assert [await net.stores[n].has(chunk_id(kept)) for n in NODES] == [True] * 3
    assert [await net.stores[n].has(chunk_id(junk)) for n in NODES] == [True, False, False]
    assert healers["a"].counters["copies_sent"] == 2 and healers["a"].under_replicated == 0
    assert healers["a"].garbage == 1 and healers["a"].pending
    garbage.clear()  # its manifest committed after all: the next pass heals it
    await healers["a"].heal_once()
    assert [await net.stores[n].has(chunk_id(junk)) for n in NODES] == [True] * 3
    assert healers["a"].garbage == 0 and not healers["a"].pending
