"""An in-memory network: many Transports in one process, with seeded faults.

For deterministic simulations of hundreds of nodes under
``trio.testing.MockClock(autojump_threshold=0)``::

    network = MemoryNetwork(random.Random(seed), drop_rate=0.01, delay_s=(0.001, 0.02))
    async with network.running():          # delivers delayed packets
        a = network.transport("10.0.0.1:7946")
        b = network.transport("10.0.0.2:7946")
        await a.send_packet(b.address, b"ping")
        sender, data = await b.receive_packet()

Packets. A packet from ``src`` to ``dst`` goes through, in order: the
partition, the one-way blocks, ``route_hook``, random loss (``drop_rate``),
duplication (``duplicate_rate``: one extra copy), then a delay drawn
uniformly from ``delay_s`` per copy. Zero-delay copies land in the
destination's queue at once; delayed ones wait in one heap that a single task
(``run``) delivers, so there is no task per packet. Faults are checked when a
packet is sent; a packet already in flight still arrives. Whatever cannot be
delivered (no endpoint, queue full) is dropped and counted by reason in
``stats.dropped``.

Streams. A connect makes a bounded in-memory stream pair (``MemoryStream``,
``stream_buffer_bytes`` per direction, so a slow reader pushes back on the
writer) and queues one end for the peer's ``accept()``. Streams have no delay.
A stream needs both directions, so a partition or a block either way between
two addresses makes a connect wait out its ``timeout_s`` and fail (the SYN is
lost), and breaks streams already open between them: their pending and later
calls raise ``trio.BrokenResourceError`` on both ends (as after a reset). A
connect to an address nobody is attached at fails at once (refused).

Endpoints. ``detach(address)`` is a crash: packets to the address are
dropped, connects are refused, and every stream it had is broken.
``MemoryTransport.aclose()`` is a graceful stop: the same, except that streams
already accepted or connected stay open until their owners close them, as
with sockets. Either way the address can be attached again.

Determinism: every random draw comes from the ``rng`` given (anything with
``random()`` and ``uniform()``, e.g. ``random.Random(seed)``), in the order
of the calls, so the same seed and the same sequence of sends give the same
outcome. A fault that is off (rate 0, delay 0) draws nothing. Addresses are
compared as strings; write them the same way everywhere.
"""

from __future__ import annotations

import enum
import heapq
import math
import operator
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import trio

from node.net.transport import TransportError, check_packet, join_address, split_address

DEFAULT_QUEUE_LIMIT = 10_000
DEFAULT_PENDING_STREAMS = 64
DEFAULT_MAX_IN_FLIGHT = 1_000_000
DEFAULT_STREAM_BUFFER_BYTES = 256 * 1024
#: Ports ``accept()`` reports for the connecting side, as an OS would.
EPHEMERAL_PORTS = range(49152, 65536)

RouteHook = Callable[[str, str, bytes], bool]


class RandomSource(Protocol):
    """What the network draws from; ``random.Random`` has both."""

    def random(self) -> float: ...

    def uniform(self, a: float, b: float) -> float: ...


class DropReason(enum.StrEnum):
    PARTITION = "partition"
    BLOCKED = "blocked"
    ROUTE_HOOK = "route_hook"
    LOSS = "loss"
    NO_ENDPOINT = "no_endpoint"
    QUEUE_FULL = "queue_full"
    IN_FLIGHT_FULL = "in_flight_full"


@dataclass
class NetworkStats:
    """Totals over the whole network.

    Once nothing is in flight: ``packets_sent + packets_duplicated ==
    packets_delivered + packets_dropped``.
    """

    packets_sent: int = 0
    bytes_sent: int = 0
    packets_duplicated: int = 0
    packets_delivered: int = 0
    bytes_delivered: int = 0
    dropped: Counter[DropReason] = field(default_factory=Counter)
    streams_opened: int = 0
    connects_failed: int = 0
    streams_broken: int = 0

    @property
    def packets_dropped(self) -> int:
        return sum(self.dropped.values())


class MemoryNetwork:
    """Endpoints by address, the faults between them, and the packets in flight.

    Args:
      rng: the only source of randomness (see the module docstring).
      drop_rate: probability that a packet is lost.
      duplicate_rate: probability that a packet arrives twice.
      delay_s: ``(low, high)``; each copy is delayed uniformly in the range.
        Any delay needs ``run`` (or ``running()``) to be active.
      queue_limit: packets waiting in one endpoint's ``receive_packet`` queue.
      pending_streams: connections waiting for one endpoint's ``accept()``.
      max_in_flight: delayed packets held in the network at once.
      stream_buffer_bytes: bytes buffered per stream direction.

    ``drop_rate``, ``duplicate_rate``, ``delay_s`` and ``route_hook`` are
    attributes that may be changed at any time; they apply to later sends.
    """

    def __init__(self, rng: RandomSource, *, drop_rate: float = 0.0,
                 duplicate_rate: float = 0.0, delay_s: tuple[float, float] = (0.0, 0.0),
                 queue_limit: int = DEFAULT_QUEUE_LIMIT,
                 pending_streams: int = DEFAULT_PENDING_STREAMS,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 stream_buffer_bytes: int = DEFAULT_STREAM_BUFFER_BYTES) -> None:
        if not (0.0 <= drop_rate <= 1.0 and 0.0 <= duplicate_rate <= 1.0):
            raise ValueError("drop_rate and duplicate_rate must be in [0, 1]")
        if not 0.0 <= delay_s[0] <= delay_s[1]:
            raise ValueError(f"delay_s must be (low, high) with 0 <= low <= high: {delay_s}")
        if min(queue_limit, pending_streams, max_in_flight, stream_buffer_bytes) < 1:
            raise ValueError("limits must be positive")
        self._rng = rng
        self.drop_rate = drop_rate
        self.duplicate_rate = duplicate_rate
        self.delay_s = delay_s
        self.route_hook: RouteHook | None = None
        self.stats = NetworkStats()
        self._queue_limit = queue_limit
        self._pending_streams = pending_streams
        self._max_in_flight = max_in_flight
        self._stream_buffer_bytes = stream_buffer_bytes
        self._endpoints: dict[str, MemoryTransport] = {}
        self._group_of: dict[str, int] = {}
        self._blocked: set[tuple[str, str]] = set()
        self._links: dict[_Link, None] = {}  # a dict, not a set: breaking order is stable
        self._in_flight: list[tuple[float, int, str, str, bytes]] = []
        self._sequence = 0
        self._next_ephemeral = 0
        self._running = False
        self._wakeup: trio.CancelScope | None = None

    # ---- endpoints ----

    def transport(self, address: str) -> MemoryTransport:
        """Attach an endpoint at ``address`` (``"host:port"``; any host name will do).

        Raises:
          ValueError: the address is malformed or already attached.
        """
        split_address(address)
        if address in self._endpoints:
            raise ValueError(f"address already attached: {address}")
        endpoint = MemoryTransport(self, address)
        self._endpoints[address] = endpoint
        return endpoint

    def detach(self, address: str) -> None:
        """Crash the endpoint at ``address``: it is closed and every stream it had breaks.

        Raises:
          KeyError: nothing is attached at ``address``.
        """
        if address not in self._endpoints:
            raise KeyError(f"no endpoint attached at {address}")
        self._endpoints[address]._close_now()
        self._break_links(lambda link: address in (link.client, link.server))

    @property
    def addresses(self) -> list[str]:
        return list(self._endpoints)

    # ---- faults ----

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network: addresses in different groups cannot reach each other.

        Every address in no group belongs to one more group, together. A new
        call replaces the previous partition; one-way blocks are kept. Open
        streams between addresses now apart are broken.

        Raises:
          ValueError: an address is in two groups.
        """
        group_of: dict[str, int] = {}
        for index, group in enumerate(groups):
            for address in group:
                if address in group_of:
                    raise ValueError(f"address in two groups: {address}")
                group_of[address] = index
        self._group_of = group_of
        self._break_links(lambda link: not self._stream_path_open(link.client, link.server))

    def block(self, src: str, dst: str) -> None:
        """Lose every packet from ``src`` to ``dst`` (the other way still works).

        Streams need both ways: connects between the two fail either way and
        open streams between them break.
        """
        self._blocked.add((src, dst))
        self._break_links(lambda link: {link.client, link.server} == {src, dst})

    def heal(self) -> None:
        """Remove the partition and every block (random faults stay)."""
        self._group_of = {}
        self._blocked.clear()

    def reachable(self, src: str, dst: str) -> bool:
        """Whether a packet from ``src`` to ``dst`` passes the partition and the blocks."""
        return self._group_of.get(src, -1) == self._group_of.get(dst, -1) and \
            (src, dst) not in self._blocked

    # ---- delivery of delayed packets ----

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver delayed packets when they are due; runs until cancelled.

        Use ``await nursery.start(network.run)`` or ``async with network.running()``.
        """
        if self._running:
            raise RuntimeError("MemoryNetwork.run is already running")
        self._running = True
        try:
            task_status.started()
            while True:
                now = trio.current_time()
                while self._in_flight and self._in_flight[0][0] <= now:
                    _, _, dst, src, data = heapq.heappop(self._in_flight)
                    self._deliver(src, dst, data)
                due = self._in_flight[0][0] if self._in_flight else math.inf
                with trio.CancelScope(deadline=due) as self._wakeup:
                    await trio.sleep_forever()
        finally:
            self._running = False
            self._wakeup = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[MemoryNetwork]:
        """Run ``run`` in a nursery of its own for the duration of the block."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.run)
            yield self
            nursery.cancel_scope.cancel()

    @property
    def packets_in_flight(self) -> int:
        return len(self._in_flight)

    # ---- what the endpoints call ----

    def _send_packet(self, src: str, dst: str, data: bytes) -> None:
        self.stats.packets_sent += 1
        self.stats.bytes_sent += len(data)
        reason = self._drop_reason(src, dst, data)
        if reason is not None:
            self.stats.dropped[reason] += 1
            return
        copies = 1
        if self.duplicate_rate > 0.0 and self._rng.random() < self.duplicate_rate:
            copies = 2
            self.stats.packets_duplicated += 1
        for _ in range(copies):
            delay_s = self._draw_delay_s()
            if delay_s <= 0.0:
                self._deliver(src, dst, data)
            else:
                self._hold(trio.current_time() + delay_s, src, dst, data)

    def _drop_reason(self, src: str, dst: str, data: bytes) -> DropReason | None:
        if self._group_of.get(src, -1) != self._group_of.get(dst, -1):
            return DropReason.PARTITION
        if (src, dst) in self._blocked:
            return DropReason.BLOCKED
        if self.route_hook is not None and not self.route_hook(src, dst, data):
            return DropReason.ROUTE_HOOK
        if self.drop_rate > 0.0 and self._rng.random() < self.drop_rate:
            return DropReason.LOSS
        return None

    def _draw_delay_s(self) -> float:
        low, high = self.delay_s
        if high <= 0.0:
            return 0.0
        return low if low == high else self._rng.uniform(low, high)

    def _hold(self, deliver_at: float, src: str, dst: str, data: bytes) -> None:
        if not self._running:
            raise RuntimeError("packets are delayed but MemoryNetwork.run is not running")
        if len(self._in_flight) >= self._max_in_flight:
            self.stats.dropped[DropReason.IN_FLIGHT_FULL] += 1
            return
        self._sequence += 1
        heapq.heappush(self._in_flight, (deliver_at, self._sequence, dst, src, data))
        if self._wakeup is not None and deliver_at < self._wakeup.deadline:
            self._wakeup.deadline = deliver_at

    def _deliver(self, src: str, dst: str, data: bytes) -> None:
        endpoint = self._endpoints.get(dst)
        if endpoint is None:
            self.stats.dropped[DropReason.NO_ENDPOINT] += 1
            return
        try:
            endpoint._inbox_send.send_nowait((src, data))
        except trio.WouldBlock:
            self.stats.dropped[DropReason.QUEUE_FULL] += 1
            return
        self.stats.packets_delivered += 1
        self.stats.bytes_delivered += len(data)

    async def _connect(self, src: str, dst: str, timeout_s: float) -> MemoryStream:
        split_address(dst)
        await trio.lowlevel.checkpoint()
        if not self._stream_path_open(src, dst):
            self.stats.connects_failed += 1
            await trio.sleep(max(0.0, timeout_s))
            raise TransportError(f"cannot connect to {dst}: timed out after {timeout_s} s")
        endpoint = self._endpoints.get(dst)
        if endpoint is None:
            self.stats.connects_failed += 1
            raise TransportError(f"cannot connect to {dst}: connection refused")
        link = _Link(self, src, dst, self._stream_buffer_bytes)
        try:
            endpoint._pending_send.send_nowait((link.server_end, self._ephemeral_address(src)))
        except trio.WouldBlock:
            self.stats.connects_failed += 1
            raise TransportError(f"cannot connect to {dst}: accept queue full") from None
        self._links[link] = None
        self.stats.streams_opened += 1
        return link.client_end

    def _remove(self, endpoint: MemoryTransport) -> None:
        if self._endpoints.get(endpoint.address) is endpoint:
            del self._endpoints[endpoint.address]

    def _forget(self, link: _Link) -> None:
        self._links.pop(link, None)

    def _stream_path_open(self, a: str, b: str) -> bool:
        return self.reachable(a, b) and self.reachable(b, a)

    def _break_links(self, doomed: Callable[[_Link], bool]) -> None:
        for link in [link for link in self._links if doomed(link)]:
            link.break_()
            self.stats.streams_broken += 1
            self._forget(link)

    def _ephemeral_address(self, address: str) -> str:
        host, _ = split_address(address)
        port = EPHEMERAL_PORTS[self._next_ephemeral % len(EPHEMERAL_PORTS)]
        self._next_ephemeral += 1
        return join_address(host, port)


class MemoryTransport:
    """One endpoint of a ``MemoryNetwork``; made by ``MemoryNetwork.transport``."""

    def __init__(self, network: MemoryNetwork, address: str) -> None:
        self._network = network
        self._address = address
        self._inbox_send, self._inbox_receive = trio.open_memory_channel[
            tuple[str, bytes]](network._queue_limit)
        self._pending_send, self._pending_receive = trio.open_memory_channel[
            tuple[MemoryStream, str]](network._pending_streams)
        self._closed = False
        self.packets_sent = 0
        self.packets_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    @property
    def address(self) -> str:
        return self._address

    async def send_packet(self, to: str, data: bytes) -> None:
        check_packet(to, data)
        await trio.lowlevel.checkpoint()
        self._check_open()
        data = bytes(data)
        self.packets_sent += 1
        self.bytes_sent += len(data)
        self._network._send_packet(self._address, to, data)

    async def receive_packet(self) -> tuple[str, bytes]:
        sender, data = await self._inbox_receive.receive()
        self.packets_received += 1
        self.bytes_received += len(data)
        return sender, data

    async def connect(self, to: str, *, timeout_s: float) -> MemoryStream:
        self._check_open()
        return await self._network._connect(self._address, to, timeout_s)

    async def accept(self) -> tuple[MemoryStream, str]:
        return await self._pending_receive.receive()

    async def aclose(self) -> None:
        """Detach from the network; streams already handed out stay open."""
        self._close_now()
        await trio.lowlevel.checkpoint()

    def _close_now(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._network._remove(self)
        self._inbox_receive.close()
        unaccepted: set[_Link] = set()
        while True:
            try:
                stream, _ = self._pending_receive.receive_nowait()
            except trio.WouldBlock:
                break
            unaccepted.add(stream.link)
        self._pending_receive.close()
        self._network._break_links(lambda link: link in unaccepted)

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("transport closed")


class _Pipe:
    """One direction of a stream: a bounded byte buffer between a writer and a reader."""

    def __init__(self, capacity_bytes: int) -> None:
        self.buffer = bytearray()
        self.capacity_bytes = capacity_bytes
        self.eof = False            # the writer is done: the reader gets b"" once drained
        self.reader_closed = False  # the reader is gone: the writer gets BrokenResourceError
        self.broken = False         # the network cut the link: both get BrokenResourceError
        self._lot = trio.lowlevel.ParkingLot()

    def changed(self) -> None:
        self._lot.unpark_all()

    async def wait_until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            await self._lot.park()

    def has_room(self) -> bool:
        return len(self.buffer) < self.capacity_bytes or self.reader_closed or self.broken


class _Link:
    """A connection between two addresses: two pipes and the two stream ends."""

    def __init__(self, network: MemoryNetwork, client: str, server: str,
                 buffer_bytes: int) -> None:
        self.network = network
        self.client = client
        self.server = server
        upstream, downstream = _Pipe(buffer_bytes), _Pipe(buffer_bytes)
        self.client_end = MemoryStream(self, send_pipe=upstream, receive_pipe=downstream)
        self.server_end = MemoryStream(self, send_pipe=downstream, receive_pipe=upstream)
        self._open_ends = 2

    def break_(self) -> None:
        for pipe in (self.client_end._send_pipe, self.server_end._send_pipe):
            pipe.broken = True
            pipe.changed()

    def end_closed(self) -> None:
        self._open_ends -= 1
        if self._open_ends == 0:
            self.network._forget(self)


class MemoryStream(trio.abc.HalfCloseableStream):
    """One end of an in-memory connection; passes trio's ``check_half_closeable_stream``.

    Closing gracefully delivers what was sent, then EOF; data this end had not
    read is discarded and the peer's later sends raise ``BrokenResourceError``.
    """

    def __init__(self, link: _Link, *, send_pipe: _Pipe, receive_pipe: _Pipe) -> None:
        self.link = link
        self._send_pipe = send_pipe
        self._receive_pipe = receive_pipe
        self._closed = False
        self._eof_sent = False
        self._sending = False
        self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        pipe = self._send_pipe
        with self._send_turn(), memoryview(data) as view:
            await trio.lowlevel.checkpoint()
            with view.cast("B") as octets:
                sent = 0
                while True:
                    self._check_sendable()
                    if sent == len(octets):
                        return
                    room = pipe.capacity_bytes - len(pipe.buffer)
                    if room > 0:
                        pipe.buffer += octets[sent:sent + room]
                        sent = min(len(octets), sent + room)
                        pipe.changed()
                    else:
                        await pipe.wait_until(lambda: pipe.has_room() or self._closed)

    async def wait_send_all_might_not_block(self) -> None:
        pipe = self._send_pipe
        with self._send_turn():
            await trio.lowlevel.checkpoint()
            self._check_sendable()
            await pipe.wait_until(lambda: pipe.has_room() or self._closed)
            if self._closed:
                raise trio.ClosedResourceError("stream closed")

    async def send_eof(self) -> None:
        with self._send_turn():
            await trio.lowlevel.checkpoint()
            if self._closed:
                raise trio.ClosedResourceError("stream closed")
            self._eof_sent = True
            self._send_pipe.eof = True
            self._send_pipe.changed()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        pipe = self._receive_pipe
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint()
            await pipe.wait_until(
                lambda: bool(pipe.buffer) or pipe.eof or pipe.broken or self._closed)
            if self._closed:
                raise trio.ClosedResourceError("stream closed")
            if pipe.broken:
                raise trio.BrokenResourceError("connection broken by the network")
            if not pipe.buffer:
                return b""
            size = len(pipe.buffer) if max_bytes is None else min(max_bytes, len(pipe.buffer))
            data = bytes(pipe.buffer[:size])
            del pipe.buffer[:size]
            pipe.changed()
            return data
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._send_pipe.eof = True
            self._send_pipe.changed()
            self._receive_pipe.reader_closed = True
            self._receive_pipe.buffer.clear()
            self._receive_pipe.changed()
            self.link.end_closed()
        await trio.lowlevel.checkpoint()

    def _check_sendable(self) -> None:
        if self._closed or self._eof_sent:
            raise trio.ClosedResourceError("stream closed for sending")
        if self._send_pipe.broken:
            raise trio.BrokenResourceError("connection broken by the network")
        if self._send_pipe.reader_closed:
            raise trio.BrokenResourceError("the peer closed the stream")

    def _send_turn(self) -> _Turn:
        return _Turn(self)


class _Turn:
    """Only one task at a time may send (send_all, wait_send_all_might_not_block, send_eof)."""

    def __init__(self, stream: MemoryStream) -> None:
        self._stream = stream

    def __enter__(self) -> None:
        if self._stream._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._stream._sending = True

    def __exit__(self, *exc_info: object) -> None:
        self._stream._sending = False
