"""ChunkCollector with in-memory fakes: what it deletes, and the races pins close."""

from __future__ import annotations

import trio
import trio.testing

from node.blobs.gc import BATCH, ChunkCollector
from node.blobs.pins import ChunkPins
from node.clock import ManualClock
from node.errors import Unavailable

GRACE = 3600.0


def d(n: int) -> bytes:
    return n.to_bytes(32, "big")


class MemoryStore:
    def __init__(self) -> None:
        self.chunks: dict[bytes, tuple[float, int]] = {}
        self.scans = 0
        self.fail_scans = 0

    def add(self, digest: bytes, mtime: float, size: int = 100) -> None:
        self.chunks[digest] = (mtime, size)

    async def scan(self) -> list[tuple[bytes, float, int]]:
        await trio.lowlevel.checkpoint()
        self.scans += 1
        if self.fail_scans:
            self.fail_scans -= 1
            raise OSError("disk went away")
        return [(digest, mtime, size) for digest, (mtime, size) in self.chunks.items()]

    def delete_sync(self, digest: bytes) -> bool:
        return self.chunks.pop(digest, None) is not None


class Metadata:
    """The local unreferenced filter and the coordinator's condemnation; ``gate`` lets a
    test act while a condemnation is in flight."""

    def __init__(self) -> None:
        self.referenced: set[bytes] = set()
        self.calls: list[list[bytes]] = []
        self.condemned: list[list[bytes]] = []
        self.entered = trio.Event()
        self.gate: trio.Event | None = None

    async def unreferenced(self, chunks: list[bytes]) -> list[bytes]:
        self.calls.append(list(chunks))
        await trio.lowlevel.checkpoint()
        return [c for c in chunks if c not in self.referenced]

    async def condemn(self, chunks: list[bytes]) -> list[bytes]:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        else:
            await trio.lowlevel.checkpoint()
        # Like the state machine: what is referenced when the command applies is spared.
        condemned = [c for c in chunks if c not in self.referenced]
        self.condemned.append(condemned)
        return condemned


class Fixture:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.store = MemoryStore()
        self.meta = Metadata()
        self.pins = ChunkPins()
        self.collector = ChunkCollector(self.store, self.meta.unreferenced, self.meta.condemn,
                                        self.pins,
                                        self.clock, grace_s=GRACE, interval_s=60.0)

    def old(self, n: int, size: int = 100) -> bytes:
        self.store.add(d(n), self.clock.now() - GRACE - 1, size)
        return d(n)

    def young(self, n: int) -> bytes:
        self.store.add(d(n), self.clock.now() - GRACE + 1)
        return d(n)


async def test_collects_only_old_unreferenced_unpinned_chunks() -> None:
    f = Fixture()
    garbage = f.old(1, size=10)
    f.old(2)
    f.meta.referenced.add(d(2))
    f.young(3)  # unreferenced but too young: perhaps an upload that is still running
    f.old(4)
    f.pins.pin(d(4))
    more_garbage = f.old(5, size=32)
    assert await f.collector.collect_once() == 2
    assert set(f.store.chunks) == {d(2), d(3), d(4)}
    assert garbage not in f.store.chunks and more_garbage not in f.store.chunks
    assert f.collector.collected_total == 2
    assert f.collector.bytes_collected_total == 42
    # The young chunk was never even asked about.
    assert d(3) not in f.meta.calls[0]


async def test_grace_boundary() -> None:
    f = Fixture()
    f.store.add(d(1), f.clock.now() - GRACE)       # exactly the grace: collectable
    f.store.add(d(2), f.clock.now() - GRACE + 0.5)
    assert await f.collector.collect_once() == 1
    assert set(f.store.chunks) == {d(2)}
    f.clock.advance(0.5)
    assert await f.collector.collect_once() == 1
    assert f.store.chunks == {}


async def test_totals_accumulate_and_nothing_to_do() -> None:
    f = Fixture()
    assert await f.collector.collect_once() == 0
    f.old(1)
    assert await f.collector.collect_once() == 1
    f.old(2)
    f.old(3)
    assert await f.collector.collect_once() == 2
    assert f.collector.collected_total == 3
    assert f.collector.bytes_collected_total == 300


async def test_already_deleted_chunk_is_not_counted() -> None:
    f = Fixture()
    f.old(1)
    f.old(2)
    original = f.store.delete_sync
    f.store.delete_sync = lambda digest: digest != d(1) and original(digest)  # type: ignore
    assert await f.collector.collect_once() == 1
    assert f.collector.bytes_collected_total == 100


async def test_queries_in_batches() -> None:
    f = Fixture()
    total = 2 * BATCH + 7
    for n in range(total):
        f.old(n)
    f.meta.referenced.update(d(n) for n in range(0, total, 3))
    deleted = await f.collector.collect_once()
    assert [len(call) for call in f.meta.calls] == [BATCH, BATCH, 7]
    assert deleted == total - len(range(0, total, 3))
    assert set(f.store.chunks) == {d(n) for n in range(0, total, 3)}


async def upload_during_query(f: Fixture, action: object) -> int:
    """Run a collection, doing ``action`` while its unreferenced query is in flight."""
    f.meta.gate = trio.Event()
    result: list[int] = []

    async def collect() -> None:
        result.append(await f.collector.collect_once())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect)
        await f.meta.entered.wait()
        action()  # type: ignore[operator]
        f.meta.gate.set()
    return result[0]


async def test_chunk_pinned_during_the_query_is_kept() -> None:
    """An upload re-uses an old unreferenced chunk: it pins it while the GC is querying."""
    f = Fixture()
    reused = f.old(1)
    f.old(2)
    deleted = await upload_during_query(f, lambda: f.pins.pin(reused))
    assert deleted == 1
    assert reused in f.store.chunks
    assert d(2) not in f.store.chunks


async def test_chunk_pinned_and_unpinned_during_the_query_is_kept() -> None:
    """The upload pinned, wrote, committed its manifest and unpinned, all during the query:
    the query's answer (unreferenced) is stale, and the touched pin is what saves the chunk."""
    f = Fixture()
    reused = f.old(1)
    f.old(2)

    def upload() -> None:
        f.pins.pin(reused)
        f.meta.referenced.add(reused)  # too late for the query already running
        f.pins.unpin(reused)

    deleted = await upload_during_query(f, upload)
    assert deleted == 1
    assert reused in f.store.chunks
    # On the next pass the query sees the committed reference.
    assert await f.collector.collect_once() == 0
    assert reused in f.store.chunks


async def test_download_unpinning_during_the_query_keeps_the_chunk_this_pass() -> None:
    f = Fixture()
    chunk = f.old(1)
    f.old(2)
    f.pins.pin(chunk)  # a download in flight
    deleted = await upload_during_query(f, lambda: f.pins.unpin(chunk))
    assert deleted == 1 and chunk in f.store.chunks
    assert f.meta.condemned == [[d(2)]], "a pinned chunk is not even condemned"
    # Nothing refers to it any more, and nothing touched it during this pass: collected.
    assert await f.collector.collect_once() == 1
    assert chunk not in f.store.chunks


async def test_pin_released_before_the_pass_does_not_protect() -> None:
    f = Fixture()
    chunk = f.old(1)
    f.pins.pin(chunk)
    f.pins.unpin(chunk)
    assert await f.collector.collect_once() == 1
    assert chunk not in f.store.chunks


async def test_pins_touched_in_an_earlier_batch_step_do_not_leak_protection() -> None:
    f = Fixture()
    for n in range(BATCH + 1):
        f.old(n)
    # Touch a chunk of the second batch during the first batch's query only.
    target = d(BATCH)

    def touch() -> None:
        f.pins.pin(target)
        f.pins.unpin(target)

    f.meta.gate = trio.Event()
    result: list[int] = []

    async def collect() -> None:
        result.append(await f.collector.collect_once())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect)
        await f.meta.entered.wait()
        assert len(f.meta.calls) == 1
        touch()
        f.meta.gate.set()
    # The second batch's step began after the touch and its query saw the current state.
    assert result == [BATCH + 1]
    assert f.store.chunks == {}


async def test_run_repeats_and_survives_os_errors(
        autojump_clock: trio.testing.MockClock) -> None:
    f = Fixture()
    f.store.fail_scans = 1
    f.old(1)
    async with trio.open_nursery() as nursery:
        await nursery.start(f.collector.run)
        await trio.sleep(60.0 * 3 + 30)
        nursery.cancel_scope.cancel()
    assert f.store.scans == 3
    assert f.store.chunks == {}
    assert f.collector.collected_total == 1


async def test_chunk_held_for_a_peers_upload_is_kept_until_the_hold_lapses() -> None:
    f = Fixture()
    held = f.old(1)
    now = trio.current_time()
    f.pins.hold("peer", b"u" * 16, held, until=now + 1000.0)
    assert await f.collector.collect_once() == 0
    assert f.meta.condemned == [], "not even condemned while held"
    f.pins.expire(now + 2000.0)
    assert await f.collector.collect_once() == 1


async def test_chunk_written_by_a_peer_during_the_condemnation_is_kept() -> None:
    """The condemnation is committed, but a peer's upload wrote the chunk meanwhile: its
    hold touched the chunk during the step, so the delete is skipped (the upload began
    after the condemnation, so its commit will be accepted)."""
    f = Fixture()
    chunk = f.old(1)
    f.old(2)
    deleted = await upload_during_query(
        f, lambda: f.pins.hold("peer", b"u" * 16, chunk, until=trio.current_time() - 1))
    assert deleted == 1
    assert chunk in f.store.chunks


async def test_a_commit_landing_before_the_condemnation_spares_the_chunk() -> None:
    f = Fixture()
    chunk = f.old(1)
    deleted = await upload_during_query(f, lambda: f.meta.referenced.add(chunk))
    assert deleted == 0 and chunk in f.store.chunks


async def test_run_survives_a_cluster_without_quorum(
        autojump_clock: trio.testing.MockClock) -> None:
    f = Fixture()
    f.old(1)
    calls = 0
    condemn = f.meta.condemn

    async def no_quorum(chunks: list[bytes]) -> list[bytes]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Unavailable("no coordinator could commit the write in time")
        return await condemn(chunks)

    f.collector._condemn = no_quorum
    async with trio.open_nursery() as nursery:
        await nursery.start(f.collector.run)
        await trio.sleep(60.0 * 2 + 30)
        nursery.cancel_scope.cancel()
    assert calls == 2 and f.store.chunks == {}
