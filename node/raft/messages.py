"""Raft's nouns as frozen values: log entries, memberships and the RPC messages.

Every message names its ``source`` and ``dest`` and carries the sender's
``term``. Requests and responses are separate one-way messages (as in the
Raft paper's reference implementation): the driver may deliver them in any
order, late, twice or never, and the core copes with all of it.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Union


class EntryKind(enum.IntEnum):
    COMMAND = 0    # opaque bytes for the state machine (a metadata command)
    MEMBERSHIP = 1  # a new Membership, in force from the moment it is in a log
    NOOP = 2       # a new leader's first entry, so entries of older terms can commit


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    kind: EntryKind = EntryKind.COMMAND
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Membership:
    """Voters decide elections and commits; learners only receive the log.

    ``admitted`` pairs a member with the fence its Raft state was created with
    (``HardState.fence``): the leader's acknowledgement that this member came back
    with an empty log (a new node, or a replaced disk). A member fenced with that
    value may vote again once it holds an entry that carries the pair; the pair
    stays in every later membership while the node is a member.
    """

    voters: frozenset[str] = frozenset()
    learners: frozenset[str] = frozenset()
    admitted: frozenset[tuple[str, str]] = frozenset()

    def __post_init__(self) -> None:
        if self.voters & self.learners:
            raise ValueError(f"both voter and learner: {sorted(self.voters & self.learners)}")
        nodes = [node for node, _ in self.admitted]
        if len(set(nodes)) != len(nodes) or not set(nodes) <= self.members:
            raise ValueError("admitted names members, each once")

    @property
    def members(self) -> frozenset[str]:
        return self.voters | self.learners

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def fence_of(self, node: str) -> str | None:
        """The fence ``node`` was admitted with, if any."""
        return next((fence for n, fence in self.admitted if n == node), None)

    def admit(self, node: str, fence: str) -> Membership:
        """The same members, with ``node`` (a member) admitted under ``fence``."""
        kept = frozenset(pair for pair in self.admitted if pair[0] != node)
        return Membership(self.voters, self.learners, kept | {(node, fence)})

    def change(self, voters: frozenset[str], learners: frozenset[str]) -> Membership:
        """New voters and learners; members that stay keep their admissions."""
        members = voters | learners
        return Membership(voters, learners,
                          frozenset(pair for pair in self.admitted if pair[0] in members))

    def encode(self) -> bytes:
        body: dict[str, object] = {"voters": sorted(self.voters),
                                   "learners": sorted(self.learners)}
        if self.admitted:
            body["admitted"] = dict(sorted(self.admitted))
        return json.dumps(body).encode()

    @classmethod
    def decode(cls, data: bytes) -> Membership:
        """Raises ValueError for anything but the output of ``encode``."""
        body = json.loads(data)
        if not isinstance(body, dict) or not {"voters", "learners"} <= set(body) \
                <= {"voters", "learners", "admitted"}:
            raise ValueError("a membership has exactly voters and learners (and admissions)")
        lists = body["voters"], body["learners"]
        if not all(isinstance(ids, list) and all(isinstance(i, str) and i for i in ids)
                   for ids in lists):
            raise ValueError("voters and learners are lists of node ids")
        admitted = body.get("admitted", {})
        if not isinstance(admitted, dict) or ("admitted" in body and not admitted) or \
                not all(isinstance(fence, str) and fence for fence in admitted.values()):
            raise ValueError("admitted maps node ids to fences (and is left out when empty)")
        return cls(frozenset(lists[0]), frozenset(lists[1]), frozenset(admitted.items()))


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What a snapshot covers: the state after applying every entry up to ``index``."""

    index: int
    term: int
    membership: Membership


# -- messages --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VoteRequest:
    term: int
    source: str
    dest: str
    last_index: int
    last_term: int
    #: A pre-vote asks "would you vote for me at ``term``?" without anyone changing term.
    pre_vote: bool = False
    #: Sent because the leader handed over (TimeoutNow): voters ignore their leader lease.
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse:
    term: int
    source: str
    dest: str
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendRequest:
    term: int
    source: str
    dest: str
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    #: The leader's heartbeat round; echoed, so a ReadIndex knows a quorum still follows.
    round: int = 0
    #: A read lease for the follower (``node.raft.leases``): the latest round of the
    #: follower's answers the leader has received, and the lease's length. 0: none.
    lease_round: int = 0
    lease_ms: int = 0
    #: Every entry up to here is applied on every node that holds a lease.
    stable: int = 0


@dataclass(frozen=True, slots=True)
class AppendResponse:
    term: int
    source: str
    dest: str
    success: bool
    #: On success the follower's last index that matches the leader (prev + entries).
    match_index: int
    #: On failure, where the leader should look next (fast backtracking).
    conflict_index: int = 0
    conflict_term: int = 0
    #: The prev_index of the request answered, so a stale rejection can be recognised.
    prev_index: int = 0
    round: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """InstallSnapshot. ``data`` is whatever the driver uses to carry the state (bytes in
    simulation, a file the driver streamed in for real); the core only passes it on."""

    term: int
    source: str
    dest: str
    meta: SnapshotMeta
    data: object = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class SnapshotResponse:
    term: int
    source: str
    dest: str
    match_index: int


@dataclass(frozen=True, slots=True)
class Applied:
    """A follower tells the leader what it has applied, as soon as it has: acknowledged
    writes wait for every lease holder (``node.raft.leases``)."""

    term: int
    source: str
    dest: str
    applied: int


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer: the leader tells an up-to-date voter to start an election now."""

    term: int
    source: str
    dest: str


Message = Union[VoteRequest, VoteResponse, AppendRequest, AppendResponse, SnapshotRequest,
                SnapshotResponse, TimeoutNow, Applied]
