"""The sans-I/O Raft core (node.raft.core), driven by hand.

One to five ``Raft`` objects share a ``Cluster``: a tiny driver that keeps the
contract of the core's docstring (persist a Ready into a dict "disk", then send
its messages, apply its committed entries, ``advance()``). Messages are not
delivered until a test says so: ``deliver()`` hands over everything in flight
(FIFO, with zero latency) until the network is quiet, and a ``hold`` predicate
keeps chosen messages back so a test can reorder, duplicate or drop them. Time
is an explicit float (``cluster.now``); ``run(seconds)`` steps it, ticking every
node and delivering after each step. Randomness is seeded per node.

Every disk write also checks the one invariant a driver cannot repair: a node
never acknowledges (AppendResponse success) entries its disk does not hold.

The logs of hand-built scenarios are written as lists of terms after the
bootstrap entry: ``[1, 1, 4]`` is index 2-3 at term 1 and index 4 at term 4.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable
from typing import TypeVar, cast

import pytest

from node.raft.core import (ChangeInProgress, HardState, NotLeader, Raft, RaftConfig, Ready,
                            ReadState, Role)
from node.raft.messages import (AppendRequest, AppendResponse, Applied, Entry, EntryKind, Membership,
                                Message, SnapshotMeta, SnapshotRequest, SnapshotResponse,
                                TimeoutNow, VoteRequest, VoteResponse)
from node.testing.raft_sim import Disk

CONFIG = RaftConfig(election_timeout_s=1.0, heartbeat_interval_s=0.1,
                    max_append_bytes=1 << 20, transfer_timeout_s=2.0)
T = CONFIG.election_timeout_s
#: One entry per AppendRequest: lets a test stop replication between two entries.
ONE_BY_ONE = RaftConfig(election_timeout_s=1.0, heartbeat_interval_s=0.1, max_append_bytes=1,
                        transfer_timeout_s=2.0)

Hold = Callable[[Message], bool]
M = TypeVar("M", bound=Message)


def members(voters: Iterable[str], learners: Iterable[str] = ()) -> Membership:
    return Membership(frozenset(voters), frozenset(learners))


def bootstrap_entry(membership: Membership) -> Entry:
    return Entry(1, 0, EntryKind.MEMBERSHIP, membership.encode())


def log_entries(membership: Membership, terms: list[int]) -> list[Entry]:
    """The bootstrap entry, then one command per term in ``terms`` (from index 2)."""
    return [bootstrap_entry(membership)] + [
        Entry(2 + i, term, data=f"e{2 + i}t{term}".encode()) for i, term in enumerate(terms)]


class Cluster:
    def __init__(self, voters: Iterable[str], *, learners: Iterable[str] = (),
                 empty: Iterable[str] = (), seed: int = 1, config: RaftConfig = CONFIG,
                 logs: dict[str, list[int]] | None = None,
                 terms: dict[str, int] | None = None) -> None:
        self.config = config
        self.rng = random.Random(seed)
        self.now = 0.0
        self.membership = members(voters, learners)
        self.disks: dict[str, Disk] = {}
        self.nodes: dict[str, Raft] = {}
        self.inflight: list[Message] = []
        self.sent: list[Message] = []
        self.readies: dict[str, list[Ready]] = {}
        self.applied: dict[str, list[Entry]] = {}
        self.reads: dict[str, list[ReadState]] = {}
        self.down: set[str] = set()
        self.groups: dict[str, int] = {}
        for node_id in sorted(self.membership.members):
            disk = Disk()
            for entry in log_entries(self.membership, (logs or {}).get(node_id, [])):
                disk.entries[entry.index] = entry
            disk.hard_state = HardState((terms or {}).get(node_id, 0), None)
            self.disks[node_id] = disk
        for node_id in empty:
            self.disks[node_id] = Disk()
        for node_id in self.disks:
            self.start(node_id)

    # -- nodes ----------------------------------------------------------------------------

    def start(self, node_id: str) -> Raft:
        """(Re)create the node from its disk, as after a crash."""
        disk = self.disks[node_id]
        raft = Raft(node_id, self.config, random.Random(self.rng.random()), self.now,
                    hard_state=disk.hard_state, snapshot=disk.snapshot, entries=disk.log(),
                    applied=disk.applied)
        self.nodes[node_id] = raft
        self.down.discard(node_id)
        self.readies.setdefault(node_id, [])
        self.applied.setdefault(node_id, [])
        self.reads.setdefault(node_id, [])
        self.flush(node_id)
        return raft

    def crash(self, node_id: str) -> None:
        self.down.add(node_id)

    def partition(self, *groups: Iterable[str]) -> None:
        self.groups = {n: g for g, group in enumerate(groups) for n in group}

    def heal(self) -> None:
        self.groups = {}

    def link_ok(self, src: str, dst: str) -> bool:
        return src not in self.down and dst not in self.down and dst in self.nodes and \
            self.groups.get(src, -1) == self.groups.get(dst, -1)

    def __getitem__(self, node_id: str) -> Raft:
        return self.nodes[node_id]

    # -- the driver loop ------------------------------------------------------------------

    def flush(self, node_id: str) -> None:
        """Persist, send, apply and advance until the node has nothing more to say."""
        raft = self.nodes[node_id]
        for _ in range(100):
            ready = raft.ready()
            if not ready:
                return
            self.readies[node_id].append(ready)
            self.persist(node_id, ready)
            self.sent.extend(ready.messages)
            self.inflight.extend(ready.messages)
            self.apply(node_id, ready)
            self.reads[node_id].extend(ready.reads)
            raft.advance(ready)
        raise AssertionError(f"{node_id} produced Ready forever")

    def persist(self, node_id: str, ready: Ready) -> None:
        disk = self.disks[node_id]
        disk.save(ready)
        if ready.snapshot is not None:
            disk.applied = max(disk.applied, ready.snapshot.meta.index)
        self.check_acks_are_durable(node_id, ready)

    def check_acks_are_durable(self, node_id: str, ready: Ready) -> None:
        disk = self.disks[node_id]
        raft = self.nodes[node_id]
        base = disk.snapshot.index if disk.snapshot else 0
        for msg in ready.messages:
            if isinstance(msg, AppendResponse) and msg.success:
                for index in range(base + 1, msg.match_index + 1):
                    held = disk.entries.get(index)
                    assert held is not None and held.term == raft.log.term_at(index), (
                        f"{node_id} acked {msg.match_index} but its disk holds {held} at {index}")

    def apply(self, node_id: str, ready: Ready) -> None:
        disk = self.disks[node_id]
        for entry in ready.committed:
            if entry.index <= disk.applied:
                continue
            assert entry.index == disk.applied + 1, (node_id, entry, disk.applied)
            disk.applied = entry.index
            self.applied[node_id].append(entry)

    # -- time and messages ----------------------------------------------------------------

    def tick(self, node_id: str, now: float | None = None) -> None:
        if now is not None:
            self.now = max(self.now, now)
        self.nodes[node_id].tick(self.now)
        self.flush(node_id)
        assert self.nodes[node_id].next_deadline() > self.now

    def receive(self, msg: Message) -> None:
        self.nodes[msg.dest].receive(self.now, msg)
        self.flush(msg.dest)

    def deliver(self, hold: Hold | None = None, limit: int = 20_000) -> int:
        """Deliver everything in flight (and what that provokes) except what ``hold`` keeps
        back; messages over a cut link or to a crashed node are lost."""
        delivered = 0
        while delivered < limit:
            batch, self.inflight = self.inflight, []
            kept: list[Message] = []
            progressed = False
            for msg in batch:
                if hold is not None and hold(msg):
                    kept.append(msg)
                    continue
                if self.link_ok(msg.source, msg.dest):
                    self.receive(msg)
                    delivered += 1
                progressed = True
            self.inflight = kept + self.inflight
            if not progressed:
                return delivered
        raise AssertionError("the network never went quiet")

    def take(self, pred: Hold) -> list[Message]:
        """Remove the in-flight messages matching ``pred`` (asked once each); return them."""
        taken: list[Message] = []
        kept: list[Message] = []
        for msg in self.inflight:
            (taken if pred(msg) else kept).append(msg)
        self.inflight = kept
        return taken

    def run(self, seconds: float, dt: float = 0.02, hold: Hold | None = None,
            until: Callable[[], bool] | None = None) -> float:
        """Step time, ticking every live node and delivering after each step; returns the
        time at which ``until`` first held (or the end)."""
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = min(end, self.now + dt)
            for node_id in sorted(self.nodes):
                if node_id not in self.down:
                    self.tick(node_id)
            self.deliver(hold)
            if until is not None and until():
                return self.now
        return self.now

    def campaign(self, node_id: str, hold: Hold | None = None) -> None:
        """Let ``node_id``'s election timer fire (nobody else's) and deliver the results."""
        self.tick(node_id, self.nodes[node_id].next_deadline())
        self.deliver(hold)

    # -- clients and views ----------------------------------------------------------------

    def leaders(self) -> list[str]:
        return sorted(n for n, r in self.nodes.items() if n not in self.down and r.is_leader)

    def leader(self) -> str:
        leaders = self.leaders()
        assert len(leaders) == 1, leaders
        return leaders[0]

    def propose(self, node_id: str, data: bytes) -> Entry:
        entry = self.nodes[node_id].propose(self.now, data)
        self.flush(node_id)
        return entry

    def read(self, node_id: str, context: object) -> None:
        self.nodes[node_id].read_index(self.now, context)
        self.flush(node_id)

    def change(self, node_id: str, membership: Membership) -> Entry:
        entry = self.nodes[node_id].change_membership(self.now, membership)
        self.flush(node_id)
        return entry

    def snapshot(self, node_id: str, index: int) -> SnapshotMeta:
        """Take a snapshot of ``node_id``'s applied state at ``index`` and compact."""
        meta = self.nodes[node_id].snapshot_meta(index)
        disk = self.disks[node_id]
        disk.snapshot = meta
        for i in [i for i in disk.entries if i <= index]:
            del disk.entries[i]
        self.nodes[node_id].compact(meta)
        return meta

    def sent_of(self, kind: type[M], src: str | None = None, dest: str | None = None,
                since: int = 0) -> list[M]:
        return [m for m in self.sent[since:] if isinstance(m, kind) and
                (src is None or m.source == src) and (dest is None or m.dest == dest)]

    def applied_data(self, node_id: str) -> list[bytes]:
        return [e.data for e in self.applied[node_id] if e.kind is EntryKind.COMMAND]


def elected(voters: Iterable[str] = ("a", "b", "c"), leader: str = "a", *,
            empty: Iterable[str] = (), seed: int = 1, config: RaftConfig = CONFIG) -> Cluster:
    """A cluster where ``leader`` won the first election and its no-op is committed."""
    cluster = Cluster(voters, empty=empty, seed=seed, config=config)
    cluster.campaign(leader)
    assert cluster.leaders() == [leader]
    cluster.run(0.2)  # a heartbeat round spreads the commit index
    return cluster


def to(*dests: str) -> Hold:
    return lambda m: m.dest in dests


# == elections ================================================================================


def test_a_single_voter_elects_itself_without_waiting_out_a_timeout() -> None:
    c = Cluster(["a"])
    assert c["a"].role is Role.FOLLOWER
    assert c["a"].next_deadline() == 0.0  # alone: nobody else could lead
    c.run(0.001)
    assert c["a"].is_leader
    assert c["a"].term == 1
    assert c.sent == []  # nobody to ask
    assert c.disks["a"].hard_state == HardState(1, "a")
    # Its no-op (and the bootstrap entry before it) committed on its own persistence.
    assert [e.kind for e in c.applied["a"]] == [EntryKind.MEMBERSHIP, EntryKind.NOOP]


@pytest.mark.parametrize("seed", range(5))
def test_three_voters_elect_exactly_one_leader(seed: int) -> None:
    c = Cluster(["a", "b", "c"], seed=seed)
    c.run(10 * T, until=lambda: bool(c.leaders()))
    leader = c.leader()
    c.run(5 * T)
    assert c.leaders() == [leader]
    term = c[leader].term
    for node_id in "abc":
        assert c[node_id].term == term
        assert c[node_id].leader == leader
        assert c[node_id].commit_index == c[leader].commit_index == 2
    # At most one leader per term: one sender of AppendRequests per term.
    by_term: dict[int, set[str]] = {}
    for msg in c.sent_of(AppendRequest):
        by_term.setdefault(msg.term, set()).add(msg.source)
    assert all(len(sources) == 1 for sources in by_term.values()), by_term


def test_pre_vote_does_not_bump_anyones_term() -> None:
    c = Cluster(["a", "b", "c"])
    c.tick("a", c["a"].next_deadline())
    assert c["a"].role is Role.PRE_CANDIDATE
    requests = c.take(lambda m: isinstance(m, VoteRequest))
    assert sorted(m.dest for m in requests) == ["b", "c"]
    assert all(isinstance(m, VoteRequest) and m.pre_vote and m.term == 1 for m in requests)
    for msg in requests:
        c.receive(msg)
    responses = c.take(lambda m: isinstance(m, VoteResponse))
    assert all(isinstance(m, VoteResponse) and m.pre_vote and m.granted for m in responses)
    assert [c[n].term for n in "abc"] == [0, 0, 0]
    assert all(c.disks[n].hard_state == HardState(0, None) for n in "abc")
    assert all(r.hard_state is None for n in "abc" for r in c.readies[n])
    # Only the real election (after the pre-vote won) changes terms.
    c.receive(responses[0])
    assert (c["a"].role, c["a"].term) == (Role.CANDIDATE, 1)
    assert c.disks["a"].hard_state == HardState(1, "a")


def test_a_partitioned_node_keeps_its_term_and_does_not_disrupt_on_return() -> None:
    c = elected()
    term = c["a"].term
    c.partition(["a", "b"], ["c"])
    c.run(10 * T)
    assert c["c"].term == term  # it stood many times, but only in pre-votes
    assert c["c"].stats["elections"] == 0
    assert c.sent_of(VoteRequest, src="c")
    assert all(isinstance(m, VoteRequest) and m.pre_vote for m in c.sent_of(VoteRequest, src="c"))
    assert c.leaders() == ["a"]
    c.propose("a", b"while c was away")
    c.run(0.1)
    c.heal()
    c.run(5 * T)
    assert c.leaders() == ["a"]
    assert [c[n].term for n in "abc"] == [term] * 3
    assert c["c"].role is Role.FOLLOWER and c["c"].leader == "a"
    assert c.applied_data("c") == [b"while c was away"]


def test_the_vote_lease_ignores_a_disruptive_candidate() -> None:
    c = elected()
    term = c["a"].term
    last = c["c"].log
    sent = len(c.sent)
    # A real (not pre-) vote request at a much higher term with an up-to-date log.
    for dest in ("a", "b"):
        c.receive(VoteRequest(term + 5, "c", dest, last.last_index, last.last_term))
    assert [c[n].term for n in "ab"] == [term, term]
    assert c["a"].is_leader and c["b"].voted_for == "a"  # its vote of term 1 stands
    assert c.sent_of(VoteResponse, since=sent) == []
    # Once the lease ran out (no heartbeat for an election timeout), b listens.
    c.partition(["a"], ["b", "c"])
    c.now += T
    c.receive(VoteRequest(term + 5, "c", "b", last.last_index, last.last_term))
    assert c["b"].term == term + 5 and c["b"].voted_for == "c"


def _vote(c: Cluster, voter: str, candidate: str, term: int, last_index: int,
          last_term: int) -> VoteResponse:
    c.receive(VoteRequest(term, candidate, voter, last_index, last_term))
    (resp,) = c.take(lambda m: isinstance(m, VoteResponse) and m.source == voter)
    assert isinstance(resp, VoteResponse)
    return resp


def test_a_candidate_with_a_stale_log_loses_by_term_and_by_index() -> None:
    # b's log ends (4, term 2). No leader is known, so no lease is in the way.
    c = Cluster(["a", "b", "c"], logs={"b": [1, 2, 2]}, terms={"b": 2})
    # Longer log but an older last term: refused.
    assert not _vote(c, "b", "a", 3, 9, 1).granted
    # Same last term, shorter log: refused.
    assert not _vote(c, "b", "a", 4, 3, 2).granted
    assert c["b"].voted_for is None and c["b"].term == 4
    # The same last term and index (or a newer term) wins.
    assert _vote(c, "b", "c", 5, 4, 2).granted
    assert c["b"].voted_for == "c"


def test_a_stale_candidate_cannot_even_win_its_pre_vote() -> None:
    c = Cluster(["a", "b", "c"], logs={"a": [1, 1], "b": [1, 1], "c": [1]}, terms=dict.fromkeys(
        "abc", 1))
    for _ in range(3):
        c.campaign("c")
        assert c["c"].role is Role.PRE_CANDIDATE
    assert [c[n].term for n in "abc"] == [1, 1, 1]
    assert c.sent_of(VoteRequest, src="c") and all(
        isinstance(m, VoteRequest) and m.pre_vote for m in c.sent_of(VoteRequest, src="c"))
    assert all(isinstance(m, VoteResponse) and not m.granted
               for m in c.sent_of(VoteResponse, dest="c"))
    c.campaign("a")
    assert c.leaders() == ["a"]


def test_a_vote_is_persisted_in_the_same_ready_as_the_response() -> None:
    c = Cluster(["a", "b", "c"])
    c.receive(VoteRequest(1, "a", "b", 1, 0))
    ready = c.readies["b"][-1]
    assert ready.hard_state == HardState(1, "a")
    assert ready.messages == [VoteResponse(1, "b", "a", True)]
    c.take(lambda m: True)
    # The candidate's own term and vote go out with its requests too.
    c.tick("c", c["c"].next_deadline())
    c.deliver(hold=lambda m: isinstance(m, VoteRequest) and not m.pre_vote)
    ready = c.readies["c"][-1]
    assert ready.hard_state == HardState(c["c"].term, "c")
    assert {type(m) for m in ready.messages} == {VoteRequest}


def test_a_restarted_voter_remembers_its_vote() -> None:
    c = Cluster(["a", "b", "c"])
    assert _vote(c, "b", "a", 3, 1, 0).granted
    c.crash("b")
    c.start("b")
    assert (c["b"].term, c["b"].voted_for) == (3, "a")
    assert not _vote(c, "b", "c", 3, 1, 0).granted
    assert _vote(c, "b", "a", 3, 1, 0).granted  # asking again is fine
    assert _vote(c, "b", "c", 4, 1, 0).granted  # a new term, a new vote


# == replication ==============================================================================


def test_a_single_voter_commits_only_after_its_own_write() -> None:
    c = elected(["a"])
    raft = c["a"]
    entry = raft.propose(c.now, b"x")
    ready = raft.ready()
    assert ready.entries == [entry] and ready.committed == []
    assert raft.commit_index < entry.index
    c.persist("a", ready)
    raft.advance(ready)
    assert raft.commit_index == entry.index
    assert raft.ready().committed == [entry]


def test_the_leaders_own_write_counts_only_after_advance() -> None:
    c = elected()
    raft = c["a"]
    entry = raft.propose(c.now, b"x")
    ready = raft.ready()  # a's disk write is "in flight": not advanced yet
    assert entry in ready.entries
    c.persist("a", ready)
    for msg in ready.messages:
        if msg.dest == "b":
            c.receive(msg)  # c never hears of it
    (ack,) = c.take(lambda m: isinstance(m, AppendResponse) and m.source == "b")
    assert isinstance(ack, AppendResponse) and ack.match_index == entry.index
    c.receive(ack)
    # Only b is known to hold it: a's own write has not completed (1 of 3).
    assert raft.commit_index < entry.index
    raft.advance(ready)
    assert raft.commit_index == entry.index


def test_an_entry_commits_once_a_quorum_persisted_it() -> None:
    c = elected(["a", "b", "c", "d", "e"])
    entry = c.propose("a", b"x")
    # Followers persist before they answer; hold all answers.
    c.deliver(hold=lambda m: isinstance(m, AppendResponse))
    acks = c.take(lambda m: isinstance(m, AppendResponse))
    assert len(acks) == 4
    c.receive(acks[0])
    assert c["a"].commit_index < entry.index  # a + 1 of 5
    c.receive(acks[1])
    assert c["a"].commit_index == entry.index  # a + 2 of 5
    assert c.applied_data("a") == [b"x"]


def test_figure_8_an_old_terms_entry_commits_only_with_one_of_the_current_term() -> None:
    # The situation of the Raft paper's figure 8 (c): index 2 was written at term 2 by a
    # leader that reached only a and b; e then led term 3 and wrote index 2 elsewhere.
    c = Cluster(["a", "b", "c", "d", "e"], config=ONE_BY_ONE,
                logs={"a": [2], "b": [2], "e": [3]}, terms=dict.fromkeys("abcde", 3))
    c.partition(["a", "b", "c", "d"], ["e"])

    def hold(m: Message) -> bool:
        """b hears nothing; c and d get index 2, but the no-op (index 3) after it waits."""
        return m.dest == "b" or (isinstance(m, AppendRequest) and m.entries != ()
                                 and m.entries[0].index == 3 and c[m.dest].log.term_at(2) == 2)

    c.campaign("a", hold=hold)
    assert c.leaders() == ["a"] and c["a"].term == 4
    # a reached c and d with index 2 (term 2), one entry per request: index 2 is on a, b, c
    # and d (4 of 5), but it is from term 2, and e (last term 3) could still win b, c and d
    # and overwrite it. It must not commit.
    assert {n: c[n].log.term_at(2) for n in "abcd"} == dict.fromkeys("abcd", 2)
    assert c["a"].progress() == {"b": 0, "c": 2, "d": 2, "e": 0}
    assert c["a"].commit_index == 0
    assert all(c.applied[n] == [] for n in "abcd")
    # Once an entry of term 4 reaches a quorum, both commit.
    c.deliver()
    assert c["a"].commit_index == 3
    assert [e.index for e in c.applied["a"]] == [1, 2, 3]


def test_a_follower_truncates_conflicting_entries() -> None:
    c = Cluster(["a", "b", "c"], logs={"a": [1, 2], "b": [1, 1, 1, 1], "c": [1, 2]},
                terms=dict.fromkeys("abc", 2))
    c.campaign("a")
    assert c.leaders() == ["a"]
    truncating = [r for r in c.readies["b"] if r.truncate_from is not None]
    assert len(truncating) == 1
    assert truncating[0].truncate_from == 3
    assert [(e.index, e.term) for e in truncating[0].entries] == [(3, 2), (4, 3)]
    assert [(i, e.term) for i, e in sorted(c.disks["b"].entries.items())] == [
        (1, 0), (2, 1), (3, 2), (4, 3)]
    assert c["b"].log.last_index == 4


# The followers of the Raft paper's figure 7, against its leader (term 8), after the bootstrap.
FIGURE_7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIGURE_7 = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


def _common_prefix(x: list[int], y: list[int]) -> int:
    n = 0
    while n < min(len(x), len(y)) and x[n] == y[n]:
        n += 1
    return n


@pytest.mark.parametrize("case", sorted(FIGURE_7))
def test_fast_backtracking_needs_one_round_trip_per_conflicting_term(case: str) -> None:
    follower = FIGURE_7[case]
    c = Cluster(["L", "h", "f"], logs={"L": FIGURE_7_LEADER, "h": FIGURE_7_LEADER, "f": follower},
                terms={"L": 7, "h": 7, "f": 7})
    c.campaign("L")
    assert c.leaders() == ["L"] and c["L"].term == 8
    rejections = [m for m in c.sent_of(AppendResponse, src="f")
                  if isinstance(m, AppendResponse) and not m.success]
    suffix = follower[_common_prefix(follower, FIGURE_7_LEADER):]
    missing = len(follower) < len(FIGURE_7_LEADER) + 1  # the leader's no-op is one more
    assert len(rejections) <= len(set(suffix)) + (1 if missing else 0), rejections
    assert len(c.sent_of(AppendRequest, src="L", dest="f")) <= len(rejections) + 2
    assert [c["f"].log.term_at(i) for i in range(1, 13)] == \
        [0] + FIGURE_7_LEADER + [8]
    assert c["f"].log.last_index == 12
    assert c["L"].progress()["f"] == 12


def test_duplicated_and_reordered_acks_neither_regress_nor_overcommit() -> None:
    c = elected()
    raft = c["a"]
    base = raft.commit_index
    acks: list[Message] = []
    for i in range(4):
        c.propose("a", f"x{i}".encode())
        c.deliver(hold=lambda m: isinstance(m, AppendResponse) or m.dest == "c")
        acks += c.take(lambda m: isinstance(m, AppendResponse) and m.source == "b")
    c.take(lambda m: m.dest == "c")  # c heard nothing
    assert [m.match_index for m in acks if isinstance(m, AppendResponse)] == \
        [base + 1, base + 2, base + 3, base + 4]
    c.receive(acks[2])
    assert raft.progress()["b"] == base + 3
    assert raft.commit_index == base + 3
    for msg in [acks[0], acks[1], acks[0], acks[2], acks[1]]:
        c.receive(msg)
        assert raft.progress()["b"] == base + 3
        assert raft.commit_index == base + 3
    # A duplicate of b's ack does not stand in for c's: nothing past b's copy commits.
    c.receive(acks[3])
    c.receive(acks[3])
    assert raft.progress() == {"b": base + 4, "c": base}
    assert raft.commit_index == base + 4
    # A stale rejection (of a probe before b matched) does not move match back either.
    c.receive(AppendResponse(raft.term, "b", "a", False, 0, conflict_index=1,
                             prev_index=base, round=1))
    assert raft.progress()["b"] == base + 4


def test_a_follower_never_commits_beyond_what_the_leader_proved_it_holds() -> None:
    # b has stale entries 3-4 from term 1; the leader's index 3 is from term 2.
    c = Cluster(["a", "b", "c"], logs={"b": [1, 1, 1]}, terms={"b": 1})
    raft = c["b"]
    c.receive(AppendRequest(2, "a", "b", prev_index=2, prev_term=1, entries=(), commit=4))
    (ack,) = c.take(lambda m: isinstance(m, AppendResponse))
    assert isinstance(ack, AppendResponse) and ack.success and ack.match_index == 2
    assert raft.commit_index == 2
    assert [e.index for e in c.applied["b"]] == [1, 2]
    # Entries that do match move it on, up to their end only.
    c.receive(AppendRequest(2, "a", "b", prev_index=2, prev_term=1,
                            entries=(Entry(3, 2, data=b"y"),), commit=9))
    assert raft.commit_index == 3 and raft.log.last_index == 3
    assert [e.data for e in c.applied["b"]][-1] == b"y"


def test_the_commit_index_survives_a_restart_through_applied() -> None:
    c = elected()
    for i in range(3):
        c.propose("a", f"x{i}".encode())
    c.run(0.3)
    commit = c["b"].commit_index
    assert commit == c["a"].commit_index == 5
    assert c.disks["b"].applied == commit
    c.crash("b")
    before = len(c.readies["b"])
    c.start("b")
    assert c["b"].commit_index == commit
    # Nothing already applied is handed out again.
    assert all(not r.committed for r in c.readies["b"][before:])
    assert [e.index for e in c.applied["b"]] == [1, 2, 3, 4, 5]
    c.run(0.3)
    assert [e.index for e in c.applied["b"]] == [1, 2, 3, 4, 5]


# == check-quorum =============================================================================


def test_a_leader_cut_off_from_the_quorum_steps_down() -> None:
    c = elected()
    cut_at = c.now
    c.partition(["a"], ["b", "c"])
    stepped = c.run(4 * T, dt=0.01, until=lambda: not c["a"].is_leader)
    assert not c["a"].is_leader
    assert stepped - cut_at <= 2 * T + CONFIG.heartbeat_interval_s
    with pytest.raises(NotLeader):
        c["a"].propose(c.now, b"x")
    with pytest.raises(NotLeader):
        c["a"].read_index(c.now, "r")
    # The majority side carries on.
    c.run(4 * T)
    assert [n for n in c.leaders() if n != "a"]


def test_a_leader_with_a_quorum_stays() -> None:
    c = elected()
    c.crash("c")
    c.run(10 * T)
    assert c.leaders() == ["a"] and c["a"].term == 1


# == ReadIndex ================================================================================


def test_a_read_on_a_fresh_leader_waits_for_its_no_op() -> None:
    c = Cluster(["a", "b", "c"])
    c.campaign("a", hold=lambda m: isinstance(m, AppendResponse))
    assert c["a"].is_leader and c["a"].commit_index == 0
    c.read("a", "r1")
    c.run(0.5, hold=lambda m: isinstance(m, AppendResponse))
    assert c.reads["a"] == []
    c.deliver()  # the no-op commits; the read now waits for a heartbeat round
    assert c["a"].commit_index == 2
    c.run(0.3)
    assert c.reads["a"] == [ReadState("r1", 2)]


def test_a_read_needs_a_quorum_round_that_started_after_it() -> None:
    c = elected()
    raft = c["a"]
    # A heartbeat round whose acks are still on their way back.
    c.tick("a", c.now + CONFIG.heartbeat_interval_s)
    c.deliver(hold=lambda m: isinstance(m, AppendResponse))
    old_acks = c.take(lambda m: isinstance(m, AppendResponse))
    assert len(old_acks) == 2
    c.read("a", "r")
    new_requests = c.take(lambda m: isinstance(m, AppendRequest))
    assert len(new_requests) == 2
    for msg in old_acks:
        c.receive(msg)
    assert c.reads["a"] == []  # these acks prove nothing about after the read
    for msg in new_requests:
        if msg.dest == "b":
            c.receive(msg)
    assert c.reads["a"] == []  # b's answer is still in flight
    c.deliver(hold=to("c"))
    assert c.reads["a"] == [ReadState("r", raft.commit_index)]


def test_a_deposed_leader_fails_its_pending_reads() -> None:
    c = elected()
    c.read("a", "r1")
    c.take(lambda m: m.source == "a")
    c["a"].propose(c.now, b"x")
    c.flush("a")
    c.take(lambda m: m.source == "a")
    c.receive(AppendRequest(c["a"].term + 1, "b", "a", 2, 1, (), 2))
    assert c.reads["a"] == [ReadState("r1", None)]
    assert not c["a"].is_leader


def test_a_leader_that_loses_the_quorum_fails_waiting_reads_too() -> None:
    c = Cluster(["a", "b", "c"])
    c.campaign("a", hold=lambda m: isinstance(m, AppendResponse))
    c.take(lambda m: isinstance(m, AppendResponse))
    c.read("a", "before-no-op")
    c.partition(["a"], ["b", "c"])
    c.run(3 * T, until=lambda: not c["a"].is_leader)
    assert not c["a"].is_leader
    assert c.reads["a"] == [ReadState("before-no-op", None)]


def test_proposals_and_reads_between_two_readies_share_one_request_per_follower() -> None:
    """A burst of writes and reads costs one AppendRequest per follower, not one each:
    the round they ask for goes out when the driver takes its next Ready."""
    c = elected()
    before, committed = len(c.sent), c["a"].commit_index
    entries = [c["a"].propose(c.now, f"w{i}".encode()) for i in range(10)]
    for i in range(5):
        c["a"].read_index(c.now, f"r{i}")
    assert c.sent_of(AppendRequest, src="a", since=before) == []  # nothing until the Ready
    c.flush("a")
    requests = c.sent_of(AppendRequest, src="a", since=before)
    assert sorted(m.dest for m in requests) == ["b", "c"]
    assert all([e.index for e in m.entries] == [e.index for e in entries] for m in requests)
    c.deliver()
    # The contexts are the strings passed to read_index above.
    assert sorted(cast(str, r.context) for r in c.reads["a"]) == [f"r{i}" for i in range(5)]
    assert all(r.index == committed for r in c.reads["a"])  # the writes were not committed
    c.run(2 * CONFIG.heartbeat_interval_s)  # followers learn the commit index
    assert c.applied_data("b")[-10:] == [f"w{i}".encode() for i in range(10)]


def test_a_single_node_answers_reads_at_once() -> None:
    c = elected(["a"])
    c.propose("a", b"x")
    c.read("a", "r")
    assert c.reads["a"] == [ReadState("r", 3)]


# == membership ===============================================================================


def test_a_learner_gets_the_log_but_never_votes_counts_or_stands() -> None:
    c = elected(empty=["d"])
    c.change("a", members("abc", ["d"]))
    c.run(0.3)
    assert c["d"].membership == members("abc", ["d"])
    assert c["d"].log.last_index == c["a"].log.last_index == 3
    assert c["d"].commit_index == 3
    # It never counts towards a commit: with b and c away, nothing commits.
    c.partition(["a", "d"], ["b", "c"])
    entry = c.propose("a", b"x")
    c.deliver()
    assert c["d"].log.last_index == entry.index
    assert c["a"].commit_index < entry.index
    c.heal()
    c.run(0.2)
    assert c["a"].commit_index == entry.index
    # It never stands, however long it hears nothing, and nobody asks for its vote.
    c.crash("a")
    c.run(10 * T)
    assert c["d"].role is Role.FOLLOWER and c["d"].stats["elections"] == 0
    assert c.sent_of(VoteRequest, src="d") == []
    assert c.sent_of(VoteRequest, dest="d") == []
    assert len([n for n in c.leaders() if n in "bc"]) == 1


def test_a_learner_is_promoted_to_voter() -> None:
    c = elected(empty=["d"])
    c.change("a", members("abc", ["d"]))
    c.run(0.3)
    c.change("a", members("abcd"))
    c.run(0.3)
    assert c["d"].membership == members("abcd")
    assert c["a"].commit_index == 4
    # Now it counts: with b and c away, a + d is 2 of 4: not enough; with b, 3 of 4 is.
    c.partition(["a", "d"], ["b", "c"])
    entry = c.propose("a", b"x")
    c.deliver()
    assert c["a"].commit_index < entry.index
    c.partition(["a", "b", "d"], ["c"])
    c.run(0.2)
    assert c["a"].commit_index == entry.index


def test_membership_changes_one_at_a_time() -> None:
    c = elected(empty=["d", "e"])
    with pytest.raises(ValueError, match="one voter"):
        c["a"].change_membership(c.now, members("abcde"))
    with pytest.raises(ValueError, match="one voter"):
        c["a"].change_membership(c.now, members("abd"))  # swap c for d
    c.change("a", members("abcd"))
    with pytest.raises(ChangeInProgress):
        c["a"].change_membership(c.now, members("abcd", ["e"]))
    c.deliver()
    assert c["a"].commit_index == 3
    c.change("a", members("abcd", ["e"]))  # the first committed: the next may go


def test_a_new_leader_changes_membership_only_after_its_no_op_commits() -> None:
    c = Cluster(["a", "b", "c"])
    c.campaign("a", hold=lambda m: isinstance(m, AppendResponse))
    with pytest.raises(ChangeInProgress):
        c["a"].change_membership(c.now, members("ab"))
    with pytest.raises(NotLeader):
        c["b"].change_membership(c.now, members("ab"))


def test_a_new_configuration_takes_effect_when_appended() -> None:
    c = elected(empty=["d"])
    entry = c.change("a", members("abcd"))
    assert c["a"].membership == members("abcd")  # before it commits
    # Under the old configuration a + b would commit it; under the new one (3 of 4) not.
    c.deliver(hold=to("c", "d"))
    assert c["b"].membership == members("abcd")
    assert c["a"].commit_index < entry.index
    c.deliver(hold=to("c"))
    assert c["a"].commit_index == entry.index


def test_a_removed_follower_does_not_disrupt_the_cluster() -> None:
    c = elected()
    term = c["a"].term
    entry = c.change("a", members("ab"))
    c.run(0.3)
    assert c["a"].commit_index == entry.index
    # The leader stops replicating to c at once, so c never learns it was removed (the
    # dissertation's 4.2.3): it stands, but only in pre-votes the lease makes a and b ignore.
    assert c["a"].progress() == {"b": entry.index}
    sent = len(c.sent)
    c.run(10 * T)
    assert c.sent_of(VoteRequest, src="c", since=sent)
    assert c.sent_of(VoteResponse, dest="c", since=sent) == []
    assert c.leaders() == ["a"] and (c["a"].term, c["b"].term, c["c"].term) == (term,) * 3
    assert c["c"].stats["elections"] == 0


def test_a_removed_leader_steps_down_once_the_removal_commits() -> None:
    c = elected()
    elections = c["a"].stats["elections"]
    entry = c.change("a", members("bc"))
    assert c["a"].is_leader
    c.deliver(hold=to("c"))
    assert c["a"].is_leader and c["a"].commit_index < entry.index  # b alone is 1 of 2
    c.deliver()
    assert not c["a"].is_leader
    assert c["a"].commit_index == entry.index
    c.run(5 * T)
    assert len(c.leaders()) == 1 and c.leader() in "bc"
    assert c["a"].stats["elections"] == elections  # a non-voter never stands
    assert c["a"].role is Role.FOLLOWER


def test_a_removed_leader_steps_down_on_the_ack_of_a_catching_up_follower() -> None:
    # c catches up one entry per request; its ack of the removal commits it while the
    # leader still has an entry to send c.
    c = elected(config=ONE_BY_ONE)
    c.partition(["a", "b"], ["c"])
    entry = c.change("a", members("bc"))
    c.propose("a", b"x")
    c.deliver()
    assert c["a"].is_leader and c["a"].commit_index < entry.index
    c.heal()
    c.run(0.5, until=lambda: not c["a"].is_leader)
    assert not c["a"].is_leader
    assert c["a"].commit_index >= entry.index


# == leadership transfer ======================================================================


def test_leadership_transfer_to_a_lagging_voter() -> None:
    c = elected()
    term = c["a"].term
    c.partition(["a", "b"], ["c"])
    for i in range(3):
        c.propose("a", f"x{i}".encode())
    c.deliver()
    c.heal()
    sent = len(c.sent)
    assert c["a"].transfer_leadership(c.now, "c") == "c"
    assert c.sent_of(TimeoutNow, since=sent) == []  # c has not caught up yet
    with pytest.raises(NotLeader):
        c["a"].propose(c.now, b"refused")
    c.run(1.0, until=lambda: not c["a"].is_leader)
    (first, *_) = c.sent_of(TimeoutNow, since=sent)
    assert first.dest == "c"
    assert c.leaders() == ["c"]
    assert c["c"].term == term + 1
    # b heard from a moments ago (its lease was on) and still voted: the request said why.
    assert (c["a"].voted_for, c["b"].voted_for) == ("c", "c")
    requests = c.sent_of(VoteRequest, src="c", since=sent)
    assert requests and all(isinstance(m, VoteRequest) and m.transfer and not m.pre_vote
                            for m in requests)
    assert c.applied_data("c") == [b"x0", b"x1", b"x2"]


def test_an_abandoned_transfer_ends_and_the_leader_takes_proposals_again() -> None:
    c = elected()
    c.crash("c")
    c.propose("a", b"x")
    c.deliver()
    started = c.now
    assert c["a"].transfer_leadership(c.now, "c") == "c"
    assert c["a"].next_deadline() <= started + CONFIG.transfer_timeout_s
    c.run(CONFIG.transfer_timeout_s - 0.1)
    with pytest.raises(NotLeader):
        c["a"].propose(c.now, b"refused")
    c.run(0.2)
    assert c["a"].is_leader
    c.propose("a", b"y")
    c.run(0.2)
    assert c.applied_data("b") == [b"x", b"y"]


def test_transfer_to_a_learner_or_self_is_refused() -> None:
    c = elected(empty=["d"])
    c.change("a", members("abc", ["d"]))
    c.run(0.3)
    assert c["a"].transfer_leadership(c.now, "d") is None
    assert c["a"].transfer_leadership(c.now, "a") is None
    assert c["b"].transfer_leadership(c.now, "c") is None
    c.propose("a", b"still the leader")


def test_a_transferring_leader_does_not_name_itself_as_leader() -> None:
    c = elected()
    c.crash("c")
    c["a"].transfer_leadership(c.now, "c")
    with pytest.raises(NotLeader) as propose_error:
        c["a"].propose(c.now, b"x")
    with pytest.raises(NotLeader) as change_error:
        c["a"].change_membership(c.now, members("ab"))
    assert change_error.value.leader == propose_error.value.leader is None


# == snapshots ================================================================================


def test_compact_refuses_past_applied() -> None:
    c = elected()
    raft = c["a"]
    entry = raft.propose(c.now, b"x")
    with pytest.raises(ValueError):
        raft.snapshot_meta(entry.index)
    with pytest.raises(ValueError):
        raft.compact(SnapshotMeta(entry.index, entry.term, raft.membership))
    c.flush("a")
    c.deliver()
    meta = c.snapshot("a", entry.index)
    assert meta == SnapshotMeta(entry.index, entry.term, members("abc"))
    assert raft.log.first_index == entry.index + 1


def _lagging_c() -> tuple[Cluster, SnapshotMeta]:
    """a leads; c missed 5 entries that a has compacted into a snapshot."""
    c = elected()
    c.partition(["a", "b"], ["c"])
    for i in range(5):
        c.propose("a", f"x{i}".encode())
    c.deliver()
    meta = c.snapshot("a", c["a"].commit_index)
    assert meta.index == 7
    return c, meta


def test_a_lagging_follower_gets_a_snapshot_at_most_once_per_election_timeout() -> None:
    c, meta = _lagging_c()
    c.heal()
    sent = len(c.sent)
    # The snapshot never reaches c: the leader retries, once per election timeout.
    c.run(3.5 * T, hold=lambda m: isinstance(m, SnapshotRequest))
    requests = c.sent_of(SnapshotRequest, dest="c", since=sent)
    assert 3 <= len(requests) <= 4
    assert all(isinstance(m, SnapshotRequest) and m.meta == meta for m in requests)
    # While the snapshot is pending, c gets nothing else.
    first = c.sent.index(requests[0])
    assert c.sent_of(AppendRequest, dest="c", since=first) == []


def test_installing_a_snapshot_and_replicating_from_there() -> None:
    c, meta = _lagging_c()
    c.heal()
    c.run(0.15, hold=lambda m: isinstance(m, SnapshotRequest))
    (request,) = c.take(lambda m: isinstance(m, SnapshotRequest))
    before = len(c.readies["c"])
    c.receive(request)
    ready = c.readies["c"][before]
    assert ready.snapshot is request
    assert [m for m in ready.messages if isinstance(m, SnapshotResponse)] == [
        SnapshotResponse(c["a"].term, "c", "a", meta.index)]
    assert ready.committed == []  # the snapshot is the state: nothing to apply below it
    assert c["c"].commit_index == meta.index
    assert c["c"].log.snapshot == meta
    assert c.disks["c"].applied == meta.index
    c.deliver()
    entry = c.propose("a", b"after")
    c.run(0.3)
    assert c["a"].progress()["c"] == entry.index
    assert c["c"].log.term_at(entry.index) == entry.term
    assert c.applied["c"][-1] == entry
    assert c.disks["c"].log()[-1] == entry


def test_an_old_snapshot_is_answered_without_installing() -> None:
    c = elected()
    for i in range(3):
        c.propose("a", f"x{i}".encode())
    c.run(0.3)
    commit = c["b"].commit_index
    before = len(c.readies["b"])
    c.receive(SnapshotRequest(c["a"].term, "a", "b", SnapshotMeta(3, 1, members("abc"))))
    (ready,) = c.readies["b"][before:]
    assert ready.snapshot is None and ready.truncate_from is None
    assert ready.messages == [SnapshotResponse(c["a"].term, "b", "a", commit)]
    assert c["b"].log.snapshot.index == 0
    assert c["b"].stats["snapshots_installed"] == 0


def test_a_snapshot_over_a_conflicting_log_truncates_it_durably() -> None:
    # c holds stale entries 2-9 of term 1; the leader's snapshot at 5 is from term 2.
    c = Cluster(["a", "b", "c"], logs={"c": [1] * 8}, terms={"c": 1})
    meta = SnapshotMeta(5, 2, members("abc"))
    c.receive(SnapshotRequest(2, "a", "c", meta))
    ready = c.readies["c"][-1]
    assert ready.snapshot is not None
    assert c["c"].log.last_index == 5  # in memory the stale 6-9 are gone ...
    assert ready.truncate_from is not None and ready.truncate_from <= 6  # ... on disk too?
    before = len(c.readies["c"])
    c.receive(AppendRequest(2, "a", "c", 5, 2, (Entry(6, 2), Entry(7, 2)), 7))
    assert [e.index for r in c.readies["c"][before:] for e in r.entries] == [6, 7]


def test_acks_stay_durable_when_a_truncation_overtakes_a_disk_write() -> None:
    # A driver that keeps receiving while a disk write is in flight (node.testing.raft_sim
    # does: ready() when the disk is idle, receive() whenever a message arrives, advance()
    # when the write completes). b's write of entries 2-4 (term 1) is still running when
    # the leader of term 3 replaces 3-4.
    c = Cluster(["a", "b", "c"], logs={"a": [1], "c": [1]}, terms=dict.fromkeys("abc", 2))
    b = c["b"]
    b.receive(c.now, AppendRequest(2, "a", "b", 1, 0, (Entry(2, 1), Entry(3, 1), Entry(4, 1)),
                                   1))
    write_1 = b.ready()
    assert [e.index for e in write_1.entries] == [2, 3, 4]
    c.persist("b", write_1)
    b.receive(c.now, AppendRequest(3, "c", "b", 2, 1, (Entry(3, 3),), 1))
    b.advance(write_1)  # the first write completes ...
    write_2 = b.ready()  # ... and the next starts: cut from 3, write 3 (term 3)
    assert write_2.truncate_from == 3
    assert [(e.index, e.term) for e in write_2.entries] == [(3, 3)]
    c.persist("b", write_2)
    b.receive(c.now, AppendRequest(3, "c", "b", 3, 3, (Entry(4, 3),), 1))
    b.advance(write_2)
    write_3 = b.ready()
    acked = max(m.match_index for m in write_3.messages if isinstance(m, AppendResponse))
    assert acked == 4
    # The disk lost 4 (term 1) to write_2's truncation: write_3 must carry 4 (term 3).
    assert 4 not in c.disks["b"].entries
    assert [(e.index, e.term) for e in write_3.entries] == [(4, 3)]


# == a replaced disk ============================================================================
#
# A node back under its old id with an empty disk remembers neither its votes nor what it
# acknowledged. Its driver starts it fenced (HardState.fence); a leader admits the fence in
# a membership entry (Membership.admitted) once it hears of it.


def replaced(c: Cluster, node_id: str, fence: str = "f1") -> Raft:
    """``node_id`` crashes and comes back with an empty disk that holds only a fence."""
    c.crash(node_id)
    c.disks[node_id] = Disk(hard_state=HardState(0, None, fence))
    return c.start(node_id)


def test_a_fenced_node_neither_votes_nor_stands_until_admitted() -> None:
    c = elected()
    c.propose("a", b"x")
    c.run(0.2)
    b = replaced(c, "b")
    assert b.fenced
    c.run(0.3)  # it gets the whole log, in which it is a voter
    assert b.membership.voters == {"a", "b", "c"} and b.log.last_index == c["a"].log.last_index
    assert b.fenced
    # The leader dies: b neither stands nor gives c a vote (nor a pre-vote), so nobody leads.
    c.crash("a")
    sent = len(c.sent)
    c.run(10 * T)
    assert c.sent_of(VoteRequest, src="b", since=sent) == []
    assert c.sent_of(VoteRequest, src="c", dest="b", since=sent)
    assert not [m for m in c.sent_of(VoteResponse, src="b", since=sent)
                if isinstance(m, VoteResponse) and m.granted]
    assert c.leaders() == [] and b.stats["elections"] == 0
    # Nor does a leadership transfer make it stand.
    b.receive(c.now, TimeoutNow(c["c"].term, "a", "b"))
    c.flush("b")
    assert b.role is Role.FOLLOWER and b.stats["elections"] == 0


def test_an_admitted_node_votes_again_but_not_twice_in_the_term_it_was_admitted_in() -> None:
    c = elected()
    b = replaced(c, "b")
    term = c["a"].term
    entry = c.change("a", c["a"].membership.admit("b", "f1"))
    before = len(c.readies["b"])
    c.run(0.2)
    assert not b.fenced and b.log.term_at(entry.index) == entry.term
    # The fence ends in the very write that holds the admitting entry.
    (write,) = [r for r in c.readies["b"][before:] if entry in r.entries]
    assert write.hard_state == HardState(term, "a", None)
    assert all(r.hard_state.fence == "f1" for r in c.readies["b"][before:]
               if r.hard_state is not None and r is not write)
    assert c.disks["b"].hard_state == HardState(term, "a", None)
    # In this term it counts as having voted for the leader that admitted it ...
    b.receive(c.now, VoteRequest(term, "c", "b", 100, term))
    c.flush("b")
    assert c.sent[-1] == VoteResponse(term, "b", "c", False)
    # ... and from the next term on it votes and stands like any voter.
    c.crash("a")
    c.run(10 * T)
    assert c.leaders() in (["b"], ["c"])
    assert c["c"].term > term


def test_a_fence_survives_a_restart_and_ends_with_an_admitting_snapshot() -> None:
    c, meta = _lagging_c()
    c.heal()
    c.run(0.3)
    c.crash("c")
    c.disks["c"] = Disk(hard_state=HardState(0, None, "f2"))
    c.start("c")
    c.run(0.3)  # catches up from a's snapshot, whose membership does not admit it
    assert c["c"].log.snapshot == meta and c["c"].fenced
    c.crash("c")
    assert c.disks["c"].hard_state.fence == "f2"
    c.start("c")
    assert c["c"].fenced  # the fence is on disk
    c.change("a", c["a"].membership.admit("c", "f2"))
    c.run(0.3)
    meta = c.snapshot("a", c["a"].commit_index)  # the admission is only in a's snapshot now
    c.crash("c")
    c.disks["c"] = Disk(hard_state=HardState(0, None, "f2"))
    c.start("c")
    c.run(0.3)
    assert c["c"].log.snapshot == meta and not c["c"].fenced
    assert c.disks["c"].hard_state.fence is None
    # Another fence (the disk was replaced once more) is not admitted by the old one.
    c.crash("c")
    c.disks["c"] = Disk(hard_state=HardState(0, None, "f3"))
    c.start("c")
    c.run(0.3)
    assert c["c"].fenced


def test_a_fenced_sole_voter_waits_without_spinning() -> None:
    # The only voter's disk was replaced, and it got the log back (from a learner that
    # leads nothing): nobody can admit it, so nobody leads; its timer must not spin.
    c = Cluster(["a"])
    c.crash("a")
    c.disks["a"].hard_state = HardState(0, None, "f1")
    a = c.start("a")
    assert a.fenced and a.membership.voters == {"a"}
    c.run(3 * T)  # every tick asserts that the next deadline is ahead of now
    assert c.leaders() == [] and a.stats["elections"] == 0


def test_a_leader_forgets_what_a_replaced_disk_acknowledged() -> None:
    c = elected(voters="abcde")
    c.partition(["a", "b"], ["c", "d", "e"])
    entries = [c.propose("a", f"x{i}".encode()) for i in range(3)]
    c.deliver()
    assert c["a"].progress()["b"] == entries[-1].index > c["a"].commit_index
    replaced(c, "b")
    # One heartbeat later, b's rejection shows its log ends before what it acknowledged.
    sent = len(c.sent)
    c.run(0.1)
    rejections = [m for m in c.sent_of(AppendResponse, src="b", since=sent)
                  if isinstance(m, AppendResponse) and not m.success]
    assert rejections and rejections[0].conflict_index == 1
    assert c["a"].progress()["b"] == c["b"].log.last_index
    # With c back, a and c hold the entries, b a copy it wrote since: only then they commit.
    c.partition(["a", "b", "c"], ["d", "e"])
    c.run(0.2)
    assert c["a"].commit_index == entries[-1].index
    assert c["b"].log.last_index == entries[-1].index
    assert c["a"].progress()["b"] == entries[-1].index


def test_after_the_reset_only_what_the_replaced_disk_acknowledges_again_counts() -> None:
    c = elected(voters="abcde")
    c.partition(["a", "b"], ["c", "d", "e"])
    entry = c.propose("a", b"x")
    c.deliver()
    replaced(c, "b")
    refill = lambda m: isinstance(m, AppendRequest) and m.dest == "b" and bool(m.entries)
    c.run(0.1, hold=refill)  # b rejects a heartbeat; what would refill it is held back
    assert c["a"].progress()["b"] == 0
    c.partition(["a", "b", "c"], ["d", "e"])
    c.run(0.2, hold=refill)
    # a and c hold it: 2 of 5; b's acknowledgement from before its disk was replaced is void.
    assert c["a"].commit_index < entry.index
    c.take(refill)
    c.run(0.2)
    assert c["b"].log.last_index >= entry.index and c["a"].commit_index >= entry.index


def test_a_reordered_rejection_does_not_void_a_newer_acknowledgement() -> None:
    c = elected(config=ONE_BY_ONE)
    c.partition(["a", "b"], ["c"])
    for i in range(3):
        c.propose("a", f"x{i}".encode())
    c.deliver()
    c.heal()
    # c is behind: the heartbeat it rejects is answered at once with what it lacks, all in
    # one round, so the rejection (held back, then delivered late) is older news.
    c.run(0.1, hold=lambda m: isinstance(m, AppendResponse) and not m.success)
    (late,) = c.take(lambda m: isinstance(m, AppendResponse) and not m.success)
    c.receive(late)
    c.run(0.05)
    match = c["a"].progress()["c"]
    assert match == c["a"].log.last_index
    c.receive(late)  # delivered again, after the acknowledgements of the same round
    assert c["a"].progress()["c"] == match


def test_a_rejection_that_moves_nothing_waits_for_the_next_heartbeat() -> None:
    c = elected()
    c.propose("a", b"x")
    c.run(0.2)
    replaced(c, "b")
    # Within one round b's rejections cannot void its acknowledgements, and the same
    # request would fail again: the leader does not resend it until the next heartbeat.
    c.tick("a", c["a"].next_deadline())
    sent = len(c.sent)
    c.deliver()
    assert len(c.sent_of(AppendRequest, dest="b", since=sent)) <= 2


# == timers and a random walk ===================================================================


def _membership_step(rng: random.Random, m: Membership, everyone: list[str]
                     ) -> Membership | None:
    """One random single-server change: add a learner, promote one, or demote a voter."""
    node_id = rng.choice(everyone)
    if node_id in m.learners:
        return Membership(m.voters | {node_id}, m.learners - {node_id})
    if node_id in m.voters and len(m.voters) > 3:
        return Membership(m.voters - {node_id}, m.learners | {node_id})
    if node_id not in m.voters:
        return Membership(m.voters, m.learners | {node_id})
    return None


@pytest.mark.parametrize("seed", range(6))
def test_random_walk_keeps_deadlines_ahead_and_raft_safe(seed: int) -> None:
    """Ticks at random times, lossy reordering delivery with duplicates, partitions, crashes,
    proposals, reads, transfers, membership changes and compaction, all from one seed.

    After every tick the node's next deadline lies ahead (``Cluster.tick`` asserts it) and
    every disk write keeps acks durable. Along the way: at most one leader per term; every
    node applies the same entry at each index; a new leader holds every applied entry; a
    read is answered with an index no lower than anything applied before it started."""
    rng = random.Random(seed)
    c = Cluster(["a", "b", "c", "d", "e"], seed=seed)
    everyone = sorted(c.nodes)
    leaders_of_term: dict[int, set[str]] = {}
    applied: dict[int, Entry] = {}
    read_floor: dict[object, int] = {}
    reads_answered = 0
    for step in range(2000):
        c.now += rng.expovariate(1 / 0.02)
        before = {n: (r.role, r.term) for n, r in c.nodes.items()}
        action = rng.random()
        node_id = rng.choice(everyone)
        raft = c[node_id]
        up = node_id not in c.down
        if action < 0.25:
            if up:
                c.tick(node_id)
        elif action < 0.85:
            rng.shuffle(c.inflight)
            for msg in c.take(lambda m: rng.random() < 0.7):
                if rng.random() < 0.05:
                    continue  # lost
                if rng.random() < 0.05:
                    c.inflight.append(msg)  # duplicated
                if c.link_ok(msg.source, msg.dest):
                    c.receive(msg)
        elif action < 0.95:
            if not (up and raft.is_leader):
                continue
            choice = rng.random()
            try:
                if choice < 0.6:
                    c.propose(node_id, f"s{step}".encode())
                elif choice < 0.8:
                    read_floor[step] = max(applied, default=0)
                    c.read(node_id, step)
                elif choice < 0.9:
                    new = _membership_step(rng, raft.membership, everyone)
                    if new is not None:
                        c.change(node_id, new)
                else:
                    raft.transfer_leadership(c.now)
                    c.flush(node_id)
            except (NotLeader, ChangeInProgress):
                pass
        elif action < 0.96:
            if not up:
                c.start(node_id)
            elif not c.down:
                c.crash(node_id)
                c.inflight = [m for m in c.inflight if m.dest != node_id]
        elif action < 0.97:
            if c.groups:
                c.heal()
            else:
                rng.shuffle(everyone)
                cut = rng.randint(1, 2)
                c.partition(everyone[:cut], everyone[cut:])
                everyone.sort()
        elif up and c.disks[node_id].applied > raft.log.snapshot.index + 3:
            c.snapshot(node_id, c.disks[node_id].applied - 2)
        for n, entries in c.applied.items():
            for entry in entries:
                assert applied.setdefault(entry.index, entry) == entry, (n, entry)
        for n, r in c.nodes.items():
            if n in c.down or not r.is_leader:
                continue
            leaders_of_term.setdefault(r.term, set()).add(n)
            if before[n] != (r.role, r.term):
                for index, entry in applied.items():
                    assert index <= r.log.snapshot.index or r.log.term_at(index) == entry.term
        for n, states in c.reads.items():
            for state in states:
                if state.index is not None and state.context in read_floor:
                    assert state.index >= read_floor.pop(state.context), (n, state)
                    reads_answered += 1
    assert all(len(ls) == 1 for ls in leaders_of_term.values()), leaders_of_term
    assert max(applied) > 10 and reads_answered > 0  # the walk did get somewhere


# == read leases (node.raft.leases) ============================================================

LEASED = RaftConfig(election_timeout_s=1.0, heartbeat_interval_s=0.1, max_append_bytes=1 << 20,
                    transfer_timeout_s=2.0, lease_s=1.0, clock_drift=0.05)


def leased(voters: Iterable[str] = ("a", "b", "c")) -> Cluster:
    """Leader a, its no-op stable, every follower holding a lease."""
    c = elected(voters, config=LEASED)
    c.run(0.5)  # Applied reports, then grants on the next rounds
    assert all(c[n].lease_read_index(c.now) is not None for n in c.nodes), \
        {n: c[n].lease_read_index(c.now) for n in c.nodes}
    return c


def test_every_node_reads_under_a_lease_once_granted() -> None:
    c = Cluster(["a", "b", "c"], config=LEASED)
    assert all(c[n].lease_read_index(c.now) is None for n in c.nodes)  # no leader yet
    c.campaign("a")
    c.run(0.5)
    commit = c["a"].commit_index
    assert c["a"].lease_read_index(c.now) == commit
    assert c["b"].lease_read_index(c.now) is not None
    assert c["a"].stable_index == commit and c["b"].stable_index == commit


def test_a_follower_lease_runs_out_by_its_own_clock() -> None:
    c = leased()
    c.partition(["a", "b"], ["c"])
    c.run(0.5)
    assert c["c"].lease_read_index(c.now) is not None
    c.run(LEASED.lease_s * (1 - LEASED.clock_drift))
    assert c["c"].lease_read_index(c.now) is None


def test_a_cut_off_leader_stops_reading_and_granting_before_anyone_can_replace_it() -> None:
    # A large drift margin leaves a while between the end of the leader's lease and its
    # stepping down (check-quorum, one election timeout), in which it still sends.
    config = dataclasses.replace(LEASED, clock_drift=0.3)
    c = elected(config=config)
    c.run(0.5)
    c.partition(["a"], ["b", "c"])
    c.run(0.4)
    assert c["a"].lease_read_index(c.now) is not None
    granted = c.sent_of(AppendRequest, src="a", since=len(c.sent) - 4)
    assert any(m.lease_round for m in granted)  # it still promises, under its own lease
    c.run(0.4)
    assert c["a"].is_leader and c["a"].lease_read_index(c.now) is None
    since = len(c.sent)
    c.run(0.15)
    requests = c.sent_of(AppendRequest, src="a", since=since)
    assert requests and all(m.lease_round == 0 for m in requests)  # no promise without one


def test_a_restarted_voter_refuses_votes_for_an_election_timeout() -> None:
    c = leased()
    c.crash("b")
    c.start("b")
    assert c["b"].leader is None  # it forgot whom it heard
    vote = VoteRequest(c["a"].term + 1, "c", "b", 99, 99, pre_vote=True)
    c.receive(vote)
    answers = [m for m in c.sent_of(VoteResponse, src="b") if m.dest == "c"]
    assert answers and not answers[-1].granted
    c.now += T + 0.01
    c.receive(vote)
    answers = [m for m in c.sent_of(VoteResponse, src="b") if m.dest == "c"]
    assert answers[-1].granted


def test_a_write_is_stable_only_once_every_lease_holder_applied_it() -> None:
    c = leased()
    c.partition(["a", "b"], ["c"])  # c holds a lease and will not apply the write
    entry = c.propose("a", b"x=1")
    c.deliver()
    assert c["a"].commit_index >= entry.index
    assert c["a"].stable_index < entry.index  # c's promise still stands
    c.run(LEASED.lease_s + 0.3)  # the promise to c runs out, by the leader's clock
    assert c["a"].stable_index >= entry.index
    assert c["c"].lease_read_index(c.now) is None  # and c stopped reading long before


def test_a_new_leader_waits_out_what_its_predecessor_may_have_promised() -> None:
    c = leased()
    c.crash("a")
    c.campaign("b")
    assert c.leaders() == ["b"]
    c.run(0.3)
    # a is down: it reports nothing, so nothing is stable until a lease of a's could
    # have run out.
    assert c["b"].stable_index < c["b"].commit_index
    c.run(LEASED.lease_s * (1 + LEASED.clock_drift))
    assert c["b"].stable_index == c["b"].commit_index


def test_a_transferring_leader_gives_up_its_lease() -> None:
    c = leased()
    assert c["a"].lease_read_index(c.now) is not None
    c["a"].transfer_leadership(c.now, "b")
    assert c["a"].lease_read_index(c.now) is None


def test_a_node_that_never_reports_applied_gets_no_lease_and_blocks_nothing() -> None:
    """An older node (wire version 1) sends no Applied: it is never promised a lease, and
    after the new term's wait nothing waits for it."""
    c = Cluster(["a", "b", "c"], config=LEASED)
    old = lambda m: isinstance(m, Applied) and m.source == "c"  # noqa: E731
    c.campaign("a", hold=old)
    c.take(old)
    for _ in range(20):
        c.run(0.1, hold=old)
        c.take(old)
    assert c["c"].lease_read_index(c.now) is None
    entry = c.propose("a", b"y=2")
    c.run(0.3, hold=old)
    assert c["a"].stable_index >= entry.index


def test_followers_learn_whether_their_leader_grants_leases() -> None:
    """Reads wait to be stable only under a leader that grants leases, whatever the
    reading node's own setting: every request carries the leader's lease length."""
    c = leased()
    assert [c[n].leader_lease_s for n in "abc"] == [1.0, 1.0, 1.0]
    plain = elected(config=CONFIG)  # a leader without leases (or of wire version 1)
    plain.run(0.3)
    assert [plain[n].leader_lease_s for n in "abc"] == [0.0, 0.0, 0.0]
    c.crash("a")
    c.campaign("b")
    assert c["c"].leader == "b" and c["c"].leader_lease_s == 1.0
