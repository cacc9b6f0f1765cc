"""Collection across a cluster: every node reclaims its unreferenced copies, and no copy a
committed manifest relies on is ever removed, even when a commit races the collector."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import trio

from node.errors import Unavailable
from node.meta import commands
from node.testing.inprocess import CHUNK, Cluster, cluster, eventually, get, holders, started

GC = dict(gc_grace_s=0, gc_interval_s=0.2, upload_hold_s=1.0)


def chunk_files(c: Cluster) -> dict[str, set[bytes]]:
    """The chunk ids on each live node's disk."""
    found: dict[str, set[bytes]] = {}
    for name, h in c.nodes.items():
        root = h.services.chunks.path_for(bytes(32)).parent.parent
        found[name] = {bytes.fromhex(p.name) for p in root.glob("??/*") if len(p.name) == 64}
    return found


def widen_the_race(log: Any) -> None:
    """Hold each manifest commit back up to 0.3 s, so collection passes (every 0.2 s) run
    between an upload's chunk writes and its commit."""
    submit = log.submit
    rng = random.Random(7)

    async def slow_submit(command: commands.Command) -> object:
        if isinstance(command, commands.PutBlob):
            await trio.sleep(rng.uniform(0, 0.3))
        return await submit(command)
    log.submit = slow_submit


async def test_a_commit_racing_the_collector_is_refused_and_the_retry_is_whole(
        tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        first, headers = await started(c, 3, "box", gc_grace_s=0, gc_interval_s=3600)
        data = os.urandom(CHUNK)
        digest = hashlib.sha256(data).digest()
        svc = first.services
        since = svc.state.applied_index
        with svc.chunk_io.upload() as upload:  # an upload that wrote its one chunk ...
            with svc.pins.holding([digest]):
                await upload.put(digest, data)
                assert holders(c.nodes, digest) == {"n1", "n2", "n3"}
                peer = c.nodes["n2"].services
                # ... is protected by its hold on n2 while it runs,
                assert await peer.collector.collect_once() == 0
                assert holders(c.nodes, digest) == {"n1", "n2", "n3"}
                # but if the hold lapses (a frozen uploader), n2's copy is condemned and goes,
                peer.pins.expire(trio.current_time() + 3600)
                assert await peer.collector.collect_once() == 1
                assert holders(c.nodes, digest) == {"n1", "n3"}
                # and the manifest that would rely on it is refused: nothing becomes visible.
                put = commands.PutBlob("box", "late", CHUNK, hashlib.md5(data).hexdigest(),
                                "application/octet-stream", "2026-11-25T00:00:00.000Z", CHUNK,
                                (digest.hex(),), since=since)
                try:
                    await svc.log.submit(put)
                except Unavailable as exc:
                    assert "collector" in str(exc)
                else:
                    raise AssertionError("a manifest over a condemned chunk was committed")
        answer = await first.client.get("/list_blobs?container=box", headers=headers)
        assert (await answer.get_json())["blobs"] == []
        # The client's retry writes the copies again and commits.
        answer = await first.put_blob("box", "late", data, headers)
        assert answer.status_code == 201, await answer.get_data()
        assert holders(c.nodes, digest) == {"n1", "n2", "n3"}
        for h in c.live():
            assert await get(h, headers, "box", "late") == data


async def test_overwrites_and_deletes_under_concurrent_uploads_lose_nothing_referenced(
        tmp_path: Path) -> None:
    """Five nodes collect every 0.2 s with no grace period while four clients overwrite and
    delete blobs built from a small pool of shared chunks (so chunks keep going from
    referenced to unreferenced and back). Every acknowledged blob reads back whole from
    every node, and at the end exactly the referenced chunks are left, three copies each."""
    async with cluster(tmp_path) as c:
        first, headers = await started(c, 5, "box", **GC)
        for h in c.live():
            widen_the_race(h.services.log)
        pool = [os.urandom(CHUNK) for _ in range(6)]
        rng = random.Random(5)
        # Each client owns its names (so the model is exact); the chunks are shared by all.
        acknowledged: dict[str, bytes | None] = {}
        uncertain: set[str] = set()
        outcomes: dict[int, int] = {}

        async def client(worker: int) -> None:
            node = c.nodes[f"n{worker % 5 + 1}"]
            names = [f"w{worker}-{i}" for i in range(3)]
            for _ in range(12):
                name = rng.choice(names)
                if rng.random() < 0.3:
                    answer = await node.client.delete(
                        f"/delete_data?container=box&blob={name}", headers=headers)
                    if answer.status_code in (204, 404):
                        acknowledged[name] = None
                        uncertain.discard(name)
                else:
                    body = b"".join(rng.choice(pool) for _ in range(rng.randint(1, 3)))
                    body += os.urandom(rng.randint(0, 100))  # a unique last chunk
                    answer = await node.put_blob("box", name, body, headers)
                    if answer.status_code == 201:
                        acknowledged[name] = body
                        uncertain.discard(name)
                    else:
                        uncertain.add(name)  # refused: the old value or none stays
                outcomes[answer.status_code] = outcomes.get(answer.status_code, 0) + 1
                for other in names:  # every chunk of what it wrote is still there
                    if acknowledged.get(other) is not None and other not in uncertain:
                        assert await get(node, headers, "box", other) == acknowledged[other]

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for worker in range(4):
                    nursery.start_soon(client, worker)
        print("outcomes", outcomes)
        assert set(outcomes) <= {201, 204, 404, 503}, outcomes
        assert outcomes.get(201, 0) > 20

        answer = await first.client.get("/list_blobs?container=box", headers=headers)
        listed = {b["blob"] for b in (await answer.get_json())["blobs"]}
        referenced: set[bytes] = set()
        for name in listed:
            data = await get(first, headers, "box", name)
            if name not in uncertain:
                assert data == acknowledged[name], name
            for h in c.live():
                assert await get(h, headers, "box", name) == data
            referenced.update(hashlib.sha256(data[i:i + CHUNK]).digest()
                              for i in range(0, len(data), CHUNK))

        def settled() -> bool:
            files = chunk_files(c)
            return set().union(*files.values()) == referenced
        took = await eventually("only referenced chunks are left", settled, 30.0)
        print(f"garbage gone {took:.2f} s after the last request")
        ring = first.services.ring
        files = chunk_files(c)
        for digest in referenced:
            owners = set(ring.replicas_for(digest, 3))
            assert {n for n, held in files.items() if digest in held} == owners, digest.hex()
        assert sum(h.services.collector.collected_total for h in c.live()) > 0
