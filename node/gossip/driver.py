"""The trio driver: one sans-I/O ``Swim`` core over one ``Transport``.

The core decides; this module only moves bytes and time. Three tasks share a
nursery: the receive loop (open, authenticate and feed datagrams), the timer
(wake at the core's next deadline, or sooner when an input moved it) and the
accept loop (answer push-pulls over streams). Push-pulls the core asks for run
as short tasks of their own, a bounded number at a time.

Time: the core runs on ``trio.current_time()`` (so ``MockClock`` drives it in
simulation); datagram timestamps for replay protection use ``wall_ms``.

Everything a peer sends is untrusted: a datagram that fails ``PacketOpener``
is counted and dropped, a push-pull stream that misbehaves is closed, and
neither ever raises out of a loop.

Keys: everything this node sends is sealed with ``key``; what it receives may
be sealed with ``key`` or one of ``accepted_keys`` (a cluster key rotation,
README "Rotating the cluster key").
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING

import trio

from node.gossip.config import GossipConfig
from node.gossip.members import MembershipView
from node.gossip.messages import Alive, MemberMeta, Packet, PushPull
from node.gossip.swim import MemberChanged, PushPullWith, Send, Swim
from node.gossip.wire import (Oversize, PacketOpener, WireError, WireSizer, receive_push_pull,
                              seal_packet, seal_push_pull)
from node.net.transport import Transport, TransportError

if TYPE_CHECKING:
    import random  # noqa: TID251 - only the type: the generator is seeded and injected

log = logging.getLogger(__name__)

#: Push-pulls running at once, each way; more are skipped (the next period retries).
MAX_PUSH_PULLS = 4
#: Connect, send and receive of one push-pull together take at most this long.
PUSH_PULL_TIMEOUT_S = 10.0


class Gossip:
    """Membership for one node. ``await nursery.start(gossip.run)``, then read ``view``."""

    def __init__(self, me: MemberMeta, config: GossipConfig, transport: Transport,
                 key: bytes, *, rng: random.Random, wall_ms: Callable[[], int],
                 seeds: tuple[str, ...] = (), incarnation: int = 0,
                 on_view: Callable[[MembershipView], None] | None = None,
                 accepted_keys: tuple[bytes, ...] = ()) -> None:
        self.config = config
        self.transport = transport
        self._key = key
        self._accepted_keys = accepted_keys
        self._wall_ms = wall_ms
        self._seeds = seeds
        self._on_view = on_view
        self._boot = rng.getrandbits(64)
        self._counter = itertools.count(1)
        self._opener = PacketOpener(key, accepted_keys=accepted_keys)
        self._check_fits(me, incarnation)
        seal_packet(Packet(None, (Alive(incarnation, me),)), key=key, sender=me.node_id,
                    boot=0, counter=0, now_ms=0)
        self.swim = Swim(me, config, rng, trio.current_time(), incarnation=incarnation,
                         sizer=WireSizer(me.node_id))
        self.view = self.swim.view()
        self.counters: Counter[str] = Counter()
        self._kick = trio.Event()
        self._push_pulls = trio.Semaphore(MAX_PUSH_PULLS)
        self._inbound = trio.Semaphore(MAX_PUSH_PULLS)
        self._nursery: trio.Nursery | None = None
        self._sending = 0

    # -- running ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._receive_loop)
            nursery.start_soon(self._accept_loop)
            nursery.start_soon(self._timer_loop)
            self.swim.join(trio.current_time(), self._seeds)
            self._flush()
            task_status.started()

    async def leave(self, timeout_s: float) -> None:
        """Announce a graceful leave and keep gossiping until it has gone out (or time is up)."""
        self.swim.leave(trio.current_time())
        self._flush()
        with trio.move_on_after(timeout_s):
            await trio.sleep(self.config.gossip_interval_s)
            # Alone, there is nobody to tell: the farewell would wait in the queue forever.
            while (self.swim.pending_updates and self._others_live()) or self._sending:
                await trio.sleep(self.config.gossip_interval_s)

    def set_tags(self, tags: dict[str, str]) -> None:
        """Replace this member's tags; the change spreads like any Alive."""
        meta = replace(self.swim.own_meta, tags=MappingProxyType(dict(tags)))
        self._check_fits(meta, self.swim.incarnation + 1)
        self.swim.update_meta(meta)
        self._flush()

    def _check_fits(self, me: MemberMeta, incarnation: int) -> None:
        """Refuse what could never be piggybacked: our own Alive must fit a datagram."""
        alive_size = WireSizer(me.node_id).update(Alive(incarnation, me))
        if alive_size > self.config.piggyback_budget_bytes:
            raise Oversize(f"this member's metadata takes {alive_size} bytes on the wire; "
                           f"at most {self.config.piggyback_budget_bytes} fit a datagram")

    def _others_live(self) -> bool:
        return any(m.node_id != self.swim.me for m in self.view.live())

    # -- loops -----------------------------------------------------------------------------

    async def _timer_loop(self) -> None:
        while True:
            with trio.move_on_at(self.swim.next_deadline()):
                await self._kick.wait()
            self._kick = trio.Event()
            now = trio.current_time()
            if now >= self.swim.next_deadline():
                self.swim.tick(now)
                self._flush()

    async def _receive_loop(self) -> None:
        while True:
            source, data = await self.transport.receive_packet()
            try:
                _, packet = self._opener.open(data, now_ms=self._wall_ms())
            except WireError as exc:
                log.debug("dropped a datagram", extra={"from": source, "why": repr(exc)})
                continue
            self.swim.receive(trio.current_time(), source, packet)
            self._flush()

    async def _accept_loop(self) -> None:
        assert self._nursery is not None
        while True:
            # Wait for a free slot before accepting: the transport queues (and beyond
            # its limit refuses) the connections we are not ready for.
            await self._inbound.acquire()
            stream, _ = await self.transport.accept()
            self._nursery.start_soon(self._answer_push_pull, stream)

    # -- effects ---------------------------------------------------------------------------

    def _flush(self) -> None:
        """Carry out what the core asked for; wake the timer, whose deadline may have moved."""
        assert self._nursery is not None
        changed = False
        for effect in self.swim.drain():
            if isinstance(effect, Send):
                self._nursery.start_soon(self._send, effect)
            elif isinstance(effect, PushPullWith):
                if self._push_pulls.value:
                    self._nursery.start_soon(self._push_pull, effect)
                else:
                    self.counters["push_pulls_skipped"] += 1
            elif isinstance(effect, MemberChanged):
                changed = True
        if changed:
            self.view = self.swim.view()
            if self._on_view is not None:
                self._on_view(self.view)
        self._kick.set()

    async def _send(self, effect: Send) -> None:
        self._sending += 1
        try:
            await self._seal_and_send(effect)
        finally:
            self._sending -= 1

    async def _seal_and_send(self, effect: Send) -> None:
        try:
            data = seal_packet(effect.packet, key=self._key, sender=self.swim.me,
                               boot=self._boot, counter=next(self._counter),
                               now_ms=self._wall_ms())
        except WireError as exc:
            self.counters["unsendable"] += 1
            log.warning("could not encode a gossip packet", extra={"why": repr(exc)})
            return
        try:
            await self.transport.send_packet(effect.to, data)
        except ValueError:
            self.counters["unsendable"] += 1

    async def _push_pull(self, effect: PushPullWith) -> None:
        async with self._push_pulls:
            with trio.move_on_after(PUSH_PULL_TIMEOUT_S):
                try:
                    stream = await self.transport.connect(effect.to,
                                                          timeout_s=PUSH_PULL_TIMEOUT_S)
                except (TransportError, ValueError):
                    self.counters["push_pulls_failed"] += 1
                    return
                async with stream:
                    theirs = await self._exchange(stream, self.swim.local_state(effect.join),
                                                  first=True)
                if theirs is not None:
                    self.counters["push_pulls"] += 1
                    self.swim.merge(trio.current_time(), theirs)
                    self._flush()
                return
            self.counters["push_pulls_failed"] += 1

    async def _answer_push_pull(self, stream: trio.abc.Stream) -> None:
        try:
            async with stream:
                with trio.move_on_after(PUSH_PULL_TIMEOUT_S) as scope:
                    theirs = await self._exchange(stream, None, first=False)
                    if theirs is not None:
                        self.counters["push_pulls_answered"] += 1
                        self.swim.merge(trio.current_time(), theirs)
                        self._flush()
                if scope.cancelled_caught:
                    self.counters["push_pulls_failed"] += 1
        finally:
            self._inbound.release()

    async def _exchange(self, stream: trio.abc.Stream, mine: PushPull | None,
                        *, first: bool) -> PushPull | None:
        """Initiator sends then receives; responder receives then sends its own state."""
        try:
            if first:
                assert mine is not None
                await self._send_state(stream, mine)
            counting = _CountingReceiver(stream, self.counters)
            theirs = await receive_push_pull(counting, key=self._key,
                                             accepted_keys=self._accepted_keys,
                                             now_ms=self._wall_ms(),
                                             timeout_s=PUSH_PULL_TIMEOUT_S)
            if not first:
                await self._send_state(stream, self.swim.local_state())
            return theirs
        except WireError as exc:
            self.counters["push_pulls_rejected"] += 1
            log.debug("push-pull rejected", extra={"why": repr(exc)})
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.counters["push_pulls_failed"] += 1
        return None

    async def _send_state(self, stream: trio.abc.SendStream, state: PushPull) -> None:
        frame = seal_push_pull(state, key=self._key, now_ms=self._wall_ms())
        await stream.send_all(frame)
        self.counters["stream_bytes_out"] += len(frame)

    # -- observing -------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Everything countable, for metrics: core, wire and driver counters together.

        Gossip bytes are the transport's datagram counters plus push-pull streams.
        """
        opener = self._opener
        return {**self.swim.stats, **self.counters,
                "bytes_in": self.transport.bytes_received + self.counters["stream_bytes_in"],
                "bytes_out": self.transport.bytes_sent + self.counters["stream_bytes_out"],
                "datagrams_accepted": opener.accepted, "bad_mac": opener.bad_mac,
                "replayed": opener.replayed, "stale": opener.stale,
                "malformed": opener.malformed + opener.oversize}


class _CountingReceiver(trio.abc.ReceiveStream):
    """Counts the push-pull bytes a peer sends us into ``stream_bytes_in``."""

    def __init__(self, stream: trio.abc.ReceiveStream, counters: Counter[str]) -> None:
        self._stream = stream
        self._counters = counters

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self._stream.receive_some(max_bytes)
        self._counters["stream_bytes_in"] += len(data)
        return data

    async def aclose(self) -> None:
        await self._stream.aclose()
