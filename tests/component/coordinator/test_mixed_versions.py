"""A rolling upgrade's mixed cluster, simulated in one process: one node announces, in its
gossip tags, that it runs older software.

Two mechanisms keep a newer node from sending what an older one cannot read:

* ``meta``: the metadata command format a node decodes (``META_FORMAT``). Small blobs
  stored inline in their manifest (``PutBlob.inline``, format 2) are written only while
  every member that may read the log says ``meta=2``; otherwise small blobs go to chunks,
  as format 1 did (``node.node.readable_format``, ``node.api.blobs``);
* ``rw``: the Raft wire version a node decodes (``node.raft.codec``). A leader encodes
  each message in its receiver's version; a version-1 receiver gets no read lease and
  reads through ReadIndex.

There is only one version of the software here, so the "older" node is a current one
whose tag says otherwise (``Gossip.set_tags``), which is all the others go by.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlencode

import trio

from node.coordinator.service import TAG_WIRE
from node.node import TAG_META
from node.testing.inprocess import (Cluster, NodeHandle, cluster, eventually, get, holders,
                                   started)


def announce(h: NodeHandle, **tags: str) -> None:
    """``h`` gossips these tags (on top of its own) from now on."""
    gossip = h.node.gossip
    assert gossip is not None
    gossip.set_tags({**gossip.swim.own_meta.tags, **tags})


async def test_a_member_on_the_older_metadata_format_keeps_small_blobs_out_of_manifests(
        tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        first, headers = await started(c, 3, "box")
        small = b"a small blob, inline when every member reads format 2"
        assert (await first.put_blob("box", "new", small, headers)).status_code == 201
        assert holders(c.nodes, hashlib.sha256(small).digest()) == set()  # inline

        announce(c.nodes["n3"], **{TAG_META: "1"})
        await eventually("every node sees a member that reads only format 1",
                         lambda: all(h.services.meta_format == 1 for h in c.live()))
        older = b"a small blob written while n3 reads only format 1"
        assert (await first.put_blob("box", "old", older, headers)).status_code == 201
        assert holders(c.nodes, hashlib.sha256(older).digest()) == {"n1", "n2", "n3"}
        for h in c.live():
            assert await get(h, headers, "box", "old") == older

        announce(c.nodes["n3"], **{TAG_META: "2"})  # n3 upgraded: inline again
        await eventually("every node sees format 2 everywhere",
                         lambda: all(h.services.meta_format == 2 for h in c.live()))
        newer = b"a small blob written after the upgrade"
        assert (await first.put_blob("box", "newer", newer, headers)).status_code == 201
        assert holders(c.nodes, hashlib.sha256(newer).digest()) == set()
        for h in c.live():
            assert await get(h, headers, "box", "newer") == newer


async def on_the_older_wire(c: Cluster) -> tuple[NodeHandle, dict[str, str]]:
    """Three nodes; n3 says it reads Raft wire version 1 and has lost its read lease."""
    _, headers = await started(c, 3, "box")
    old = c.nodes["n3"]
    await eventually("n3 holds a read lease",
                     lambda: old.services.log.driver.lease_read_index() is not None)
    announce(old, **{TAG_WIRE: "1"})
    await eventually("n3's lease has lapsed: version-1 messages carry none",
                     lambda: old.services.log.driver.lease_read_index() is None)
    await trio.sleep(1.0)  # a few heartbeats more: it stays without one
    assert old.services.log.driver.lease_read_index() is None
    return old, headers


async def test_a_member_on_the_older_raft_wire_gets_no_lease_and_writes_go_on(
        tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        old, headers = await on_the_older_wire(c)
        # Writes through every node (n3 included) are acknowledged, and read back on the
        # nodes that hold leases.
        for i, h in enumerate(c.live()):
            data = f"blob {i} written through {h.node.config.node_id}".encode()
            assert (await h.put_blob("box", f"b{i}", data, headers)).status_code == 201
            for reader in (c.nodes["n1"], c.nodes["n2"]):
                assert await get(reader, headers, "box", f"b{i}") == data
        assert old.services.log.driver.lease_read_index() is None


async def test_a_member_on_the_older_raft_wire_reads_fresh_writes(tmp_path: Path) -> None:
    """Version-1 Raft messages carry no stable index; under a leader that grants no
    leases nobody reads under one, so reads need not wait to be stable (they did, and
    answered 503 until a version-2 node led)."""
    async with cluster(tmp_path) as c:
        old, headers = await on_the_older_wire(c)
        data = b"written after n3 went to version 1"
        assert (await c.nodes["n1"].put_blob("box", "fresh", data, headers)).status_code == 201
        query = urlencode({"container": "box", "blob": "fresh"})
        answer = await old.client.get(f"/get_data?{query}", headers=headers)
        assert answer.status_code == 200, await answer.get_data()
