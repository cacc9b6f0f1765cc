"""The GET pipeline: the chunks of a byte span of a blob, verified, in order.

Every chunk is verified against its SHA-256 name by the chunk source before a
byte of it is sent. The first chunk is fetched before the response headers go
out, so a missing or corrupt first chunk is a clean 503; a bad chunk later in
the stream aborts the connection (the client sees fewer bytes than
Content-Length promised), because sending unverified bytes is never an option.
The span's chunks are pinned until the stream ends, so an overwrite or delete
racing the download cannot have them collected mid-stream. If the response is
never iterated (the client left before the body was sent), the pins are
released when the stream object is dropped, so they cannot leak.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from typing import Protocol

from node.blobs.pins import ChunkPins
from node.meta.records import Manifest


class ChunkReader(Protocol):
    async def get(self, digest: bytes) -> bytes: ...


def chunk_span(manifest: Manifest, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(digest, offset in chunk, end in chunk) for each chunk overlapping ``[start, end)``."""
    size = manifest.chunk_size
    pieces = []
    for index in range(start // size, (end - 1) // size + 1 if end > start else 0):
        chunk_start = index * size
        pieces.append((manifest.chunks[index], max(start, chunk_start) - chunk_start,
                       min(end, chunk_start + size) - chunk_start))
    return pieces


def _unpin_all(pins: ChunkPins, digests: list[bytes]) -> None:
    for digest in digests:
        pins.unpin(digest)


class BlobStream:
    """Opened (first chunk read, pins held) before the response; iterated by the server."""

    def __init__(self, reader: ChunkReader, pins: ChunkPins, manifest: Manifest,
                 start: int, end: int) -> None:
        self._reader = reader
        self._pins = pins
        self._span = chunk_span(manifest, start, end)
        self._first: bytes | None = None
        digests = [digest for digest, _, _ in self._span]
        for digest in digests:
            pins.pin(digest)
        self._release = weakref.finalize(self, _unpin_all, pins, digests)

    async def open(self) -> None:
        try:
            if self._span:
                self._first = await self._piece(0)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the pins (idempotent)."""
        self._release()

    async def _piece(self, index: int) -> bytes:
        digest, lo, hi = self._span[index]
        data = await self._reader.get(digest)
        if hi - lo != len(data):
            return data[lo:hi]
        return data

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            if self._first is not None:
                first, self._first = self._first, None
                yield first
            for index in range(1, len(self._span)):
                yield await self._piece(index)
        finally:
            self.close()
