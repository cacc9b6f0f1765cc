"""BodyStorer with an in-memory chunk writer: chunking, digests, limits, timeouts, pins."""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import AsyncIterator, Iterable

import pytest
import trio
import trio.testing

from node.blobs.pins import ChunkPins
from node.blobs.put import BodyStorer, StoredBody, decode_content_md5
from node.errors import (BadDigest, BlobstoreError, InsufficientStorage, InvalidRequest,
                         RequestTimeout)

EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"


class MemoryWriter:
    """Records every put; optionally blocks each put until ``gate`` is set."""

    def __init__(self, gate: trio.Event | None = None, fail_after: int | None = None) -> None:
        self.puts: list[tuple[bytes, bytes]] = []
        self.gate = gate
        self.fail_after = fail_after
        self.active = 0
        self.peak = 0
        self.started = 0

    async def put(self, digest: bytes, data: bytes | bytearray | memoryview) -> None:
        copied = bytes(data)  # the caller's buffer is only ours until we return
        self.started += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.fail_after is not None and self.started > self.fail_after:
                raise InsufficientStorage("disk full")
            if self.gate is not None:
                await self.gate.wait()
            else:
                await trio.lowlevel.checkpoint()
            assert hashlib.sha256(copied).digest() == digest
            self.puts.append((digest, copied))
        finally:
            self.active -= 1


class Body:
    """A request body as an async iterator (not an async generator, which trio would warn
    about when a failed upload leaves it unfinished)."""

    def __init__(self, pieces: Iterable[bytes], delay: float = 0.0,
                 endless: bytes | None = None) -> None:
        self._pieces = iter(pieces)
        self._delay = delay
        self._endless = endless
        self.consumed = 0

    def __aiter__(self) -> Body:
        return self

    async def __anext__(self) -> bytes:
        if self._delay:
            await trio.sleep(self._delay)
        else:
            await trio.lowlevel.checkpoint()
        if self._endless is not None:
            self.consumed += 1
            return self._endless
        try:
            piece = next(self._pieces)
        except StopIteration:
            raise StopAsyncIteration from None
        self.consumed += 1
        return piece


def body_of(pieces: Iterable[bytes], delay: float = 0.0) -> Body:
    return Body(pieces, delay)


def storer(writer: MemoryWriter, pins: ChunkPins | None = None, *, chunk_size: int = 4,
           max_in_flight: int = 3, idle_timeout_s: float = 60.0,
           inline_max: int = 0) -> BodyStorer:
    return BodyStorer(writer, pins if pins is not None else ChunkPins(), chunk_size=chunk_size,
                      max_in_flight=max_in_flight, idle_timeout_s=idle_timeout_s,
                      inline_max=inline_max)


def domain_error(exc: BaseException) -> BaseException:
    """The one error inside (possibly nested) exception groups, as the API layer sees it."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def failure(storer_: BodyStorer, body: AsyncIterator[bytes], size: int | None,
                  md5: bytes | None = None) -> BaseException:
    try:
        await storer_.store(body, size, md5)
    except BaseException as exc:  # noqa: BLE001 - inspected by the caller
        return domain_error(exc)
    raise AssertionError("store() succeeded")


def expected_chunks(data: bytes, chunk_size: int) -> list[bytes]:
    return [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)]


def split_randomly(rng: random.Random, data: bytes) -> list[bytes]:
    pieces, i = [], 0
    while i < len(data):
        n = rng.choice([0, 1, 2, 3, 5, 8, 13])
        pieces.append(data[i:i + n])
        i += n
    return pieces


@pytest.mark.parametrize(("size", "pieces"), [
    (10, [10]), (10, [1] * 10), (10, [3, 3, 4]), (8, [8]), (8, [4, 4]), (4, [4]), (1, [1]),
    (3, [0, 3, 0]), (13, [2, 9, 2]),
])
async def test_chunk_boundaries(size: int, pieces: list[int]) -> None:
    data = bytes(range(size))
    cuts, i = [], 0
    for n in pieces:
        cuts.append(data[i:i + n])
        i += n
    writer = MemoryWriter()
    stored = await storer(writer).store(body_of(cuts), size, None)
    chunks = expected_chunks(data, 4)
    assert stored == StoredBody(size, hashlib.md5(data).hexdigest(),
                                tuple(hashlib.sha256(ch).digest() for ch in chunks))
    assert sorted(writer.puts) == sorted((hashlib.sha256(ch).digest(), ch) for ch in chunks)


async def test_random_bodies_and_splits() -> None:
    seed = 4242
    rng = random.Random(seed)
    for _ in range(40):
        chunk_size = rng.randint(1, 16)
        data = rng.randbytes(rng.randint(0, 120))
        writer = MemoryWriter()
        pins = ChunkPins()
        s = storer(writer, pins, chunk_size=chunk_size, max_in_flight=rng.randint(1, 4))
        stored = await s.store(body_of(split_randomly(rng, data)),
                               len(data) if rng.random() < 0.5 else None, None)
        chunks = expected_chunks(data, chunk_size)
        assert stored.size == len(data), seed
        assert stored.md5_hex == hashlib.md5(data).hexdigest(), seed
        assert stored.chunks == tuple(hashlib.sha256(ch).digest() for ch in chunks), seed
        assert sorted(d for d, _ in writer.puts) == sorted(stored.chunks), seed
        assert b"".join(dict(writer.puts)[d] for d in stored.chunks) == data, seed
        assert s.held == list(stored.chunks)
        s.release()
        assert len(pins) == 0


async def test_empty_body() -> None:
    writer = MemoryWriter()
    pins = ChunkPins()
    s = storer(writer, pins)
    stored = await s.store(body_of([]), 0, None)
    assert stored == StoredBody(0, EMPTY_MD5, ())
    assert writer.puts == []
    assert s.held == [] and len(pins) == 0
    stored = await storer(writer).store(body_of([b"", b""]), None, None)
    assert stored == StoredBody(0, EMPTY_MD5, ())


@pytest.mark.parametrize("declared", [True, False])
async def test_a_small_body_is_kept_inline_and_writes_no_chunk(declared: bool) -> None:
    writer = MemoryWriter()
    pins = ChunkPins()
    s = storer(writer, pins, chunk_size=64, inline_max=16)
    data = b"sixteen bytes!!!"
    stored = await s.store(body_of([data[:5], data[5:]]), len(data) if declared else None,
                           hashlib.md5(data).digest())
    assert stored == StoredBody(16, hashlib.md5(data).hexdigest(), (), data)
    assert writer.puts == [] and s.held == [] and len(pins) == 0


@pytest.mark.parametrize("size", [17, 64, 65, 200])
async def test_a_body_over_inline_max_goes_to_chunks(size: int) -> None:
    writer = MemoryWriter()
    data = bytes(range(size % 256)) * (size // 256 + 1)
    data = data[:size]
    stored = await storer(writer, chunk_size=64, inline_max=16).store(
        body_of([data]), None, None)
    assert stored.inline is None and b"".join(
        dict(writer.puts)[d] for d in stored.chunks) == data


async def test_an_empty_body_is_neither_inline_nor_chunked() -> None:
    stored = await storer(MemoryWriter(), inline_max=16).store(body_of([]), 0, None)
    assert stored == StoredBody(0, EMPTY_MD5, (), None)


async def test_a_small_body_with_a_bad_md5_is_refused() -> None:
    exc = await failure(storer(MemoryWriter(), chunk_size=64, inline_max=16),
                        body_of([b"abc"]), 3, hashlib.md5(b"abd").digest())
    assert isinstance(exc, BadDigest)


async def test_accepts_bytearray_and_memoryview_pieces() -> None:
    writer = MemoryWriter()
    # Not bytes, the declared piece type, on purpose: any bytes-like piece is taken.
    stored = await storer(writer).store(body_of(
        [bytearray(b"abc"), memoryview(b"defgh"), b"ij"]), 10, None)  # type: ignore[list-item]
    assert stored.md5_hex == hashlib.md5(b"abcdefghij").hexdigest()
    assert b"".join(dict(writer.puts)[d] for d in stored.chunks) == b"abcdefghij"


async def test_repeated_chunks_are_listed_in_order() -> None:
    writer = MemoryWriter()
    pins = ChunkPins()
    s = storer(writer, pins)
    stored = await s.store(body_of([b"aaaabbbbaaaa"]), 12, None)
    a, b = hashlib.sha256(b"aaaa").digest(), hashlib.sha256(b"bbbb").digest()
    assert stored.chunks == (a, b, a)
    assert len(pins) == 2
    s.release()
    assert len(pins) == 0


async def test_body_shorter_than_content_length() -> None:
    error = await failure(storer(MemoryWriter()), body_of([b"abc"]), 4)
    assert type(error) is InvalidRequest


async def test_body_longer_than_content_length() -> None:
    error = await failure(storer(MemoryWriter()), body_of([b"abc", b"de"]), 4)
    assert type(error) is InvalidRequest


async def test_body_longer_stops_reading_early() -> None:
    endless = Body([], endless=b"x" * 4)
    error = await failure(storer(MemoryWriter()), endless, 10)
    assert type(error) is InvalidRequest
    assert endless.consumed == 3


async def test_content_md5() -> None:
    data = b"hello world"
    good = hashlib.md5(data).digest()
    stored = await storer(MemoryWriter()).store(body_of([data]), len(data), good)
    assert stored.md5_hex == good.hex()
    bad = hashlib.md5(b"other").digest()
    error = await failure(storer(MemoryWriter()), body_of([data]), len(data), bad)
    assert isinstance(error, BadDigest) and error.status == 400
    error = await failure(storer(MemoryWriter()), body_of([]), 0, bad)
    assert isinstance(error, BadDigest)


async def test_writer_failure_propagates() -> None:
    error = await failure(storer(MemoryWriter(fail_after=1)), body_of([bytes(20)]), 20)
    assert isinstance(error, InsufficientStorage)


async def test_idle_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async def stalls() -> AsyncIterator[bytes]:
        yield b"abc"
        await trio.sleep_forever()
        yield b"never"  # pragma: no cover

    start = trio.current_time()
    error = await failure(storer(MemoryWriter(), idle_timeout_s=60.0), stalls(), None)
    assert isinstance(error, RequestTimeout) and error.status == 408
    assert trio.current_time() - start == pytest.approx(60.0)


async def test_idle_timeout_before_first_byte(autojump_clock: trio.testing.MockClock) -> None:
    async def silent() -> AsyncIterator[bytes]:
        await trio.sleep_forever()
        yield b""  # pragma: no cover

    error = await failure(storer(MemoryWriter(), idle_timeout_s=5.0), silent(), 10)
    assert isinstance(error, RequestTimeout)


async def test_slow_but_steady_body_is_not_timed_out(
        autojump_clock: trio.testing.MockClock) -> None:
    data = bytes(range(7)) * 3
    start = trio.current_time()
    stored = await storer(MemoryWriter(), idle_timeout_s=60.0).store(
        body_of([data[i:i + 3] for i in range(0, len(data), 3)], delay=59.0), len(data), None)
    assert stored.size == len(data)
    # Seven pieces and the end of the body, each 59 s apart: the timeout is per wait.
    assert trio.current_time() - start == pytest.approx(59.0 * 8)


@pytest.mark.parametrize("max_in_flight", [1, 2, 3])
async def test_writes_in_flight_are_bounded(max_in_flight: int) -> None:
    gate = trio.Event()
    writer = MemoryWriter(gate=gate)
    body = Body([bytes([i]) * 4 for i in range(10)])
    result: list[StoredBody] = []

    async def run() -> None:
        result.append(await storer(writer, max_in_flight=max_in_flight).store(body, 40, None))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        with trio.fail_after(5):
            while writer.active < max_in_flight:
                await trio.sleep(0.001)
        await trio.sleep(0.05)  # give a misbehaving storer time to start more writes
        assert writer.active == max_in_flight
        # The reader waits too: one chunk filled beyond those being written, no more.
        assert body.consumed == max_in_flight + 1
        gate.set()
    assert writer.peak == max_in_flight
    assert len(writer.puts) == 10
    assert result[0].size == 40


async def test_pins_held_until_release() -> None:
    pins = ChunkPins()
    writer = MemoryWriter()
    s = storer(writer, pins)
    data = bytes(range(12))
    stored = await s.store(body_of([data]), 12, None)
    assert len(pins) == 3
    pins.begin_step(0.0)
    assert not any(pins.collectable(d) for d in stored.chunks)
    s.release()
    assert len(pins) == 0 and s.held == []
    s.release()  # idempotent
    assert len(pins) == 0


async def test_pins_are_taken_before_the_write() -> None:
    pins = ChunkPins()
    seen: list[bool] = []

    class Checking(MemoryWriter):
        async def put(self, digest: bytes, data: bytes | bytearray | memoryview) -> None:
            pins.begin_step(0.0)
            seen.append(not pins.collectable(digest))
            await super().put(digest, data)

    await storer(Checking(), pins).store(body_of([bytes(range(9))]), 9, None)
    assert seen == [True, True, True]


async def test_pins_held_after_failure_until_release() -> None:
    pins = ChunkPins()
    s = storer(MemoryWriter(), pins)
    error = await failure(s, body_of([bytes(range(8))]), 8, hashlib.md5(b"x").digest())
    assert isinstance(error, BadDigest)
    assert len(pins) == 2  # the caller still owns them
    s.release()
    assert len(pins) == 0


def test_decode_content_md5() -> None:
    digest = hashlib.md5(b"x").digest()
    encoded = base64.b64encode(digest).decode()
    assert decode_content_md5(None) is None
    assert decode_content_md5(encoded) == digest
    assert decode_content_md5(f"  {encoded} ") == digest


@pytest.mark.parametrize("header", ["", "not base64!", "abc", base64.b64encode(b"short").decode(),
                                    base64.b64encode(bytes(17)).decode(),
                                    hashlib.md5(b"x").hexdigest()])
def test_decode_content_md5_rejects(header: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        decode_content_md5(header)
    assert isinstance(info.value, BlobstoreError)
