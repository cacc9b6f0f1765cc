"""Raft's safety properties, checked while a simulation runs.

The properties (Raft paper, figure 3), and how each is checked here:

* **Election Safety**: at most one leader per term. Every time a node is seen
  leading (after every event it processed), its term is booked; a second node
  leading a booked term, crashed or not, is a violation. The durable votes
  behind it are checked too: a disk's term never goes back, and its vote
  never changes within a term; and a node never casts two ballots (a granted
  vote, or its own as a candidate) in one term, even across a replaced disk
  (``RaftSim.wipe``), which forgets its term and vote.
* **Log Matching**: two logs with an entry of the same index and term hold the
  same entries up to it. Checked as two global tables over the whole run
  (including logs since truncated): (index, term) names one entry, and the term
  of the entry before it; a log that disagrees with either broke the property.
  Every durable write is checked against its neighbours on disk at once; every
  node's in-memory log is scanned every ``scan_every`` events.
* **Leader Completeness**: an entry committed in term T is in the log of every
  leader of a later term. An entry counts as committed from the moment a leader
  (or any node) is seen with a commit index covering it; it is booked with that
  leader's term. Each new leader is checked against every booked entry, and each
  new booking against the current leaders of later terms.
* **State Machine Safety**: no two nodes apply different entries at the same
  index. Every applied entry is compared with the committed one and with what
  any other node applied there; the state machines' digests (a hash chain over
  the applied entries) must match at every index, including after a snapshot
  install, and at the end each node's map is replayed from the committed
  entries.
* **Durability**: nothing acknowledged before it is on disk (an AppendResponse
  only for entries the disk holds, a granted vote only once the disk holds
  it); a leader commits an index only when a quorum of its voters' disks hold
  it at that moment (an acknowledgement from before a disk was replaced does
  not count); and a committed entry survives any crashes: every quorum of the
  voters (of the membership committed last, and of the current leader's)
  contains a disk that holds it, so no election can lose it. A replaced disk
  that is still fenced (``HardState.fence``: it may not vote) counts as holding
  everything in both checks: no quorum that elects a leader can contain it, and
  once admitted it holds every entry before the admitting one.

A violation raises ``SafetyViolation`` naming the property, the simulated time
and the evidence. The pure checks (``LogMatching``, ``check_election_safety``,
``check_leader_completeness``, ``check_state_machines``, ``check_durable``) take
plain values, so hand-built bad histories test them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from node.raft.core import Raft, Ready, Role
from node.raft.log import RaftLog
from node.raft.messages import (AppendResponse, Entry, EntryKind, Membership, SnapshotMeta,
                                VoteRequest, VoteResponse)
from node.testing.raft_sim import GENESIS, Disk, RaftSim, SimNode, apply_command, chain

T = TypeVar("T")


class SafetyViolation(AssertionError):
    """A Raft safety property does not hold; the message says which, when and why."""


@dataclass(frozen=True, slots=True)
class LogView:
    """A log as the checks see it: the snapshot point, then contiguous entries."""

    owner: str
    snapshot_index: int
    snapshot_term: int
    entries: Sequence[Entry]

    @classmethod
    def of_log(cls, owner: str, log: RaftLog) -> LogView:
        return cls(owner, log.snapshot.index, log.snapshot.term,
                   [log.entry(i) for i in range(log.first_index, log.last_index + 1)])

    @classmethod
    def of_disk(cls, owner: str, disk: Disk) -> LogView:
        snap = disk.snapshot
        return cls(owner, snap.index if snap else 0, snap.term if snap else 0, disk.log())

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self.entries)

    def term_at(self, index: int) -> int | None:
        if index == self.snapshot_index:
            return self.snapshot_term
        offset = index - self.snapshot_index - 1
        if 0 <= offset < len(self.entries):
            return self.entries[offset].term
        return None


@dataclass(frozen=True, slots=True)
class Committed:
    """An entry known to be committed: its identity and the term it was first seen
    committed in (by ``by``)."""

    index: int
    term: int
    kind: EntryKind | None  # None when only a snapshot's (index, term) showed it
    data: bytes
    commit_term: int
    by: str


# -- the pure checks ---------------------------------------------------------------------


def check_election_safety(leaders: Iterable[tuple[int, str]]) -> dict[int, str]:
    """The leader of each term from (term, node) sightings; raises on a second leader."""
    by_term: dict[int, str] = {}
    for term, node in leaders:
        first = by_term.setdefault(term, node)
        if first != node:
            raise SafetyViolation(f"Election Safety: {first} and {node} both led term {term}")
    return by_term


class LogMatching:
    """(index, term) -> the one entry it names, and the term of the entry before it.

    The tables accumulate over a whole run: an entry once created at (index,
    term) is that entry forever, in every log, even after it was truncated.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[int, int], tuple[EntryKind, bytes, str]] = {}
        self._prev: dict[tuple[int, int], tuple[int, str]] = {}
        self.steps = 0

    def link(self, owner: str, prev_index: int, prev_term: int, entry: Entry) -> None:
        """``entry`` follows (prev_index, prev_term) in ``owner``'s log."""
        self.steps += 1
        if entry.index != prev_index + 1:
            raise SafetyViolation(f"Log Matching: {owner} has a gap: entry {entry.index} "
                                  f"follows index {prev_index}")
        if entry.term < prev_term:
            raise SafetyViolation(f"Log Matching: in {owner} the term goes back from "
                                  f"{prev_term} (index {prev_index}) to {entry.term} "
                                  f"(index {entry.index})")
        key = (entry.index, entry.term)
        kind, data, first = self._entries.setdefault(key, (entry.kind, entry.data, owner))
        if (kind, data) != (entry.kind, entry.data):
            raise SafetyViolation(
                f"Log Matching: two entries at index {entry.index} term {entry.term}: "
                f"{first} has {kind.name} {data!r}, {owner} has {entry.kind.name} "
                f"{entry.data!r}")
        before, first = self._prev.setdefault(key, (prev_term, owner))
        if before != prev_term:
            raise SafetyViolation(
                f"Log Matching: entry {entry.index} of term {entry.term} follows an entry "
                f"of term {before} in {first} but of term {prev_term} in {owner}: the logs "
                f"differ before an entry they share")

    def check(self, view: LogView) -> None:
        prev_index, prev_term = view.snapshot_index, view.snapshot_term
        for entry in view.entries:
            self.link(view.owner, prev_index, prev_term, entry)
            prev_index, prev_term = entry.index, entry.term


class Terms(Protocol):
    """A log as leader completeness reads it (``RaftLog`` and ``LogView`` both are)."""

    @property
    def last_index(self) -> int: ...

    def term_at(self, index: int) -> int | None: ...


def check_leader_completeness(leader: str, term: int, log: Terms,
                              committed: Iterable[Committed]) -> int:
    """Every entry committed in a term before ``term`` is in ``log`` (the log of the
    leader of ``term``); an index its snapshot covers counts as held (a snapshot is of
    committed state). Returns the number of entries checked."""
    checked = 0
    for entry in committed:
        if entry.commit_term >= term:
            continue  # committed in this term or later: not this leader's to hold
        checked += 1
        has = log.term_at(entry.index)
        if has == entry.term or (has is None and entry.index <= log.last_index):
            continue
        what = "nothing" if has is None else f"term {has}"
        raise SafetyViolation(
            f"Leader Completeness: {leader} leads term {term} but has {what} at index "
            f"{entry.index}, where an entry of term {entry.term} was committed in term "
            f"{entry.commit_term} (seen at {entry.by})")
    return checked


def check_state_machines(applied: Mapping[str, Mapping[int, tuple[int, EntryKind, bytes]]]
                         ) -> dict[int, tuple[int, EntryKind, bytes]]:
    """No two nodes applied different entries at one index; the agreed entries by index."""
    agreed: dict[int, tuple[int, EntryKind, bytes]] = {}
    first: dict[int, str] = {}
    for node in sorted(applied):
        for index, entry in applied[node].items():
            seen = agreed.setdefault(index, entry)
            first.setdefault(index, node)
            if seen != entry:
                raise SafetyViolation(
                    f"State Machine Safety: at index {index} {first[index]} applied "
                    f"{describe(seen)} but {node} applied {describe(entry)}")
    return agreed


def durable_prefix(disk: Disk, committed: Mapping[int, Committed], start: int = 0) -> int:
    """The last index up to which ``disk`` holds every committed entry (its snapshot
    counts), continuing from ``start`` (a prefix known to be held)."""
    snap = disk.snapshot
    index = max(start, snap.index if snap else 0)
    while (entry := disk.entries.get(index + 1)) is not None:
        known = committed.get(index + 1)
        if known is None or known.term != entry.term:
            break
        index += 1
    return index


def check_durable(prefixes: Mapping[str, int], index: int, membership: Membership,
                  why: str = "") -> None:
    """Every quorum of ``membership``'s voters includes a disk holding ``index`` (given
    each node's durable prefix), so no election can lose it."""
    holders = sorted(n for n in membership.voters if prefixes.get(n, 0) >= index)
    need = len(membership.voters) - membership.quorum() + 1
    if len(holders) < need:
        raise SafetyViolation(
            f"Durability: committed index {index} is on the disks of {holders} only; a "
            f"quorum of voters {sorted(membership.voters)}{why} can form without it "
            f"(durable prefixes: {dict(sorted(prefixes.items()))})")


def _holds(disk: Disk, index: int, term: int | None) -> bool:
    """Whether ``disk`` holds the entry (``index``, ``term``), in its log or its snapshot."""
    if disk.snapshot is not None and disk.snapshot.index >= index:
        return True
    entry = disk.entries.get(index)
    return entry is not None and entry.term == term


def describe(entry: tuple[int, EntryKind, bytes]) -> str:
    term, kind, data = entry
    return f"(term {term}, {kind.name}, {data!r})"


# -- the live checker --------------------------------------------------------------------


@dataclass
class _Seen:
    """What the checker last saw of one node's Raft object."""

    raft: Raft
    commit: int
    leading: int | None = None  # the term it was seen leading


@dataclass
class CheckerStats:
    steps: int = 0
    scans: int = 0
    committed: int = 0
    leaders: int = 0
    by_check: dict[str, int] = field(default_factory=dict)


class RaftChecker:
    """Hooks into a ``RaftSim`` and checks every property as the run goes.

    Cheap checks run on every event and every durable write; every
    ``scan_every`` events (and at every crash) each up node's in-memory log is
    checked for Log Matching (what changed since the last scan: an unchanged
    prefix is skipped) and durability is checked. Call ``finish()`` at the end
    for a last scan, a whole scan of every disk, and the state-machine replay.
    """

    def __init__(self, sim: RaftSim, *, scan_every: int = 64) -> None:
        self.sim = sim
        self.scan_every = scan_every
        self.stats = CheckerStats()
        self.leaders: dict[int, str] = {}
        self.committed: dict[int, Committed] = {}
        self.commit_max = 0
        self.matching = LogMatching()
        self._seen: dict[str, _Seen] = {}
        self._applied: dict[int, tuple[int, EntryKind, bytes, str]] = {}
        self._digests: list[str] = [GENESIS]  # the state machine's digest after each index
        self._configs: list[tuple[int, Membership]] = []  # committed memberships by index
        self._prefix: dict[str, int] = {}
        self._votes: dict[str, tuple[int, str | None]] = {}
        #: (node, term) -> whom the node gave its one ballot of that term; kept across wipes.
        self._ballots: dict[tuple[str, int], str] = {}
        self._since_scan = 0
        self._scanned: dict[str, tuple[SnapshotMeta, list[Entry]]] = {}
        sim.on_event.append(self._on_event)
        sim.on_persist.append(self._on_persist)
        sim.on_apply.append(self._on_apply)
        sim.on_install.append(self._on_install)
        sim.on_crash.append(self._on_crash)
        sim.on_wipe.append(self._on_wipe)

    @property
    def steps(self) -> int:
        return self.stats.steps + self.matching.steps

    def _count(self, check: str, n: int = 1) -> None:
        self.stats.steps += n
        self.stats.by_check[check] = self.stats.by_check.get(check, 0) + n

    def fail(self, message: str) -> SafetyViolation:
        return SafetyViolation(f"{message} [t={self.sim.now:.4f} s, seed={self.sim.seed}]")

    def _guard(self, check: Callable[..., T], *args: object) -> T:
        """Run a pure check, adding the time and seed to what it raises."""
        try:
            return check(*args)
        except SafetyViolation as exc:
            raise self.fail(str(exc)) from None

    # -- every event -----------------------------------------------------------------------

    def _on_event(self, node: SimNode) -> None:
        raft = node.raft
        seen = self._seen.get(node.id)
        if seen is None or seen.raft is not raft:
            # A new Raft object (a start or a restart): what it holds committed is checked.
            seen = self._seen[node.id] = _Seen(raft, raft.log.snapshot.index)
        if raft.role is Role.LEADER and seen.leading != raft.term:
            self._new_leader(node.id, raft)
            seen.leading = raft.term
        if raft.commit_index < seen.commit:
            raise self.fail(f"{node.id}'s commit index went back from {seen.commit} to "
                            f"{raft.commit_index}")
        if raft.commit_index > seen.commit:
            self._committed(node.id, raft, seen.commit + 1, raft.commit_index)
            seen.commit = raft.commit_index
        self._since_scan += 1
        if self._since_scan >= self.scan_every:
            self.scan()

    def _new_leader(self, node_id: str, raft: Raft) -> None:
        self.stats.leaders += 1
        self._count("election safety")
        first = self.leaders.setdefault(raft.term, node_id)
        if first != node_id:
            raise self.fail(f"Election Safety: {first} and {node_id} both led term {raft.term}")
        self._count("leader completeness",
                    self._guard(check_leader_completeness, node_id, raft.term, raft.log,
                                self.committed.values()))

    def _committed(self, node_id: str, raft: Raft, start: int, end: int) -> None:
        """``node_id`` now counts start..end as committed: book or compare each."""
        log = raft.log
        fresh: list[Committed] = []
        for index in range(max(start, log.snapshot.index), end + 1):
            if index == 0:
                continue
            self._count("commit agreement")
            if index == log.snapshot.index:
                term, kind, data = log.snapshot.term, None, b""
            else:
                entry = log.entry(index)
                term, kind, data = entry.term, entry.kind, entry.data
            known = self.committed.get(index)
            if known is None:
                known = Committed(index, term, kind, data, raft.term, node_id)
                self.committed[index] = known
                self.commit_max = max(self.commit_max, index)
                fresh.append(known)
                if kind is EntryKind.MEMBERSHIP:
                    self._configs.append((index, Membership.decode(data)))
            elif known.term != term or (kind is not None and known.kind is not None
                                        and (known.kind, known.data) != (kind, data)):
                raise self.fail(
                    f"State Machine Safety: {node_id} (term {raft.term}) committed index "
                    f"{index} with term {term} {data!r}, but {known.by} committed term "
                    f"{known.term} {known.data!r} there in term {known.commit_term}")
        self.stats.committed = len(self.committed)
        if raft.role is Role.LEADER:
            self._check_commit_quorum(node_id, raft, end)
        if fresh:
            for other in self.sim.nodes.values():
                r = other.raft
                if other.up and r.role is Role.LEADER and other.id != node_id:
                    self._count("leader completeness",
                                self._guard(check_leader_completeness, other.id, r.term,
                                            r.log, fresh))

    def _check_commit_quorum(self, node_id: str, raft: Raft, index: int) -> None:
        """The leader ``node_id`` just committed ``index``: a quorum of its voters' disks
        hold it now (acknowledgements are durable, and only a replaced disk loses them) or
        are fenced (replaced, not admitted yet: in no electing quorum, see ``check_durable``,
        and once admitted they hold everything before the admitting entry)."""
        self._count("commit quorum")
        term = raft.log.term_at(index)
        holders = sorted(v for v in raft.membership.voters if v in self.sim.nodes and (
            _holds(disk := self.sim.nodes[v].disk, index, term) or disk.hard_state.fence))
        if len(holders) < raft.membership.quorum():
            raise self.fail(
                f"Durability: {node_id} (term {raft.term}) committed index {index} but only "
                f"the disks of {holders} hold it, not a quorum of voters "
                f"{sorted(raft.membership.voters)}")

    # -- durable writes ----------------------------------------------------------------------

    def _on_persist(self, node: SimNode, ready: Ready) -> None:
        disk = node.disk
        owner = f"{node.id}'s disk"
        snap = disk.snapshot
        si, st = (snap.index, snap.term) if snap else (0, 0)
        if ready.snapshot is not None or ready.truncate_from is not None:
            self._prefix.pop(node.id, None)
        if ready.snapshot is not None and (first := disk.entries.get(si + 1)) is not None:
            self._guard(self.matching.link, owner, si, st, first)
        for entry in ready.entries:
            if entry.index <= si:
                continue  # written with a snapshot that covers it: a restart ignores it
            before = disk.entries.get(entry.index - 1)
            if before is not None:
                self._guard(self.matching.link, owner, before.index, before.term, entry)
            elif entry.index - 1 == si:
                self._guard(self.matching.link, owner, si, st, entry)
            else:
                raise self.fail(f"{owner} holds entry {entry.index} but not {entry.index - 1} "
                                f"(snapshot at {si}): a gap that a restart would cut")
            after = disk.entries.get(entry.index + 1)
            if after is not None:
                self._guard(self.matching.link, owner, entry.index, entry.term, after)
        if ready.hard_state is not None:
            self._check_vote(node.id, ready.hard_state.term, ready.hard_state.voted_for)
            if ready.hard_state.voted_for == node.id:
                self._ballot(node.id, ready.hard_state.term, node.id)
        self._check_acks(node, ready)

    def _check_vote(self, node_id: str, term: int, voted_for: str | None) -> None:
        self._count("durable votes")
        old_term, old_vote = self._votes.get(node_id, (0, None))
        if term < old_term:
            raise self.fail(f"{node_id}'s durable term went back from {old_term} to {term}")
        if term == old_term and old_vote is not None and voted_for != old_vote:
            raise self.fail(f"{node_id} voted twice in term {term}: for {old_vote}, then for "
                            f"{voted_for}")
        self._votes[node_id] = (term, voted_for)

    def _ballot(self, node_id: str, term: int, candidate: str) -> None:
        """``node_id`` votes for ``candidate`` in ``term``: its only ballot of that term."""
        self._count("one ballot per term")
        first = self._ballots.setdefault((node_id, term), candidate)
        if first != candidate:
            raise self.fail(f"Election Safety: {node_id} voted twice in term {term}: for "
                            f"{first}, then (its disk replaced since) for {candidate}")

    def _check_acks(self, node: SimNode, ready: Ready) -> None:
        """What ``ready.messages`` promise must already be on disk.

        A message of an older term than the disk's is stale (the node moved on in the
        same Ready, and may have dropped what it promised): its promise can no longer
        count, and it is skipped."""
        disk, raft = node.disk, node.raft
        hard = disk.hard_state
        snap = disk.snapshot
        si = snap.index if snap else 0
        for msg in ready.messages:
            if isinstance(msg, (VoteRequest, VoteResponse)) and msg.pre_vote:
                continue  # a pre-vote carries the term it proposes, and promises nothing
            self._count("durable before sent")
            if msg.term > hard.term:
                raise self.fail(f"{node.id} sends {type(msg).__name__} of term {msg.term} "
                                f"but its disk is at term {hard.term}")
            if msg.term < hard.term:
                continue
            if isinstance(msg, VoteResponse) and msg.granted:
                if hard.voted_for != msg.dest:
                    raise self.fail(f"{node.id} grants its vote in term {msg.term} to "
                                    f"{msg.dest} but its disk says it voted for "
                                    f"{hard.voted_for}")
                self._ballot(node.id, msg.term, msg.dest)
            if isinstance(msg, AppendResponse) and msg.success:
                for index in range(max(msg.prev_index, si) + 1, msg.match_index + 1):
                    self._count("durable before sent")
                    entry = disk.entries.get(index)
                    memory = raft.log.term_at(index)
                    if entry is None or (memory is not None and entry.term != memory):
                        held = "nothing" if entry is None else f"term {entry.term}"
                        raise self.fail(
                            f"{node.id} acknowledges entries up to {msg.match_index} to "
                            f"{msg.dest} (term {msg.term}) but its disk holds {held} at "
                            f"index {index} (its log: term {memory})")

    # -- the state machines ------------------------------------------------------------------

    def _on_apply(self, node: SimNode, entry: Entry) -> None:
        self._count("state machine safety")
        index = entry.index
        mine = (entry.term, entry.kind, entry.data)
        known = self.committed.get(index)
        if known is None or known.term != entry.term:
            what = "nothing" if known is None else f"term {known.term}"
            raise self.fail(f"State Machine Safety: {node.id} applied index {index} term "
                            f"{entry.term}, but what is known committed there is {what}")
        first = self._applied.setdefault(index, (*mine, node.id))
        if first[:3] != mine:
            raise self.fail(f"State Machine Safety: at index {index} {first[3]} applied "
                            f"{describe(first[:3])} but {node.id} applied {describe(mine)}")
        while len(self._digests) in self._applied:
            at = len(self._digests)
            term, kind, data, _ = self._applied[at]
            self._digests.append(chain(self._digests[-1], Entry(at, term, kind, data)))
        self._check_digest(node, index)

    def _on_install(self, node: SimNode, meta: SnapshotMeta) -> None:
        self._count("state machine safety")
        known = self.committed.get(meta.index)
        if known is not None and known.term != meta.term:
            raise self.fail(f"{node.id} installed a snapshot at index {meta.index} term "
                            f"{meta.term} where term {known.term} was committed")
        self._check_digest(node, meta.index)

    def _check_digest(self, node: SimNode, index: int) -> None:
        if index < len(self._digests) and node.disk.digest != self._digests[index]:
            raise self.fail(f"State Machine Safety: {node.id}'s state machine at index "
                            f"{index} differs from the state every other node reached there "
                            f"(digest {node.disk.digest} != {self._digests[index]})")

    # -- scans -------------------------------------------------------------------------------

    def _on_crash(self, node: SimNode) -> None:
        self.scan()

    def _on_wipe(self, node: SimNode) -> None:
        """A new, empty disk: what was known of the old one no longer holds (the ballots
        it cast do: the node must not cast another in those terms)."""
        self._votes.pop(node.id, None)
        self._prefix.pop(node.id, None)
        self._scanned.pop(node.id, None)

    def scan(self) -> None:
        """Log Matching over every up node's in-memory log, then durability. (Disks are
        checked at every write, and scanned whole by ``finish``.)"""
        self._since_scan = 0
        self.stats.scans += 1
        for node in self.sim.nodes.values():
            if node.up:
                self._scan_log(node.id, node.raft.log)
        self.check_durability()

    def _scan_log(self, node_id: str, log: RaftLog) -> None:
        """Check what changed in ``log`` since the last scan: most often a few entries
        appended, sometimes a compaction; after a truncation, everything."""
        entries = list(log.entries)
        snapshot = log.snapshot
        last = self._scanned.get(node_id)
        start = 0
        if last is not None:
            old_snapshot, old = last
            shift = snapshot.index - old_snapshot.index
            kept = old[shift:] if shift >= 0 else None
            if kept is not None and entries[:len(kept)] == kept:
                start = len(kept)
        self._scanned[node_id] = (snapshot, list(entries))
        if start == 0:
            prev_index, prev_term = snapshot.index, snapshot.term
        else:
            prev_index, prev_term = entries[start - 1].index, entries[start - 1].term
        for entry in entries[start:]:
            self._guard(self.matching.link, node_id, prev_index, prev_term, entry)
            prev_index, prev_term = entry.index, entry.term

    def committed_membership(self) -> Membership | None:
        """The membership of the last committed MEMBERSHIP entry, if any is known."""
        return self._configs[-1][1] if self._configs else None

    def check_durability(self) -> None:
        if not self._configs or self.commit_max == 0:
            return
        for node in self.sim.nodes.values():
            self._prefix[node.id] = durable_prefix(node.disk, self.committed,
                                                   self._prefix.get(node.id, 0))
        self._count("durability", len(self.sim.nodes))
        index = self.commit_max
        # A fenced disk (replaced, not yet admitted) cannot take part in an election: no
        # quorum that elects a leader contains it, so it counts as holding everything.
        prefixes = {**self._prefix, **{n.id: index for n in self.sim.nodes.values()
                                       if n.disk.hard_state.fence is not None}}
        self._guard(check_durable, prefixes, index, self._configs[-1][1],
                    f" (committed at {self._configs[-1][0]})")
        leader = self.sim.leader()
        if leader is not None and leader.raft.membership != self._configs[-1][1]:
            self._guard(check_durable, prefixes, index, leader.raft.membership,
                        f" (in {leader.id}'s log)")

    def finish(self) -> None:
        """A last scan (disks too), then every state machine against a replay of the
        committed log."""
        self.scan()
        for node in self.sim.nodes.values():
            self._guard(self.matching.check, LogView.of_disk(f"{node.id}'s disk", node.disk))
        self._guard(check_state_machines, self.sim.applied)
        kv: dict[str, str] = {}
        at: dict[int, dict[str, str]] = {0: {}}
        wanted = {node.disk.applied for node in self.sim.nodes.values()}
        for index in range(1, max(wanted, default=0) + 1):
            entry = self._applied.get(index)
            if entry is None:
                raise self.fail(f"no node applied index {index}, but some applied beyond it")
            apply_command(kv, Entry(index, entry[0], entry[1], entry[2]))
            if index in wanted:
                at[index] = dict(kv)
        for node in self.sim.nodes.values():
            self._count("state machine replay")
            if node.disk.kv != at[node.disk.applied]:
                raise self.fail(f"{node.id}'s map at index {node.disk.applied} is not the "
                                f"replay of the committed commands")
            self._check_digest(node, node.disk.applied)

