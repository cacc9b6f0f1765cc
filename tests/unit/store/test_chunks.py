"""ChunkStore on a real temporary directory."""

from __future__ import annotations

import array
import ctypes
import errno
import mmap
import os
import sys
from pathlib import Path

import pytest
import trio

from node.errors import ChunkCorrupt, ChunkUnavailable, InsufficientStorage
from node.store.chunks import ChunkStore, chunk_id, hex_id, map_os_error


async def opened(root: Path, cls: type[ChunkStore] = ChunkStore, fsync: bool = True) -> ChunkStore:
    store = cls(root, fsync=fsync)
    await store.open()
    return store


async def put(store: ChunkStore, data: bytes) -> bytes:
    digest = chunk_id(data)
    await store.put(digest, data)
    return digest


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("fsync", [True, False])
async def test_round_trip(tmp_path: Path, fsync: bool) -> None:
    store = await opened(tmp_path, fsync=fsync)
    data = os.urandom(300_000)
    digest = await put(store, data)
    assert await store.get(digest) == data
    assert await store.has(digest)
    assert (store.count, store.bytes) == (1, len(data))
    name = hex_id(digest)
    assert store.path_for(digest) == tmp_path / "chunks" / name[:2] / name
    assert files_in(tmp_path / "tmp") == []


async def test_a_verified_put_refuses_bytes_that_do_not_match_and_stores_nothing(
        tmp_path: Path) -> None:
    store = await opened(tmp_path)
    data = os.urandom(70_000)
    with pytest.raises(ChunkCorrupt):
        await store.put(chunk_id(data), data[:-1] + b"x", verify=True)
    assert (store.count, store.bytes) == (0, 0) and not await store.has(chunk_id(data))
    assert files_in(tmp_path / "tmp") == []
    await store.put(chunk_id(data), memoryview(data), verify=True)
    assert await store.get(chunk_id(data)) == data


async def test_put_accepts_bytearray_memoryview_and_empty(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    words = array.array("I", [1, 2, 3])  # a non-byte view must be written as its raw bytes
    for data in (bytearray(b"abc"), memoryview(b"defg"), memoryview(words), b""):
        digest = chunk_id(data)
        await store.put(digest, data)
        assert await store.get(digest) == bytes(data)
    assert (store.count, store.bytes) == (4, 7 + words.itemsize * 3)


def resident_pages(path: Path) -> tuple[int, int]:
    """(pages of the file in the page cache, pages in all), asked of the kernel by mincore."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    vector = (ctypes.c_ubyte * pages)()
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            if libc.mincore(address, size, vector) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
        finally:
            libc.munmap(address, size)
    finally:
        os.close(fd)
    return sum(byte & 1 for byte in vector), pages


@pytest.mark.skipif(sys.platform != "linux", reason="posix_fadvise and mincore are Linux's")
async def test_only_client_reads_keep_a_chunk_in_the_page_cache(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    data = os.urandom(1 << 20)
    digest = await put(store, data)
    path = store.path_for(digest)
    pages = resident_pages(path)[1]
    few = pages // 10

    def cached() -> int:
        return resident_pages(path)[0]

    assert cached() <= few, f"{cached()} pages still cached after the put"
    assert await store.get(digest) == data
    assert cached() == pages  # a client's read: the chunk stays warm
    assert await store.get(digest, cache=False) == data
    assert cached() <= few, "a read for the healer kept the chunk cached"
    assert await store.get(digest) == data and cached() > few
    assert await store.verify(digest)
    assert cached() <= few, "a scrubber's check kept the chunk cached"


async def test_reput_does_not_double_count(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    digest = await put(store, b"hello")
    await store.put(digest, b"hello")
    assert (store.count, store.bytes) == (1, 5)


async def test_concurrent_puts_of_one_chunk_count_once(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    data = os.urandom(50_000)
    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(store.put, chunk_id(data), data)
    assert (store.count, store.bytes) == (1, len(data))


async def test_delete(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    a = await put(store, b"a" * 10)
    b = await put(store, b"b" * 20)
    assert await store.delete(a) is True
    assert await store.delete(a) is False
    assert not await store.has(a)
    assert store.delete_sync(b) is True
    assert store.delete_sync(b) is False
    assert (store.count, store.bytes) == (0, 0)


async def test_missing_is_unavailable_not_corrupt(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    with pytest.raises(ChunkUnavailable) as info:
        await store.get(chunk_id(b"never stored"))
    assert type(info.value) is ChunkUnavailable
    assert not await store.has(chunk_id(b"never stored"))


async def test_corrupt_chunk_is_quarantined(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    data = os.urandom(4096)
    digest = await put(store, data)
    path = store.path_for(digest)
    flipped = bytearray(path.read_bytes())
    flipped[1234] ^= 0x01
    path.write_bytes(flipped)

    with pytest.raises(ChunkCorrupt):
        await store.get(digest)
    assert not path.exists()
    assert files_in(tmp_path / "quarantine") == [f"{hex_id(digest)}.0"]
    assert (tmp_path / "quarantine" / f"{hex_id(digest)}.0").read_bytes() == flipped
    assert store.corrupt_found == 1
    assert (store.count, store.bytes) == (0, 0)
    with pytest.raises(ChunkUnavailable) as info:
        await store.get(digest)
    assert type(info.value) is ChunkUnavailable

    await store.put(digest, data)  # repaired from a replica
    assert await store.get(digest) == data


async def test_quarantine_keeps_every_copy(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    digest = chunk_id(b"good")
    for bad in (b"bad1", b"bad2"):
        await store.put(digest, bad)
        assert await store.verify(digest) is False
    assert files_in(tmp_path / "quarantine") == [f"{hex_id(digest)}.0", f"{hex_id(digest)}.1"]
    assert store.corrupt_found == 2


async def test_verify(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    digest = await put(store, b"scrub me")
    assert await store.verify(digest) is True
    store.path_for(digest).write_bytes(b"scrub me!")
    assert await store.verify(digest) is False
    assert store.corrupt_found == 1
    with pytest.raises(ChunkUnavailable):
        await store.verify(digest)


async def test_stale_temp_files_cleaned_on_reopen(tmp_path: Path) -> None:
    await opened(tmp_path)
    stale = tmp_path / "tmp" / "deadbeef.0123456789abcdef"
    stale.write_bytes(b"half a chunk")
    store = await opened(tmp_path)
    assert files_in(tmp_path / "tmp") == []
    assert (store.count, store.bytes) == (0, 0)


async def test_accounting_restored_on_reopen(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    for i in range(5):
        await put(store, bytes([i]) * (i + 1))
    await store.delete(chunk_id(b"\x00"))
    again = await opened(tmp_path)
    assert (again.count, again.bytes) == (store.count, store.bytes) == (4, 2 + 3 + 4 + 5)


async def test_scan_lists_chunks_and_ignores_junk(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    digests = {await put(store, bytes([i]) * 100) for i in range(3)}
    some = store.path_for(next(iter(digests))).parent
    (some / "notes.txt").write_text("junk")
    (some / hex_id(next(iter(digests))).upper()).write_text("upper-case junk")
    misplaced = hex_id(chunk_id(b"elsewhere"))
    (some / misplaced).write_text("right name, wrong directory")
    (tmp_path / "chunks" / "zz").mkdir()
    (tmp_path / "chunks" / "stray").write_text("junk")

    found = await store.scan()
    assert {d for d, _, _ in found} == digests
    for digest, mtime, size in found:
        st = store.path_for(digest).stat()
        assert (mtime, size) == (st.st_mtime, 100)


@pytest.mark.parametrize("bad", [b"", b"x" * 31, b"x" * 33, "a" * 64, bytearray(32)])
async def test_bad_digest_is_rejected(tmp_path: Path, bad: object) -> None:
    store = await opened(tmp_path)
    with pytest.raises(ValueError):
        store.path_for(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await store.put(bad, b"")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await store.get(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.delete_sync(bad)  # type: ignore[arg-type]


async def test_use_before_open_is_refused(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path)
    with pytest.raises(RuntimeError):
        await store.put(chunk_id(b"x"), b"x")
    with pytest.raises(RuntimeError):
        store.delete_sync(chunk_id(b"x"))


class FullDisk(ChunkStore):
    """Writes a little, then the disk is full."""

    def _os_write(self, fd: int, view: memoryview) -> int:
        if os.fstat(fd).st_size >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, view[:3])


class ShortWrites(ChunkStore):
    """The kernel may accept less than asked; every byte must still land."""

    def _os_write(self, fd: int, view: memoryview) -> int:
        return os.write(fd, view[:7])


async def test_full_disk_is_insufficient_storage_and_leaves_nothing(tmp_path: Path) -> None:
    store = await opened(tmp_path, FullDisk)
    digest = chunk_id(b"does not fit")
    with pytest.raises(InsufficientStorage):
        await store.put(digest, b"does not fit")
    assert not store.path_for(digest).exists()
    assert files_in(tmp_path / "tmp") == []
    assert (store.count, store.bytes) == (0, 0)


async def test_short_writes_are_completed(tmp_path: Path) -> None:
    store = await opened(tmp_path, ShortWrites)
    data = os.urandom(1000)
    digest = await put(store, data)
    assert await store.get(digest) == data


def test_map_os_error() -> None:
    for code in (errno.ENOSPC, errno.EDQUOT):
        assert isinstance(map_os_error(OSError(code, "full")), InsufficientStorage)
    other = OSError(errno.EIO, "io")
    assert map_os_error(other) is other
