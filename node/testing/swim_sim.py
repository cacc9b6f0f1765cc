"""A discrete-event simulator for the SWIM core: many ``Swim`` objects, one seeded world.

No trio and no sockets: a heap orders packet deliveries and node timers, time
jumps from event to event, and every random choice comes from one seed, so a
run of 200 nodes over minutes of protocol time takes seconds and replays
exactly. Faults: packet loss, latency, partitions, crashes and restarts.

Counters per node: datagrams and (estimated or encoded) bytes sent, so the
cost of the protocol per node per period can be compared across sizes.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import cast

from node.gossip.config import GossipConfig
from node.gossip.members import MemberState
from node.gossip.messages import MemberMeta, Packet, Update
from node.gossip.swim import MemberChanged, PushPullWith, Send, Swim
from node.gossip.wire import WireSizer, update_size


@dataclass
class SimStats:
    packets: Counter[str] = field(default_factory=Counter)
    bytes: Counter[str] = field(default_factory=Counter)
    dropped: int = 0
    push_pulls: int = 0


class SwimSim:
    def __init__(self, seed: int, config: GossipConfig, *, loss: float = 0.0,
                 latency_s: tuple[float, float] = (0.0005, 0.003)) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.config = config
        self.loss = loss
        self.latency_s = latency_s
        self.now = 0.0
        self.nodes: dict[str, Swim] = {}
        self.running: set[str] = set()
        self.groups: dict[str, int] = {}
        self.stats = SimStats()
        self.events: list[tuple[float, str, MemberChanged]] = []
        self._heap: list[tuple[float, int, str, object]] = []
        self._order = 0
        #: Encoded sizes of the updates sent, by update object: the same objects ride on
        #: datagram after datagram (a join's Alive, hundreds of times), so each is measured
        #: once. Holding the update keeps its id from being reused.
        self._update_sizes: dict[int, tuple[Update, int]] = {}
        self._sizers: dict[str, WireSizer] = {}

    # -- building the world ------------------------------------------------------------

    @staticmethod
    def address(index: int) -> str:
        return f"10.0.{index // 250}.{index % 250 + 1}:7946"

    def add(self, index: int, seeds: list[str], *, incarnation: int = 0) -> Swim:
        addr = self.address(index)
        meta = MemberMeta(f"n{index}", addr, addr.replace(":7946", ":8080"))
        sizer = WireSizer(meta.node_id)
        node = Swim(meta, self.config, random.Random(self.rng.random()), self.now,
                    incarnation=incarnation, sizer=sizer)
        self.nodes[addr] = node
        self._sizers[addr] = sizer
        self.running.add(addr)
        node.join(self.now, seeds)
        self._after(addr)
        return node

    def crash(self, index: int) -> None:
        self.running.discard(self.address(index))

    def leave(self, index: int) -> None:
        addr = self.address(index)
        self.nodes[addr].leave(self.now)
        self._after(addr)

    def partition(self, *groups: set[int]) -> None:
        self.groups = {self.address(i): g for g, members in enumerate(groups) for i in members}

    def heal(self) -> None:
        self.groups = {}

    def reachable(self, src: str, dst: str) -> bool:
        return dst in self.running and self.groups.get(src, -1) == self.groups.get(dst, -1)

    # -- running -----------------------------------------------------------------------

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def run_until(self, end: float) -> None:
        while self._heap and self._heap[0][0] <= end:
            when, _, addr, payload = heapq.heappop(self._heap)
            self.now = max(self.now, when)
            if addr not in self.running:
                continue
            node = self.nodes[addr]
            if payload is None:
                if node.next_deadline() > self.now + 1e-9:
                    continue
                node.tick(self.now)
            else:
                source, packet = cast(tuple[str, Packet], payload)
                node.receive(self.now, source, packet)
            self._after(addr)
        self.now = end

    def _push(self, when: float, addr: str, payload: object) -> None:
        self._order += 1
        heapq.heappush(self._heap, (when, self._order, addr, payload))

    def _after(self, addr: str) -> None:
        node = self.nodes[addr]
        for effect in node.drain():
            if isinstance(effect, Send):
                self._send(addr, effect)
            elif isinstance(effect, PushPullWith):
                self._push_pull(addr, effect.to)
            elif isinstance(effect, MemberChanged):
                self.events.append((self.now, node.me, effect))
        self._push(node.next_deadline(), addr, None)

    def _send(self, src: str, effect: Send) -> None:
        self.stats.packets[src] += 1
        self.stats.bytes[src] += self._datagram_size(effect.packet, self._sizers[src])
        if self.rng.random() < self.loss or not self.reachable(src, effect.to):
            self.stats.dropped += 1
            return
        self._push(self.now + self.rng.uniform(*self.latency_s), effect.to, (src, effect.packet))

    def _datagram_size(self, packet: Packet, sizer: WireSizer) -> int:
        """``datagram_size(packet, sender=...)`` of the sender whose ``sizer`` this is,
        exactly: the datagram of the message alone plus the encoded size of each update
        (an update's bytes do not depend on where in the packet it is)."""
        size = sizer.datagram(packet.message)
        sizes = self._update_sizes
        for update in packet.updates:
            known = sizes.get(id(update))
            if known is None or known[0] is not update:
                if len(sizes) >= 100_000:
                    sizes.clear()
                known = sizes[id(update)] = (update, update_size(update))
            size += known[1]
        return size

    def _push_pull(self, src: str, dst: str) -> None:
        if not self.reachable(src, dst):
            return
        self.stats.push_pulls += 1
        a, b = self.nodes[src], self.nodes[dst]
        mine, theirs = a.local_state(), b.local_state()
        b.merge(self.now, mine)
        a.merge(self.now, theirs)
        self._after(dst)

    # -- observing ---------------------------------------------------------------------

    def views(self) -> dict[str, dict[str, MemberState]]:
        """Each running node's view: member id -> state."""
        return {self.nodes[a].me: {m.node_id: m.state for m in self.nodes[a].view().members}
                for a in sorted(self.running)}

    def states(self, node_id: str) -> dict[str, MemberState | None]:
        """What each running node thinks of ``node_id`` (None: not in its view); what
        ``views()`` would say of it, without building every view."""
        states: dict[str, MemberState | None] = {}
        for a in sorted(self.running):
            member = self.nodes[a].member(node_id)
            states[self.nodes[a].me] = member.state if member is not None else None
        return states

    def converged(self, expected_alive: set[str]) -> bool:
        """Every running node sees exactly ``expected_alive`` as alive."""
        for view in self.views().values():
            alive = {k for k, s in view.items() if s is MemberState.ALIVE}
            if alive != expected_alive:
                return False
        return True

    def replay_hint(self) -> str:
        return f"seed={self.seed} (SwimSim({self.seed}, ...) replays this run)"
