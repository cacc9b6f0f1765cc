"""Chunks on R nodes: a blob PUT through one node is readable from every node, each chunk
has R copies on distinct nodes, and reads survive the loss of R - 1 of them."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import trio

from node.testing.inprocess import CHUNK, cluster, eventually, get, holders, started
from node.testing.process import flip_byte
from node.store.replicated import copies_required


def test_copies_required_follow_api_md() -> None:
    assert copies_required(3, members=1, live=1) == (1, 1)  # a single node is complete
    assert copies_required(3, members=5, live=5) == (3, 3)
    assert copies_required(3, members=5, live=3) == (3, 3)  # R alive: R copies
    assert copies_required(3, members=5, live=2) == (3, 2)  # fewer: a majority of R
    assert copies_required(3, members=2, live=2) == (2, 2)  # clamped to the cluster
    assert copies_required(5, members=5, live=2) == (5, 3)


async def test_a_blob_put_anywhere_has_three_copies_and_reads_everywhere_after_two_crashes(
        tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        first, headers = await started(c, 5, "photos")
        data = os.urandom(5 * CHUNK + 123)  # six chunks
        answer = await first.put_blob("photos", "big.bin", data, headers)
        assert answer.status_code == 201, await answer.get_data()
        digests = [hashlib.sha256(data[i:i + CHUNK]).digest()
                   for i in range(0, len(data), CHUNK)]
        for digest in digests:  # R copies, on the ring's owners
            owners = set(first.services.ring.replicas_for(digest, 3))
            assert holders(c.nodes, digest) == owners, digest.hex()
        for h in c.live():  # every node reads it, owner of its chunks or not
            assert await get(h, headers, "photos", "big.bin") == data
        # Lose two nodes that hold copies (not n1, whose token we use): still whole.
        owners_of_first = list(first.services.ring.replicas_for(digests[0], 3))
        victims = [n for n in owners_of_first if n != "n1"][:2]
        for victim in victims:
            c.crash(victim)
        for h in c.live():
            assert await get(h, headers, "photos", "big.bin") == data
        # Writes go on with three of five alive (R copies on the live nodes).
        more = os.urandom(2 * CHUNK)
        await eventually("the crashed nodes are out of the ring", lambda: all(
            len(h.services.ring.node_ids) == 3 for h in c.live()), 30.0)
        answer = await first.put_blob("photos", "more.bin", more, headers)
        assert answer.status_code == 201, await answer.get_data()
        for i in range(0, len(more), CHUNK):
            digest = hashlib.sha256(more[i:i + CHUNK]).digest()
            assert holders(c.nodes, digest) == set(c.nodes)


async def test_a_corrupt_or_missing_copy_is_read_around_and_repaired_by_its_owner(
        tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        first, headers = await started(c, 3, "docs")
        data = os.urandom(2 * CHUNK)
        assert (await first.put_blob("docs", "a.bin", data, headers)).status_code == 201
        digest = hashlib.sha256(data[:CHUNK]).digest()
        # Two of three copies go bad: n2's flips a byte, n3's disappears.
        flip_byte(c.nodes["n2"].services.chunks.path_for(digest), 100)
        c.nodes["n3"].services.chunks.path_for(digest).unlink()
        for name in ("n2", "n3"):
            h = c.nodes[name]
            assert await get(h, headers, "docs", "a.bin") == data
            assert await h.services.chunks.verify(digest)  # a good copy again
            assert h.services.chunk_io.counters["read_repairs"] == 1
        assert c.nodes["n2"].services.chunks.corrupt_found == 1


async def test_an_owner_that_is_down_but_not_yet_declared_dead_is_replaced_by_a_handoff(
        tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        first, headers = await started(c, 5, "hand")
        ring = first.services.ring
        # A chunk one of whose owners (not n1) is about to crash.
        data = next(d for d in (os.urandom(CHUNK) for _ in range(200))
                    if "n5" in ring.replicas_for(hashlib.sha256(d).digest(), 3))
        digest = hashlib.sha256(data).digest()
        c.crash("n5")  # gossip still has it in the ring for a few seconds
        assert "n5" in first.services.ring.node_ids
        answer = await first.put_blob("hand", "x.bin", data, headers)
        assert answer.status_code == 201, await answer.get_data()
        owners = set(ring.replicas_for(digest, 3)) - {"n5"}
        stand_in = next(n for n in ring.handoffs(digest, 3) if n != "n5")
        assert holders(c.nodes, digest) == owners | {stand_in}
        assert first.services.chunk_io.counters["handoff_copies"] == 1
        # The stand-in keeps it as a hint while its owner cannot take it back (the first
        # owner holding a copy is the one that tries to send it, and counts the shortfall).
        # Healers heal only chunks their metadata sees referenced: let them apply the put.
        committed = first.services.state.applied_index
        await eventually("the put applied everywhere", lambda: all(
            c.nodes[n].services.state.applied_index >= committed for n in owners | {stand_in}))
        healer = c.nodes[stand_in].services.healer
        await healer.heal_once()
        assert (healer.hinted, healer.under_replicated, healer.pending) == (1, 0, True)
        sender = c.nodes[next(n for n in ring.replicas_for(digest, 3) if n != "n5")]
        await sender.services.healer.heal_once()
        assert sender.services.healer.under_replicated == 1
        assert holders(c.nodes, digest) == owners | {stand_in}


async def test_after_crashes_every_chunk_is_back_to_three_copies_and_after_restarts_to_exactly_three(
        tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        first, headers = await started(c, 5, "heal")
        data = os.urandom(6 * CHUNK)  # (Quart's test client stalls on ~10+ streamed pieces)
        assert (await first.put_blob("heal", "x.bin", data, headers)).status_code == 201
        digests = {hashlib.sha256(data[i:i + CHUNK]).digest()
                   for i in range(0, len(data), CHUNK)}

        def copies_ok(expected_holders: Callable[[bytes], set[str]]) -> bool:
            return all(holders(c.nodes, d) == expected_holders(d) for d in digests)

        c.crash("n4")
        c.crash("n5")
        took = await eventually("3 copies of every chunk on the 3 live nodes", lambda: copies_ok(
            lambda d: {"n1", "n2", "n3"}), 60.0)
        print(f"\nre-replicated to 3 live copies {took:.1f} s after two crashes")
        for h in c.live():
            assert await get(h, headers, "heal", "x.bin") == data
        # The two come back: each chunk ends on exactly its 3 owners again.
        await c.start("n4", chunk_size=CHUNK, replicas=3)
        await c.start("n5", chunk_size=CHUNK, replicas=3)
        await eventually("five in every ring", lambda: all(
            len(h.services.ring.node_ids) == 5 for h in c.live()), 30.0)
        ring = first.services.ring
        took = await eventually("exactly the owners hold each chunk", lambda: copies_ok(
            lambda d: set(ring.replicas_for(d, 3))), 60.0)
        print(f"back to exactly 3 copies on the owners {took:.1f} s after the restarts")
        dropped = sum(h.services.healer.counters["copies_dropped"] for h in c.live())
        assert dropped > 0
        for h in c.live():
            assert await get(h, headers, "heal", "x.bin") == data


async def test_a_sixth_node_takes_about_a_sixth_of_the_copies_and_no_chunk_has_more_or_fewer(
        tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        first, headers = await started(c, 5, "grow")
        digests: set[bytes] = set()
        for b in range(12):
            data = os.urandom(5 * CHUNK)
            assert (await first.put_blob("grow", f"b{b}", data, headers)).status_code == 201
            digests |= {hashlib.sha256(data[i:i + CHUNK]).digest()
                        for i in range(0, len(data), CHUNK)}
        await c.start("n6", chunk_size=CHUNK, replicas=3)
        await eventually("six in every ring", lambda: all(
            len(h.services.ring.node_ids) == 6 for h in c.live()), 30.0)
        ring = first.services.ring
        took = await eventually("each chunk on exactly its 3 owners", lambda: all(
            holders(c.nodes, d) == set(ring.replicas_for(d, 3)) for d in digests), 60.0)
        share = sum(1 for d in digests if "n6" in holders(c.nodes, d)) / (3 * len(digests))
        print(f"\nn6 joined: rebalanced in {took:.1f} s; it holds {share:.3f} of all copies "
              f"(ideal {1 / 6:.3f}, {len(digests)} chunks)")
        assert 1 / 12 < share < 1 / 4


async def test_two_of_three_copies_flipped_reads_stay_right_and_a_scrub_pass_heals_them(
        tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        first, headers = await started(c, 3, "rot")
        data = os.urandom(3 * CHUNK)
        assert (await first.put_blob("rot", "r.bin", data, headers)).status_code == 201
        digest = hashlib.sha256(data[CHUNK:2 * CHUNK]).digest()
        # Let the healers finish the passes the cluster's formation started: they verify
        # copies too, and would find the damage before the scrubbers do.
        await eventually("healers idle", lambda: all(
            h.services.healer.passes >= 1 and len(h.services.ring.node_ids) == 3
            for h in c.live()))
        await trio.sleep(1.0)
        for name in ("n1", "n2"):  # bit rot in two of the three copies
            flip_byte(c.nodes[name].services.chunks.path_for(digest), CHUNK // 2, 0x01)
        # n3 reads its own good copy. n1's scrubber finds its bad copy and fetches a good
        # one; if it asks n2 first, n2 finds its own copy bad too and repairs it from n3
        # on the way, so n2's scrubber may find nothing left to do.
        assert await get(c.nodes["n3"], headers, "rot", "r.bin") == data
        scrubbers = [c.nodes[name].services.scrubber for name in ("n1", "n2")]
        assert await scrubbers[0].scrub_once() == 1
        assert await scrubbers[1].scrub_once() in (0, 1)
        assert sum(s.counters["repaired"] for s in scrubbers) >= 1
        assert sum(h.services.chunks.corrupt_found for h in c.live()) == 2
        for h in c.live():
            assert await h.services.chunks.verify(digest)
            assert await get(h, headers, "rot", "r.bin") == data
        # A second pass finds nothing.
        assert await c.nodes["n1"].services.scrubber.scrub_once() == 0


async def test_a_node_whose_disk_was_replaced_gets_its_copies_back_at_once(
        tmp_path: Path) -> None:
    """Killed, its data dir deleted and restarted under its id before gossip declared it
    dead: the ring never changed, so no healing pass ran until the backstop (heal_interval_s,
    10 min by default) and the blob had one copy less all that time. A member back with an
    empty log (its fence tag) now wakes every healer."""
    async with cluster(tmp_path) as c:
        first, headers = await started(c, 3, "wipe")
        data = os.urandom(3 * CHUNK)
        assert (await first.put_blob("wipe", "x.bin", data, headers)).status_code == 201
        digests = [hashlib.sha256(data[i:i + CHUNK]).digest() for i in range(0, len(data), CHUNK)]
        assert all(holders(c.nodes, d) == {"n1", "n2", "n3"} for d in digests)
        epoch = first.services.ring.epoch
        c.crash("n3")
        shutil.rmtree(tmp_path / "n3")
        back = await c.start("n3", chunk_size=CHUNK, replicas=3)
        took = await eventually("n3 holds its copies again", lambda: all(
            back.services.chunks.path_for(d).exists() for d in digests), 10.0)
        print(f"\nreplaced disk: copies back {took:.2f} s after the restart (ring epoch "
              f"{epoch} -> {first.services.ring.epoch})")
        assert back.services.chunk_io.counters["read_repairs"] == 0  # nobody read them
        assert await get(back, headers, "wipe", "x.bin") == data


async def test_a_chunk_altered_on_the_wire_is_refused_and_never_stored(
        tmp_path: Path) -> None:
    """A chunk's bytes travel outside the channel's MAC (``node.rpc.channel``); what guards
    them is this check against the chunk id, which travels under it."""
    import pytest

    from node.rpc.peers import Refused
    from node.store.replicated import NO_UPLOAD
    async with cluster(tmp_path) as c:
        await started(c, 1, "docs")
        n1 = c.nodes["n1"]
        data = os.urandom(CHUNK)
        digest = hashlib.sha256(data).digest()
        altered = bytearray(data)
        altered[1234] ^= 0x40
        frame = memoryview(digest + NO_UPLOAD + bytes(altered))
        with pytest.raises(Refused, match="does not match"):
            await n1.services.chunk_io._serve_put("n2", frame)
        assert not n1.services.chunks.path_for(digest).exists()
        await n1.services.chunk_io._serve_put("n2", memoryview(digest + NO_UPLOAD + data))
        assert n1.services.chunks.path_for(digest).exists()


async def test_a_peer_answering_with_wrong_bytes_is_read_around(tmp_path: Path) -> None:
    """``chunk.get`` answers also travel outside the MAC: the reader checks them."""
    async with cluster(tmp_path) as c:
        first, headers = await started(c, 3, "docs")
        data = os.urandom(CHUNK)
        assert (await first.put_blob("docs", "a.bin", data, headers)).status_code == 201
        digest = hashlib.sha256(data).digest()
        first.services.chunks.path_for(digest).unlink()  # n1 must ask its peers
        real = {name: c.nodes[name].services.chunks.get for name in ("n2", "n3")}

        async def lying(digest: bytes) -> bytes:
            return b"\0" + (await real["n2"](digest))[1:]
        for name in ("n2", "n3"):
            c.nodes[name].services.chunks.get = lying
        answer = await first.client.get("/get_data?container=docs&blob=a.bin", headers=headers)
        assert answer.status_code == 503 and await answer.get_data() != data
        assert not first.services.chunks.path_for(digest).exists()  # nothing bad repaired
        c.nodes["n3"].services.chunks.get = real["n3"]
        assert await get(first, headers, "docs", "a.bin") == data
        assert first.services.chunks.path_for(digest).exists()  # the good copy repaired
