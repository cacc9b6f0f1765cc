"""The PUT pipeline: stream a body into chunks, store them, then commit the manifest.

Memory is bounded by ``(max_chunks_in_flight + 1) * chunk_size`` per upload,
whatever the blob's size: the body is copied once into a chunk-sized buffer,
hashed on a worker thread (hashlib releases the GIL), and handed to a writer
task while the next chunk fills. A full set of writers makes the reader wait,
which (with the server's body backpressure) slows the client down instead of
buffering.

A body of at most ``inline_max`` bytes writes no chunks: it goes into the
manifest's commit itself (see ``node.meta.state``), which saves a small blob
R chunk files, their fsyncs and their transfers.

Visibility: nothing is visible until ``PutBlob`` commits. A failure or
cancellation before that leaves only unreferenced chunks, which the collector
reclaims; pins keep it from reclaiming them while the upload is still live.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import trio

from node.blobs.pins import ChunkPins
from node.errors import BadDigest, InvalidRequest, RequestTimeout, TooLarge


class ChunkWriter(Protocol):
    async def put(self, digest: bytes, data: bytes | bytearray | memoryview) -> None: ...


@dataclass(frozen=True, slots=True)
class StoredBody:
    size: int
    md5_hex: str
    chunks: tuple[bytes, ...]
    #: The whole body, when it is small enough to live in its manifest (no chunks).
    inline: bytes | None = None


def _hash_chunk(md5: "hashlib._Hash", data: memoryview) -> bytes:
    md5.update(data)
    return hashlib.sha256(data).digest()


class BodyStorer:
    """Stores one body's chunks; ``held`` lists the chunks it pinned (unpin after commit)."""

    def __init__(self, writer: ChunkWriter, pins: ChunkPins, *, chunk_size: int,
                 max_in_flight: int, idle_timeout_s: float, inline_max: int = 0,
                 max_size: int | None = None, min_bytes_per_s: float = 0.0) -> None:
        self._writer = writer
        self._max_size = max_size
        #: A body slower than this on average, once ``idle_timeout_s`` has passed, is cut
        #: off: a client trickling bytes cannot hold a connection and a buffer for ever.
        self._min_bytes_per_s = min_bytes_per_s
        self._inline_max = inline_max
        self._pins = pins
        self._chunk_size = chunk_size
        self._slots = trio.Semaphore(max_in_flight)
        self._idle_timeout_s = idle_timeout_s
        self._md5 = hashlib.md5()
        self._order: list[bytes] = []
        self.held: list[bytes] = []

    def release(self) -> None:
        for digest in self.held:
            self._pins.unpin(digest)
        self.held.clear()

    async def store(self, body: AsyncIterator[bytes], expected_size: int | None,
                    content_md5: bytes | None) -> StoredBody:
        size = 0
        iterator = body.__aiter__()
        started = trio.current_time()
        # A declared length that fits inline fills its buffer exactly: it must not be cut.
        whole = expected_size is not None and expected_size <= self._inline_max
        async with trio.open_nursery() as nursery:
            buffer, fill = self._buffer(expected_size, 0), 0
            while (piece := await self._next_piece(iterator)) is not None:
                size += len(piece)
                if expected_size is not None and size > expected_size:
                    raise InvalidRequest("body longer than Content-Length")
                if self._max_size is not None and size > self._max_size:
                    raise TooLarge(f"blobs are limited to {self._max_size} bytes")
                self._check_pace(size, trio.current_time() - started)
                view = memoryview(piece)
                while view:
                    take = min(len(view), len(buffer) - fill)
                    buffer[fill:fill + take] = view[:take]
                    fill += take
                    view = view[take:]
                    if fill == len(buffer) and not whole:
                        await self._dispatch(nursery, memoryview(buffer))
                        buffer, fill = self._buffer(expected_size, size - len(view)), 0
            inline = None
            if 0 < fill <= self._inline_max and not self._order:
                inline = bytes(buffer[:fill])  # the whole body, and small: no chunks at all
                self._md5.update(inline)
            elif fill:
                await self._dispatch(nursery, memoryview(buffer)[:fill])
        if expected_size is not None and size != expected_size:
            raise InvalidRequest(f"body has {size} bytes, Content-Length said {expected_size}")
        if content_md5 is not None and content_md5 != self._md5.digest():
            raise BadDigest("Content-MD5 does not match the body")
        return StoredBody(size, self._md5.hexdigest(), tuple(self._order), inline)

    def _buffer(self, expected_size: int | None, stored: int) -> bytearray:
        """The next chunk's buffer: a whole chunk, or only what a declared length has left.

        Allocating (and zeroing) a full chunk for a 4 KiB body cost more CPU than
        the rest of a small PUT.
        """
        if expected_size is None:
            return bytearray(self._chunk_size)
        return bytearray(min(self._chunk_size, expected_size - stored))

    def _check_pace(self, size: int, elapsed_s: float) -> None:
        if self._min_bytes_per_s and elapsed_s > self._idle_timeout_s and \
                size < self._min_bytes_per_s * elapsed_s:
            raise RequestTimeout(f"the body arrives slower than {self._min_bytes_per_s:g} "
                                 "bytes a second; upload abandoned")

    async def _next_piece(self, iterator: AsyncIterator[bytes]) -> bytes | None:
        """The next body piece, None at the end; RequestTimeout if the client stalls."""
        with trio.move_on_after(self._idle_timeout_s):
            try:
                return await iterator.__anext__()
            except StopAsyncIteration:
                return None
        raise RequestTimeout(f"no body bytes for {self._idle_timeout_s:g} s; upload abandoned")

    async def _dispatch(self, nursery: trio.Nursery, data: memoryview) -> None:
        digest = await trio.to_thread.run_sync(_hash_chunk, self._md5, data)
        self._order.append(digest)
        self._pins.pin(digest)
        self.held.append(digest)
        await self._slots.acquire()
        nursery.start_soon(self._write, digest, data)

    async def _write(self, digest: bytes, data: memoryview) -> None:
        try:
            await self._writer.put(digest, data)
        finally:
            self._slots.release()


def decode_content_md5(header: str | None) -> bytes | None:
    if header is None:
        return None
    try:
        digest = base64.b64decode(header.strip(), validate=True)
    except ValueError:
        raise InvalidRequest("Content-MD5 is not base64") from None
    if len(digest) != 16:
        raise InvalidRequest("Content-MD5 is not a 128-bit digest")
    return digest
