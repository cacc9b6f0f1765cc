"""Chunks of failed uploads, overwrites and deletes are reclaimed; referenced ones never are.

Tests that store blobs small enough to live in their manifests set ``inline_max=0``, so
those blobs have chunks to collect."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from node.testing.inprocess import running_node

CHUNK = 64 * 1024


async def test_failed_upload_leaves_nothing_and_its_chunks_are_collected(tmp_path: Path) -> None:
    async with running_node(tmp_path / "n", chunk_size=CHUNK, gc_grace_s=0) as node:
        admin = await node.admin_headers()
        await node.client.post("/create_container", json={"container": "box"}, headers=admin)
        body = os.urandom(3 * CHUNK + 10)
        wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
        r = await node.put_blob("box", "b", body, admin, **{"Content-MD5": wrong_md5})
        assert r.status_code == 400
        assert (await r.get_json())["error"]["code"] == "BadDigest"
        chunks = node.services.chunks
        assert chunks.count == 4, "the chunks were written before the digest was known"
        r = await node.client.get("/list_blobs?container=box", headers=admin)
        assert (await r.get_json())["blobs"] == []
        assert await node.services.collector.collect_once() == 4
        assert chunks.count == 0


async def test_overwritten_and_deleted_blobs_release_only_unshared_chunks(tmp_path: Path) -> None:
    async with running_node(tmp_path / "n", chunk_size=CHUNK, gc_grace_s=0,
                            inline_max=0) as node:
        admin = await node.admin_headers()
        await node.client.post("/create_container", json={"container": "box"}, headers=admin)
        shared = os.urandom(CHUNK)
        first = shared + os.urandom(CHUNK)
        assert (await node.put_blob("box", "a", first, admin)).status_code == 201
        assert (await node.put_blob("box", "copy", shared, admin)).status_code == 201
        chunks = node.services.chunks
        assert chunks.count == 2
        assert await node.services.collector.collect_once() == 0

        assert (await node.put_blob("box", "a", b"small", admin)).status_code == 201
        assert await node.services.collector.collect_once() == 1, "only the unshared chunk"
        r = await node.client.get("/get_data?container=box&blob=copy", headers=admin)
        assert await r.get_data() == shared

        r = await node.client.delete("/delete_data?container=box&blob=copy", headers=admin)
        assert r.status_code == 204
        assert await node.services.collector.collect_once() == 1
        r = await node.client.get("/get_data?container=box&blob=a", headers=admin)
        assert await r.get_data() == b"small"
        assert chunks.count == 1


async def test_young_chunks_wait_for_the_grace_period(tmp_path: Path) -> None:
    async with running_node(tmp_path / "n", chunk_size=CHUNK, inline_max=0) as node:
        admin = await node.admin_headers()
        await node.client.post("/create_container", json={"container": "box"}, headers=admin)
        await node.put_blob("box", "a", os.urandom(100), admin)
        await node.client.delete("/delete_data?container=box&blob=a", headers=admin)
        assert await node.services.collector.collect_once() == 0
        assert node.services.chunks.count == 1
