"""Forming the first voter set from gossip, once: a pure decision function.

A node whose Raft state is empty publishes, in its gossip tags, ``raft=new``,
the ``expect`` it was started with and ``boot=<the lowest new member it
sees>``. A node with Raft state publishes ``raft=member``. Each node decides
from its own membership view:

* some live member already has Raft state: **join** the cluster through it
  (as a learner; the leader promotes learners to voters as needed). A node
  that joins this way starts fenced (no votes until the leader admits it,
  ``node.raft.core``), because it may be a voter whose disk was replaced,
  unless it was itself chosen for the first voter set while the group formed
  (with ``expect`` > 1): then it never held Raft state, and fencing the first
  voters would leave the group without a quorum that can elect;
* fewer than ``expect`` new members with the same ``expect`` are visible: **wait**;
* otherwise the voter set S is the ``expect`` lowest ids among them, and its
  lowest id L is the *bootstrapper*. L alone **bootstraps** (writes the one
  membership entry of S), and only when every member of S names L in its
  ``boot`` tag and S has not changed for ``settle_s``; the others wait for L's
  leader to reach them.

Why this is once: a node that has Raft state never bootstraps again (the
decision needs ``raft=new`` for itself, and the driver checks its disk), and
two different bootstrappers would need two sets whose every member named a
different lowest id at the same time, which the settle period rules out when
gossip views converge (they do within seconds on one network; a partition
during the very first seconds of a cluster's life is the residual risk, not
covered by a test). Should it happen anyway, each group has its own random id
(``TAG_GROUP``) and the two never take each other's members or messages; an
operator has to retire one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.gossip.members import Member, MembershipView

TAG_RAFT = "raft"
TAG_EXPECT = "expect"
TAG_BOOT = "boot"
#: The Raft group a member belongs to (random, chosen by the bootstrapper): groups
#: started apart under one cluster key never take each other's members or messages.
TAG_GROUP = "group"
#: Published while this member's Raft state is fenced (it joined with an empty log and has
#: not been admitted yet): the value the leader admits (``Membership.admitted``).
TAG_FENCE = "fence"
NEW = "new"
MEMBER = "member"


@dataclass(frozen=True, slots=True)
class Wait:
    why: str
    boot: str = ""  # the lowest new member seen: publish it as this node's boot tag


@dataclass(frozen=True, slots=True)
class Bootstrap:
    voters: frozenset[str]


@dataclass(frozen=True, slots=True)
class Join:
    via: tuple[str, ...]  # members with Raft state, to ask to add us as a learner
    #: This node was chosen for the first voter set of the group it joins (it has never
    #: voted or acknowledged anything): it need not be fenced.
    founding: bool = False


Decision = Wait | Bootstrap | Join


class Bootstrapper:
    """Remembers how long the candidate voter set has been stable."""

    def __init__(self, node_id: str, expect: int, settle_s: float) -> None:
        self.node_id = node_id
        self.expect = expect
        self.settle_s = settle_s
        self._set: frozenset[str] = frozenset()
        self._since = 0.0
        self._chosen = False

    def decide(self, now: float, view: MembershipView) -> Decision:
        live = view.live()
        members = tuple(sorted(m.node_id for m in live
                               if m.tags.get(TAG_RAFT) == MEMBER and m.node_id != self.node_id))
        if members:
            return Join(members, founding=self._chosen)
        new = sorted((m for m in live if _is_new(m, self.expect)), key=lambda m: m.node_id)
        if len(new) < self.expect:
            self._set = frozenset()
            return Wait(f"{len(new)} of {self.expect} expected nodes seen",
                        new[0].node_id if new else "")
        chosen = new[:self.expect]
        voters = frozenset(m.node_id for m in chosen)
        lowest = chosen[0].node_id
        if voters != self._set:
            self._set, self._since = voters, now
        # With expect 1 every node is a set of its own until it sees the others: no sign.
        self._chosen = self._chosen or (self.expect > 1 and self.node_id in voters)
        if self.node_id != lowest:
            return Wait(f"{lowest} bootstraps", lowest)
        if any(m.tags.get(TAG_BOOT) != lowest for m in chosen if m.node_id != self.node_id):
            return Wait("waiting for every chosen voter to name this node", lowest)
        if now - self._since < self.settle_s:
            return Wait("letting the view settle", lowest)
        return Bootstrap(voters)


def _is_new(member: Member, expect: int) -> bool:
    return member.tags.get(TAG_RAFT) == NEW and member.tags.get(TAG_EXPECT) == str(expect)
