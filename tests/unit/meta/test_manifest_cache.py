"""ManifestCache: bounded, least recently used out, and never staler than the applied state."""

from __future__ import annotations

import trio
import trio.testing

from node.meta.manifest_cache import ENTRY_OVERHEAD, ManifestCache
from node.meta.records import Manifest

ABSENT = (None, None)


def manifest(blob: str, version: int, chunks: int = 0) -> Manifest:
    return Manifest("c", blob, 10, "e", "t", "2026-01-01T00:00:00.000Z", 4,
                    tuple(bytes([i]) * 32 for i in range(chunks)), version)


async def test_a_hit_does_not_load_and_a_miss_loads_once() -> None:
    cache = ManifestCache(1 << 20)
    loads = 0

    async def load() -> tuple[Manifest | None, bytes | None]:
        nonlocal loads
        loads += 1
        return manifest("a", 1), b"x"

    assert await cache.read(("c", "a"), load) == (manifest("a", 1), b"x")
    assert await cache.read(("c", "a"), load) == (manifest("a", 1), b"x")
    assert loads == 1 and (cache.hits, cache.misses) == (1, 1)


async def test_absent_blobs_are_remembered_until_a_put() -> None:
    cache = ManifestCache(1 << 20)

    async def nothing() -> tuple[Manifest | None, bytes | None]:
        return ABSENT

    assert await cache.read(("c", "a"), nothing) == ABSENT
    cache.changed(("c", "a"), (manifest("a", 7), None))
    assert await cache.read(("c", "a"), nothing) == (manifest("a", 7), None)
    cache.changed(("c", "a"), ABSENT)
    assert await cache.read(("c", "a"), nothing) == ABSENT


async def test_a_read_that_raced_a_change_keeps_nothing(
        autojump_clock: trio.testing.MockClock) -> None:
    """The read loaded the old manifest while an apply replaced it: the cache must keep the
    new one (or nothing), never the old one, or later reads would go back in time."""
    cache = ManifestCache(1 << 20)
    released = trio.Event()

    async def slow_old() -> tuple[Manifest | None, bytes | None]:
        await released.wait()
        return manifest("a", 1), None

    async def never() -> tuple[Manifest | None, bytes | None]:
        raise AssertionError("should be cached")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cache.read, ("c", "a"), slow_old)
        await trio.testing.wait_all_tasks_blocked()
        cache.changed(("c", "a"), ABSENT)  # deleted while the read was in sqlite
        released.set()
    assert await cache.read(("c", "a"), never) == ABSENT

    cache.clear()
    async with trio.open_nursery() as nursery:
        released = trio.Event()
        nursery.start_soon(cache.read, ("c", "b"), slow_old)
        await trio.testing.wait_all_tasks_blocked()
        cache.changed(("c", "other"), ABSENT)  # any change: the read cannot tell
        released.set()
    assert len(cache) == 1  # only "other"


async def test_bytes_are_bounded_and_least_recently_used_go_first() -> None:
    per = ENTRY_OVERHEAD + 2 + 1000
    cache = ManifestCache(3 * per)
    for name in ("a", "b", "c"):
        cache.changed(("c", name), (manifest(name, 1), b"x" * 1000))
    assert cache.bytes == 3 * per

    async def never() -> tuple[Manifest | None, bytes | None]:
        raise AssertionError("should be cached")

    await cache.read(("c", "a"), never)  # a is now the most recent
    cache.changed(("c", "d"), (manifest("d", 1), b"x" * 1000))
    assert sorted(k[1] for k in cache._entries) == ["a", "c", "d"]
    assert cache.bytes == 3 * per
    cache.changed(("c", "huge"), (manifest("huge", 1), b"x" * (4 * per)))
    assert ("c", "huge") not in cache._entries and cache.bytes <= 3 * per
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0


def test_a_zero_sized_cache_keeps_nothing() -> None:
    cache = ManifestCache(0)
    cache.changed(("c", "a"), (manifest("a", 1), None))
    assert len(cache) == 0 and cache.bytes == 0
