"""Member records: who is in the cluster, where to reach them, and in what state.

Every claim about a member carries an incarnation number, which only the
member itself raises (to refute a suspicion); the SWIM core
(``node.gossip.swim``) orders conflicting claims by it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class MemberState(enum.Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


@dataclass(frozen=True, slots=True)
class Member:
    node_id: str
    http_addr: str
    gossip_addr: str
    state: MemberState = MemberState.ALIVE
    incarnation: int = 0
    zone: str = ""
    weight: int = 1
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def version(self, tag: str) -> int:
        """The version number the member announces in ``tag``; 1 when it announces none
        (or nothing readable): software from before the tag existed."""
        value = self.tags.get(tag, "")
        return int(value) if value.isascii() and value.isdigit() else 1

    def to_json(self) -> dict[str, object]:
        return {"node_id": self.node_id, "http": self.http_addr, "gossip": self.gossip_addr,
                "state": self.state.value, "incarnation": self.incarnation,
                "zone": self.zone or None, "weight": self.weight}


@dataclass(frozen=True, slots=True)
class MembershipView:
    """An immutable snapshot of the members this node knows, with a version."""

    members: tuple[Member, ...]
    version: int = 0
    _by_id: Mapping[str, Member] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {m.node_id: m for m in self.members})

    def get(self, node_id: str) -> Member | None:
        return self._by_id.get(node_id)

    def alive(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.state is MemberState.ALIVE)

    def live(self) -> tuple[Member, ...]:
        """Alive or suspected: a suspect is presumed alive until declared dead."""
        return tuple(m for m in self.members
                     if m.state in (MemberState.ALIVE, MemberState.SUSPECT))
