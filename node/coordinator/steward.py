"""Who votes: the leader's plan for the Raft membership, as a pure function.

The leader looks at its membership, its followers' progress and the gossip
view, and picks at most one single-server change at a time (Raft's rule), in
this order:

1. a member gossip sees alive, running Raft (tag ``raft=member``) and not in the
   membership joins as a **learner** (a new node, or one removed while it was
   down): it receives the log but does not vote. A member that came back with an
   empty log publishes a ``fence`` tag and is **admitted** under it first: in
   the change that adds it, or, if it is a member already (a replaced disk), in a
   change of nothing else. It votes again once it holds that entry
   (``node.raft.core``). A voter is not demoted meanwhile: a voter that does not
   vote costs the quorum what a demotion would, and demoting it could leave a
   voter set without a live quorum (three voters, one down, one replaced);
2. a voter gossip has reported dead or left for longer than ``replace_after_s``
   is **removed** when the voter set is full, so that a learner can take its
   place next;
3. a healthy learner (alive, and caught up to within ``catch_up_slack`` entries
   of the commit index) is **promoted** while there are fewer than
   ``max_voters`` voters;
4. a long-dead voter is **removed** once a learner has replaced it, or when at
   least three voters remain (a smaller quorum of live voters tolerates as many
   failures); a long-dead learner is removed so the leader stops sending to it.

A voter is never removed while it is alive: a partition that gossip cannot see
through heals by itself, and removing voters shrinks the quorum. The leader
never removes itself (it would rather transfer leadership first).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from node.gossip.members import MembershipView, MemberState
from node.raft.bootstrap import MEMBER, TAG_FENCE, TAG_GROUP, TAG_RAFT
from node.raft.messages import Membership

MAX_VOTERS = 5


@dataclass(frozen=True, slots=True)
class Change:
    """The next membership, and why (for the log)."""

    membership: Membership
    why: str


@dataclass(frozen=True, slots=True)
class Policy:
    replace_after_s: float
    max_voters: int = MAX_VOTERS
    catch_up_slack: int = 256


def plan(me: str, membership: Membership, matches: dict[str, int], commit_index: int,
         view: MembershipView, down_for: dict[str, float], policy: Policy, *,
         group: str | None = None) -> Change | None:
    """The next change to make, or None. ``down_for`` says how long each member has been
    dead or left in gossip (absent: alive, suspected or unknown). With ``group`` set,
    only members tagged with that group may join."""
    voters, learners = membership.voters, membership.learners

    def alive(node_id: str) -> bool:
        member = view.get(node_id)
        return node_id == me or (member is not None and member.state is MemberState.ALIVE)

    def long_down(node_id: str) -> bool:
        return node_id != me and down_for.get(node_id, 0.0) >= policy.replace_after_s

    running = [m for m in view.members
               if m.state is MemberState.ALIVE and m.tags.get(TAG_RAFT) == MEMBER
               and m.node_id != me and (group is None or m.tags.get(TAG_GROUP) == group)]
    fenced = sorted((m.node_id, fence) for m in running if (fence := m.tags.get(TAG_FENCE))
                    and membership.fence_of(m.node_id) != fence)
    if fenced:
        node, fence = fenced[0]
        if node in membership.members:
            return Change(membership.admit(node, fence),
                          f"{node} is back with an empty log (a replaced disk): admitted, it "
                          f"votes again once it holds this entry")
        return Change(membership.change(voters, learners | {node}).admit(node, fence),
                      f"{node} joins as a learner")
    joining = sorted(m.node_id for m in running if m.node_id not in membership.members)
    if joining:
        node = joining[0]
        return Change(membership.change(voters, learners | {node}), f"{node} joins as a learner")
    dead_voters = sorted(v for v in voters if long_down(v))
    healthy = sorted(n for n in learners if alive(n) and not long_down(n)
                     and matches.get(n, 0) + policy.catch_up_slack >= commit_index)
    if dead_voters and len(voters) >= policy.max_voters and healthy:
        node = dead_voters[0]
        return Change(membership.change(voters - {node}, learners),
                      f"voter {node} is down; making room for {healthy[0]}")
    if healthy and len(voters) < policy.max_voters:
        node = healthy[0]
        return Change(membership.change(voters | {node}, learners - {node}),
                      f"learner {node} is caught up: promoted to voter")
    if dead_voters and len(voters) - 1 >= 3:
        node = dead_voters[0]
        return Change(membership.change(voters - {node}, learners),
                      f"voter {node} has been down for {down_for[node]:.0f} s: removed")
    dead_learners = sorted(n for n in learners if long_down(n))
    if dead_learners:
        node = dead_learners[0]
        return Change(membership.change(voters, learners - {node}),
                      f"learner {node} has been down for {down_for[node]:.0f} s: removed")
    return None


class DownTimes:
    """How long each member has been dead or left, as seen by this node's gossip."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}

    def update(self, now: float, view: MembershipView,
               expected: Iterable[str] = ()) -> dict[str, float]:
        """``expected`` members missing from the view count as down too: gossip forgets the
        long dead (reaping), and a voter must not become irremovable by being forgotten."""
        seen = {m.node_id for m in view.members}
        down = {m.node_id for m in view.members
                if m.state in (MemberState.DEAD, MemberState.LEFT)}
        down |= set(expected) - seen
        self._since = {n: self._since.get(n, now) for n in down}
        return {n: now - since for n, since in self._since.items()}
