"""Placement: an immutable consistent-hash ring with an epoch.

The ring is a value built from one membership view and swapped whole when the
view changes, so a lookup never sees a half-updated ring and is a pure
function of (ring, key). It wraps uhashring (ketama, virtual nodes, weights).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from uhashring import HashRing

from node.gossip.members import Member, MembershipView

VNODES_PER_WEIGHT = 160


@dataclass(frozen=True)
class Ring:
    epoch: int
    node_ids: tuple[str, ...]
    _ring: HashRing = field(repr=False, compare=False)

    @classmethod
    def build(cls, view: MembershipView) -> Ring:
        alive = sorted(view.live(), key=lambda m: m.node_id)
        nodes = {m.node_id: {"weight": m.weight, "vnodes": VNODES_PER_WEIGHT * m.weight}
                 for m in alive}
        return cls(view.version, tuple(nodes), HashRing(nodes=nodes))

    def walk(self, key: bytes) -> Iterator[str]:
        """Every node once, in ring order from the key: owners first, then handoffs."""
        if not self.node_ids:
            return iter(())
        return (n["nodename"] for n in self._ring.range(key.hex(), None, unique=True))

    def replicas_for(self, key: bytes, count: int) -> tuple[str, ...]:
        """The first ``count`` distinct nodes clockwise from the key (fewer if the ring is small)."""
        walker = self.walk(key)
        return tuple(node for _, node in zip(range(count), walker))


def single_node_view(member: Member) -> MembershipView:
    return MembershipView(members=(member,), version=1)
