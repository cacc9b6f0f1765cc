"""Placement: an immutable consistent-hash ring with an epoch.

The ring is a value built from one membership view and swapped whole when the
view changes, so a lookup never sees a half-updated ring and is a pure
function of (ring, key). It wraps uhashring (ketama): every node gets
``VNODES_PER_WEIGHT * weight`` points, so a node declaring twice the capacity
owns about twice the data.

A key's *preference list* is every node once: first its owners, then the
handoff order. Owners are picked walking clockwise from the key, taking a node
only if its zone is not already among the owners, until R owners are found or
every zone has one; the rest of the R come from the walk in order. Nodes that
declare no zone are each their own zone, so without zones this is the plain
ring order (Dynamo's preference list). The handoff order is the remaining
nodes in ring order: stable, and the same on every node that has the same view,
so a write that cannot reach an owner goes to the same stand-in everywhere.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from uhashring import HashRing

from node.gossip.members import Member, MembershipView

VNODES_PER_WEIGHT = 160


@dataclass(frozen=True)
class Ring:
    epoch: int
    node_ids: tuple[str, ...]
    #: Each node's failure domain (its own id when it declares none).
    zones: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    zone_count: int = 0
    _ring: HashRing = field(default=None, repr=False, compare=False)
    #: The continuum from uhashring, as two parallel sorted tuples (point, node).
    _points: tuple[int, ...] = field(default=(), repr=False, compare=False)
    _point_nodes: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def build(cls, view: MembershipView) -> Ring:
        live = sorted(view.live(), key=lambda m: m.node_id)
        # uhashring gives a node weight * vnodes points (passing both scaled would square
        # the weight).
        nodes = {m.node_id: {"weight": m.weight, "vnodes": VNODES_PER_WEIGHT} for m in live}
        zones = MappingProxyType({m.node_id: m.zone or f"node:{m.node_id}" for m in live})
        ring = HashRing(nodes=nodes)
        points = ring.get_points()
        return cls(view.version, tuple(nodes), zones, len(set(zones.values())), ring,
                   tuple(p for p, _ in points), tuple(n for _, n in points))

    def walk(self, key: bytes) -> Iterator[str]:
        """Every node once, in ring order clockwise from the key. (uhashring's own
        ``range`` copies the continuum's tail on every call: too slow for 1000 nodes.)"""
        points, owners = self._points, self._point_nodes
        if not points:
            return
        start = bisect_right(points, self._ring.hashi(key.hex()))
        seen: set[str] = set()
        total = len(self.node_ids)
        size = len(points)
        for i in range(start, start + size):
            node = owners[i % size]
            if node not in seen:
                seen.add(node)
                yield node
                if len(seen) == total:
                    return

    def preference(self, key: bytes, count: int) -> Iterator[str]:
        """Every node once: the ``count`` owners of ``key`` (distinct zones first), then
        the handoff order. Lazy: taking the first few nodes walks only a little."""
        owners = 0
        used: set[str] = set()
        passed: list[str] = []  # walked but not taken, in ring order
        walker = self.walk(key)
        for node in walker:
            zone = self.zones[node]
            if owners < count and zone not in used:
                owners += 1
                used.add(zone)
                yield node
            else:
                passed.append(node)
            if owners == count or len(used) == self.zone_count:
                break
        # R owners found, or every zone has one: the rest (the remaining owners when zones
        # are fewer than R, then the handoffs) follow in ring order.
        yield from passed
        yield from walker

    def replicas_for(self, key: bytes, count: int) -> tuple[str, ...]:
        """The ``count`` owners of ``key`` (fewer if the ring is small)."""
        return tuple(node for _, node in zip(range(count), self.preference(key, count)))

    def handoffs(self, key: bytes, count: int) -> tuple[str, ...]:
        """The nodes after the owners, in the order a write looks for a stand-in."""
        return tuple(self.preference(key, count))[count:]


def single_node_view(member: Member) -> MembershipView:
    return MembershipView(members=(member,), version=1)
