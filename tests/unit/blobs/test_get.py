"""chunk_span boundaries and BlobStream's pins and slicing."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection

import pytest
import trio

from node.blobs.get import BlobStream, chunk_span
from node.blobs.pins import ChunkPins
from node.errors import ChunkUnavailable
from node.meta.records import Manifest


def make(data: bytes, chunk_size: int) -> tuple[Manifest, dict[bytes, bytes]]:
    pieces = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)]
    store = {hashlib.sha256(p).digest(): p for p in pieces}
    manifest = Manifest("c", "b", len(data), "etag", "t", "now", chunk_size,
                        tuple(hashlib.sha256(p).digest() for p in pieces), 1)
    return manifest, store


def names(manifest: Manifest) -> list[bytes]:
    return list(manifest.chunks)


def test_chunk_span_boundaries() -> None:
    manifest, _ = make(bytes(range(10)), 4)
    c0, c1, c2 = names(manifest)
    assert chunk_span(manifest, 0, 10) == [(c0, 0, 4), (c1, 0, 4), (c2, 0, 2)]
    assert chunk_span(manifest, 0, 1) == [(c0, 0, 1)]
    assert chunk_span(manifest, 3, 4) == [(c0, 3, 4)]
    assert chunk_span(manifest, 3, 5) == [(c0, 3, 4), (c1, 0, 1)]
    assert chunk_span(manifest, 4, 8) == [(c1, 0, 4)]
    assert chunk_span(manifest, 4, 9) == [(c1, 0, 4), (c2, 0, 1)]
    assert chunk_span(manifest, 7, 9) == [(c1, 3, 4), (c2, 0, 1)]
    assert chunk_span(manifest, 8, 10) == [(c2, 0, 2)]
    assert chunk_span(manifest, 9, 10) == [(c2, 1, 2)]
    assert chunk_span(manifest, 5, 5) == []


def test_chunk_span_of_exact_multiple_and_empty_blob() -> None:
    manifest, _ = make(bytes(8), 4)
    assert [(lo, hi) for _, lo, hi in chunk_span(manifest, 0, 8)] == [(0, 4), (0, 4)]
    empty, _ = make(b"", 4)
    assert chunk_span(empty, 0, 0) == []


def test_chunk_span_reassembles_every_range() -> None:
    rng = random.Random(99)
    for _ in range(50):
        chunk_size = rng.randint(1, 9)
        data = rng.randbytes(rng.randint(1, 40))
        manifest, store = make(data, chunk_size)
        for start in range(len(data)):
            for end in range(start + 1, len(data) + 1):
                span = chunk_span(manifest, start, end)
                assert b"".join(store[d][lo:hi] for d, lo, hi in span) == data[start:end]
                assert all(0 <= lo < hi <= chunk_size for _, lo, hi in span)


class Reader:
    def __init__(self, store: dict[bytes, bytes],
                 missing: Collection[bytes] = frozenset()) -> None:
        self.store = store
        self.missing = missing
        self.reads: list[bytes] = []

    async def get(self, digest: bytes) -> bytes:
        await trio.lowlevel.checkpoint()
        self.reads.append(digest)
        if digest in self.missing:
            raise ChunkUnavailable("gone")
        return self.store[digest]


async def read_all(stream: BlobStream) -> bytes:
    return b"".join([piece async for piece in stream.chunks()])


@pytest.mark.parametrize(("start", "end"), [(0, 10), (3, 9), (4, 8), (9, 10), (0, 1)])
async def test_blob_stream(start: int, end: int) -> None:
    data = bytes(range(10))
    manifest, store = make(data, 4)
    pins = ChunkPins()
    reader = Reader(store)
    stream = BlobStream(reader, pins, manifest, start, end)
    await stream.open()
    span = chunk_span(manifest, start, end)
    assert len(pins) == len({d for d, _, _ in span})
    assert reader.reads == [span[0][0]]  # the first chunk is read before headers go out
    assert await read_all(stream) == data[start:end]
    assert len(pins) == 0


async def test_blob_stream_of_empty_blob() -> None:
    manifest, store = make(b"", 4)
    pins = ChunkPins()
    stream = BlobStream(Reader(store), pins, manifest, 0, 0)
    await stream.open()
    assert await read_all(stream) == b""
    assert len(pins) == 0


async def test_failed_open_releases_pins() -> None:
    manifest, store = make(bytes(10), 4)
    pins = ChunkPins()
    stream = BlobStream(Reader(store, missing={manifest.chunks[0]}), pins, manifest, 0, 10)
    with pytest.raises(ChunkUnavailable):
        await stream.open()
    assert len(pins) == 0


async def test_failure_mid_stream_releases_pins() -> None:
    manifest, store = make(bytes(range(12)), 4)
    pins = ChunkPins()
    stream = BlobStream(Reader(store, missing={manifest.chunks[2]}), pins, manifest, 0, 12)
    await stream.open()
    received = []
    with pytest.raises(ChunkUnavailable):
        async for piece in stream.chunks():
            received.append(piece)
    assert received == [bytes(range(4)), bytes(range(4, 8))]
    assert len(pins) == 0


async def test_close_without_iterating_releases_pins() -> None:
    manifest, store = make(bytes(10), 4)
    pins = ChunkPins()
    stream = BlobStream(Reader(store), pins, manifest, 0, 10)
    await stream.open()
    assert len(pins) > 0
    stream.close()
    stream.close()  # idempotent
    assert len(pins) == 0


async def test_a_stream_that_is_never_iterated_releases_its_pins_when_dropped() -> None:
    import gc

    from node.blobs.get import BlobStream
    from node.blobs.pins import ChunkPins
    from node.meta.records import Manifest

    class Reader:
        async def get(self, digest: bytes) -> bytes:
            return b"x" * 4

    pins = ChunkPins()
    manifest = Manifest("c", "b", 8, "e", "t", "now", 4, (b"a" * 32, b"b" * 32), 1)
    stream = BlobStream(Reader(), pins, manifest, 0, 8)
    await stream.open()
    assert len(pins) == 2
    chunks = stream.chunks()
    del stream, chunks
    gc.collect()
    assert len(pins) == 0
