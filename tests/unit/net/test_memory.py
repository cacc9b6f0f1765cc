"""The in-memory network's faults, on trio's MockClock (the ``autojump_clock`` fixture).

What both transports share is in tests/conformance/test_transport.py.
"""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from node.net import DropReason, MemoryNetwork, MemoryStream, MemoryTransport, TransportError

A, B, C, D = (f"10.0.0.{i}:7946" for i in range(1, 5))


async def drain(transport: MemoryTransport, within_s: float = 10.0,
                ) -> list[tuple[float, str, bytes]]:
    """Every packet that arrives within ``within_s`` (virtual time), with its arrival time."""
    arrivals: list[tuple[float, str, bytes]] = []
    with trio.move_on_after(within_s):
        while True:
            sender, data = await transport.receive_packet()
            arrivals.append((trio.current_time(), sender, data))
    return arrivals


def payload(i: int) -> bytes:
    return i.to_bytes(4, "big")


async def send_many(sender: MemoryTransport, dst: str, count: int) -> None:
    for i in range(count):
        await sender.send_packet(dst, payload(i))


def settled(network: MemoryNetwork) -> bool:
    stats = network.stats
    return stats.packets_sent + stats.packets_duplicated == \
        stats.packets_delivered + stats.packets_dropped


# ---- random faults ----

async def delivered_with(seed: int, count: int, **faults: float) -> list[bytes]:
    network = MemoryNetwork(random.Random(seed), **faults)  # type: ignore[arg-type]
    b = network.transport(B)
    await send_many(network.transport(A), B, count)
    assert settled(network)
    return [data for _, _, data in await drain(b)]


async def test_seeded_loss_is_near_the_rate_and_reproducible(
        autojump_clock: trio.testing.MockClock) -> None:
    first = await delivered_with(7, 10_000, drop_rate=0.1)
    assert 8_900 < len(first) < 9_100  # 0.9 * 10k, within about 3 standard deviations
    assert first == sorted(first)  # no delay: order kept
    assert await delivered_with(7, 10_000, drop_rate=0.1) == first
    assert await delivered_with(8, 10_000, drop_rate=0.1) != first


async def test_loss_is_counted_by_reason(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(random.Random(1), drop_rate=0.5)
    b = network.transport(B)
    await send_many(network.transport(A), B, 100)
    received = await drain(b)
    assert network.stats.dropped == {DropReason.LOSS: 100 - len(received)}
    assert network.stats.packets_delivered == len(received) == b.packets_received


async def test_duplication(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(random.Random(3), duplicate_rate=0.25)
    b = network.transport(B)
    await send_many(network.transport(A), B, 2_000)
    received = [data for _, _, data in await drain(b)]
    duplicated = network.stats.packets_duplicated
    assert 2_350 < len(received) < 2_650
    assert len(received) == 2_000 + duplicated
    assert sorted(set(received)) == [payload(i) for i in range(2_000)]
    assert settled(network)


async def test_delayed_packets_arrive_after_their_delay_and_may_reorder(
        autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(random.Random(4), delay_s=(0.1, 0.5))
    async with network.running():
        b = network.transport(B)
        start = trio.current_time()
        await send_many(network.transport(A), B, 200)
        assert network.packets_in_flight == 200
        arrivals = await drain(b)
    assert len(arrivals) == 200
    assert all(0.1 <= at - start <= 0.5 for at, _, _ in arrivals)
    order = [data for _, _, data in arrivals]
    assert order != sorted(order)
    assert sorted(order) == [payload(i) for i in range(200)]


async def test_a_fixed_delay_keeps_order_and_draws_nothing(
        autojump_clock: trio.testing.MockClock) -> None:
    rng = random.Random(5)
    network = MemoryNetwork(rng, delay_s=(0.25, 0.25))
    before = rng.getstate()
    async with network.running():
        b = network.transport(B)
        start = trio.current_time()
        await send_many(network.transport(A), B, 10)
        arrivals = await drain(b, within_s=1.0)
    assert [at - start for at, _, _ in arrivals] == [pytest.approx(0.25)] * 10
    assert [data for _, _, data in arrivals] == [payload(i) for i in range(10)]
    assert rng.getstate() == before


async def test_delay_without_the_delivery_task_is_an_error() -> None:
    network = MemoryNetwork(random.Random(0), delay_s=(0.01, 0.02))
    a = network.transport(A)
    with pytest.raises(RuntimeError, match="run is not running"):
        await a.send_packet(B, b"x")


async def test_same_seed_same_history(autojump_clock: trio.testing.MockClock) -> None:
    async def history(seed: int) -> list[tuple[float, str, str, bytes]]:
        rng = random.Random(seed)
        network = MemoryNetwork(rng, drop_rate=0.2, duplicate_rate=0.1, delay_s=(0.0, 0.05))
        log: list[tuple[float, str, str, bytes]] = []
        nodes = [network.transport(address) for address in (A, B, C)]
        start = trio.current_time()

        async def listen(node: MemoryTransport) -> None:
            while True:
                sender, data = await node.receive_packet()
                log.append((round(trio.current_time() - start, 9), node.address, sender, data))

        async with network.running(), trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(listen, node)
            for i in range(300):
                src, dst = nodes[i % 3], nodes[(i * 7 + 1) % 3]
                await src.send_packet(dst.address, payload(i))
                await trio.sleep(0.01)
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
        return log

    first = await history(11)
    assert len(first) > 200
    assert await history(11) == first
    assert await history(12) != first


# ---- partitions, blocks, the route hook ----

async def test_partition_and_heal(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(random.Random(0))
    a, b, c, d = (network.transport(address) for address in (A, B, C, D))
    network.partition({A}, {B})  # C and D are in no group: a group of their own

    for src, dst in [(a, b), (b, a), (a, c), (c, a), (b, d), (c, d), (d, c)]:
        await src.send_packet(dst.address, b"hello")
    assert network.stats.dropped == {DropReason.PARTITION: 5}
    assert [(s, x) for _, s, x in await drain(d, 0.1)] == [(C, b"hello")]
    assert [(s, x) for _, s, x in await drain(c, 0.1)] == [(D, b"hello")]
    assert not network.reachable(A, B) and network.reachable(C, D)

    network.heal()
    await a.send_packet(B, b"again")
    assert [(s, x) for _, s, x in await drain(b, 0.1)] == [(A, b"again")]


async def test_a_partition_times_connects_out_and_breaks_open_streams(
        autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(random.Random(0))
    a, b, c = (network.transport(address) for address in (A, B, C))
    across = await a.connect(B, timeout_s=1.0)
    across_server, _ = await b.accept()
    beside = await a.connect(C, timeout_s=1.0)
    beside_server, _ = await c.accept()

    async def blocked_receive() -> None:
        with pytest.raises(trio.BrokenResourceError):
            await across_server.receive_some()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(blocked_receive)
        await trio.testing.wait_all_tasks_blocked()
        network.partition({A, C}, {B})
    with pytest.raises(trio.BrokenResourceError):
        await across.send_all(b"x")
    assert network.stats.streams_broken == 1

    await beside.send_all(b"still fine")
    assert await beside_server.receive_some() == b"still fine"

    start = trio.current_time()
    with pytest.raises(TransportError, match="timed out"):
        await b.connect(A, timeout_s=3.0)
    assert trio.current_time() - start == pytest.approx(3.0)

    network.heal()
    healed = await b.connect(A, timeout_s=3.0)
    for stream in (across, across_server, beside, beside_server, healed):
        await stream.aclose()


async def test_partition_rejects_an_address_in_two_groups() -> None:
    network = MemoryNetwork(random.Random(0))
    with pytest.raises(ValueError, match="two groups"):
        network.partition({A, B}, {B, C})


async def test_one_way_block(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(random.Random(0))
    a, b = network.transport(A), network.transport(B)
    stream = await a.connect(B, timeout_s=1.0)
    network.block(A, B)

    await a.send_packet(B, b"lost")
    await b.send_packet(A, b"arrives")
    assert network.stats.dropped == {DropReason.BLOCKED: 1}
    assert [(s, x) for _, s, x in await drain(a, 0.1)] == [(B, b"arrives")]
    assert await drain(b, 0.1) == []

    # A stream needs both directions: open ones break, new ones fail either way.
    with pytest.raises(trio.BrokenResourceError):
        await stream.send_all(b"x")
    for src, dst in [(a, B), (b, A)]:
        with pytest.raises(TransportError):
            await src.connect(dst, timeout_s=1.0)

    network.heal()
    await a.send_packet(B, b"healed")
    assert [(s, x) for _, s, x in await drain(b, 0.1)] == [(A, b"healed")]
    await stream.aclose()


async def test_route_hook_sees_each_packet_and_can_drop_it(
        autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(random.Random(0))
    a, b = network.transport(A), network.transport(B)
    seen: list[tuple[str, str, bytes]] = []

    def hook(src: str, dst: str, data: bytes) -> bool:
        seen.append((src, dst, data))
        return not data.startswith(b"drop")

    network.route_hook = hook
    for data in (b"keep 1", b"drop 2", b"keep 3"):
        await a.send_packet(B, data)
    assert seen == [(A, B, b"keep 1"), (A, B, b"drop 2"), (A, B, b"keep 3")]
    assert [x for _, _, x in await drain(b, 0.1)] == [b"keep 1", b"keep 3"]
    assert network.stats.dropped == {DropReason.ROUTE_HOOK: 1}

    network.route_hook = None
    await a.send_packet(B, b"drop me not")
    assert [x for _, _, x in await drain(b, 0.1)] == [b"drop me not"]


# ---- limits and endpoints ----

async def test_a_full_queue_drops_and_counts(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(random.Random(0), queue_limit=10)
    b = network.transport(B)
    await send_many(network.transport(A), B, 15)
    assert network.stats.dropped == {DropReason.QUEUE_FULL: 5}
    assert [x for _, _, x in await drain(b, 0.1)] == [payload(i) for i in range(10)]


async def test_a_full_accept_queue_refuses_connects() -> None:
    network = MemoryNetwork(random.Random(0), pending_streams=1)
    a, b = network.transport(A), network.transport(B)
    first = await a.connect(B, timeout_s=1.0)
    with pytest.raises(TransportError, match="accept queue full"):
        await a.connect(B, timeout_s=1.0)
    server, _ = await b.accept()
    await first.aclose()
    await server.aclose()


async def test_detach_is_a_crash(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(random.Random(0), delay_s=(0.5, 0.5))
    async with network.running():
        a, b = network.transport(A), network.transport(B)
        stream = await a.connect(B, timeout_s=1.0)
        accepted, _ = await b.accept()
        await a.send_packet(B, b"in flight")
        network.detach(B)

        with pytest.raises(trio.BrokenResourceError):
            await stream.receive_some()
        with pytest.raises(trio.ClosedResourceError):
            await b.receive_packet()
        start = trio.current_time()
        with pytest.raises(TransportError, match="refused"):
            await a.connect(B, timeout_s=5.0)
        assert trio.current_time() == start  # refused at once, not timed out
        await trio.sleep(1)
        assert network.stats.dropped == {DropReason.NO_ENDPOINT: 1}

        again = network.transport(B)  # a restart at the same address
        await a.send_packet(B, b"hello again")
        assert [x for _, _, x in await drain(again, 1.0)] == [b"hello again"]
    for resource in (stream, accepted, again):
        await resource.aclose()


async def test_graceful_aclose_leaves_open_streams_to_their_owners() -> None:
    network = MemoryNetwork(random.Random(0))
    a, b = network.transport(A), network.transport(B)
    stream = await a.connect(B, timeout_s=1.0)
    accepted, _ = await b.accept()
    await b.aclose()
    await stream.send_all(b"still open")
    assert await accepted.receive_some() == b"still open"
    await accepted.aclose()
    assert await stream.receive_some() == b""
    await stream.aclose()


async def test_addresses_are_checked_and_unique() -> None:
    network = MemoryNetwork(random.Random(0))
    network.transport(A)
    with pytest.raises(ValueError, match="already attached"):
        network.transport(A)
    with pytest.raises(ValueError):
        network.transport("no-port")
    with pytest.raises(KeyError):
        network.detach(B)


@pytest.mark.parametrize("faults", [{"drop_rate": 1.5}, {"duplicate_rate": -0.1},
                                    {"delay_s": (0.2, 0.1)}, {"queue_limit": 0}])
def test_bad_settings_are_rejected(faults: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        MemoryNetwork(random.Random(0), **faults)  # type: ignore[arg-type]


# ---- streams ----

async def test_memory_streams_pass_trios_checks_including_clogged_ones() -> None:
    buffer_bytes = 64 * 1024
    network = MemoryNetwork(random.Random(0), stream_buffer_bytes=buffer_bytes)
    a, b = network.transport(A), network.transport(B)

    async def stream_maker() -> tuple[MemoryStream, MemoryStream]:
        client = await a.connect(B, timeout_s=1.0)
        server, _ = await b.accept()
        return client, server

    async def clogged_stream_maker() -> tuple[MemoryStream, MemoryStream]:
        client, server = await stream_maker()
        await client.send_all(b"x" * buffer_bytes)  # both buffers full: the next send blocks
        await server.send_all(b"x" * buffer_bytes)
        return client, server

    await trio.testing.check_half_closeable_stream(stream_maker, clogged_stream_maker)


async def test_a_slow_reader_holds_the_writer_back() -> None:
    network = MemoryNetwork(random.Random(0), stream_buffer_bytes=1024)
    a, b = network.transport(A), network.transport(B)
    client = await a.connect(B, timeout_s=1.0)
    server, _ = await b.accept()
    done = trio.Event()

    async def write() -> None:
        await client.send_all(b"y" * 10_000)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()
        received = 0
        while received < 10_000:
            chunk = await server.receive_some(4096)
            assert len(chunk) <= 1024
            received += len(chunk)
    assert done.is_set()
    await client.aclose()
    await server.aclose()
