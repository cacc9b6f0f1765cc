"""The Raft safety checkers catch what they claim to: hand-built bad histories and logs
for the pure checks, and a simulated cluster with one thing broken on purpose for the
live ``RaftChecker``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from node.raft.core import HardState, Raft, Ready, Role
from node.raft.messages import Entry, EntryKind, Membership, VoteRequest
from node.testing.raft_checks import (Committed, LogMatching, LogView, RaftChecker,
                                      SafetyViolation, check_durable, check_election_safety,
                                      check_leader_completeness, check_state_machines,
                                      durable_prefix)
from node.testing.raft_sim import Disk, RaftSim

ABC = Membership(frozenset({"a", "b", "c"}))


def e(index: int, term: int, data: str = "") -> Entry:
    return Entry(index, term, EntryKind.COMMAND, (data or f"{index}.{term}").encode())


def view(owner: str, *terms: int, snapshot: tuple[int, int] = (0, 0)) -> LogView:
    """A log whose entries after the snapshot have these terms."""
    si, st = snapshot
    return LogView(owner, si, st, [e(si + 1 + i, t) for i, t in enumerate(terms)])


def committed(index: int, term: int, commit_term: int) -> Committed:
    entry = e(index, term)
    return Committed(index, term, entry.kind, entry.data, commit_term, "x")


# -- Election Safety ---------------------------------------------------------------------


def test_one_leader_per_term_passes_and_a_second_leader_in_a_term_is_caught() -> None:
    assert check_election_safety([(1, "a"), (2, "b"), (2, "b"), (3, "a")]) == \
        {1: "a", 2: "b", 3: "a"}
    with pytest.raises(SafetyViolation, match="a and c both led term 2"):
        check_election_safety([(1, "b"), (2, "a"), (3, "b"), (2, "c")])


# -- Log Matching ------------------------------------------------------------------------


def test_logs_that_diverge_only_after_their_common_prefix_match() -> None:
    matching = LogMatching()
    matching.check(view("a", 1, 1, 2, 2))
    matching.check(view("b", 1, 1, 3))  # an uncommitted tail of another term: fine
    matching.check(view("c", 1, 2, 2, snapshot=(1, 1)))
    assert matching.steps == 4 + 3 + 3


def test_two_entries_with_one_index_and_term_are_caught() -> None:
    matching = LogMatching()
    matching.check(view("a", 1, 1, 2))
    bad = LogView("b", 0, 0, [e(1, 1), e(2, 1), e(3, 2, "something else")])
    with pytest.raises(SafetyViolation, match="two entries at index 3 term 2"):
        matching.check(bad)


def test_logs_sharing_an_entry_but_differing_before_it_are_caught() -> None:
    matching = LogMatching()
    matching.check(view("a", 1, 1, 3))
    with pytest.raises(SafetyViolation, match="differ before an entry they share"):
        matching.check(view("b", 1, 2, 3))  # (3, 3) after term 2 here, after term 1 in a


def test_the_tables_remember_truncated_entries() -> None:
    """A log seen once, then truncated away, still names its entries."""
    matching = LogMatching()
    matching.check(view("a", 1, 2))
    matching.check(view("a", 1, 3))  # a's entry 2 replaced by one of term 3: fine
    with pytest.raises(SafetyViolation, match="two entries at index 2 term 2"):
        matching.check(LogView("b", 0, 0, [e(1, 1), e(2, 2, "not what a had")]))


def test_a_gap_and_a_term_going_back_are_caught() -> None:
    with pytest.raises(SafetyViolation, match="gap"):
        LogMatching().check(LogView("a", 0, 0, [e(1, 1), e(3, 1)]))
    with pytest.raises(SafetyViolation, match="term goes back"):
        LogMatching().check(view("a", 2, 1))
    with pytest.raises(SafetyViolation, match="term goes back"):
        LogMatching().check(view("a", 1, snapshot=(5, 2)))


# -- Leader Completeness ------------------------------------------------------------------


def test_a_leader_missing_an_entry_committed_in_an_earlier_term_is_caught() -> None:
    log = view("c", 1, 1, 3)
    history = [committed(1, 1, 1), committed(2, 1, 2)]
    assert check_leader_completeness("c", 3, log, history) == 2
    with pytest.raises(SafetyViolation, match="has term 3 at index 3"):
        check_leader_completeness("c", 3, log, history + [committed(3, 2, 2)])
    with pytest.raises(SafetyViolation, match="has nothing at index 4"):
        check_leader_completeness("c", 4, log, [committed(4, 3, 3)])


def test_entries_committed_in_the_leaders_term_or_later_or_in_its_snapshot_are_not_required(
        ) -> None:
    log = view("c", 2, snapshot=(4, 1))
    history = [committed(3, 1, 1), committed(4, 1, 1), committed(6, 2, 2), committed(9, 5, 5)]
    assert check_leader_completeness("c", 2, log, history) == 2  # 3 and 4: in the snapshot


# -- State Machine Safety -----------------------------------------------------------------


def test_two_nodes_applying_different_entries_at_one_index_are_caught() -> None:
    same = {1: (1, EntryKind.NOOP, b""), 2: (1, EntryKind.COMMAND, b"x=1")}
    assert check_state_machines({"a": same, "b": {1: same[1]}}) == same
    with pytest.raises(SafetyViolation, match="at index 2 a applied"):
        check_state_machines({"a": same, "b": {**same, 2: (2, EntryKind.COMMAND, b"x=2")}})


# -- durability ---------------------------------------------------------------------------


def disk(*terms: int, snapshot: tuple[int, int] | None = None) -> Disk:
    d = Disk()
    start = 1
    if snapshot is not None:
        from node.raft.messages import SnapshotMeta
        d.snapshot = SnapshotMeta(snapshot[0], snapshot[1], ABC)
        start = snapshot[0] + 1
    for i, term in enumerate(terms):
        d.entries[start + i] = e(start + i, term)
    return d


def test_a_committed_entry_held_by_too_few_disks_is_caught() -> None:
    history = {i: committed(i, 1, 1) for i in range(1, 6)}
    assert durable_prefix(disk(1, 1, 1, 1, 1), history) == 5
    assert durable_prefix(disk(1, 1, 2), history) == 2  # the third is another entry
    assert durable_prefix(disk(1, 1, snapshot=(3, 1)), history) == 5
    assert durable_prefix(disk(1, 1, 1, 1, 1, snapshot=(6, 1)), history) == 6
    check_durable({"a": 5, "b": 5, "c": 2}, 5, ABC)
    with pytest.raises(SafetyViolation, match=r"index 5 is on the disks of \['a'\] only"):
        check_durable({"a": 5, "b": 4, "c": 2}, 5, ABC)
    four = Membership(frozenset("abcd"))
    check_durable({"a": 5, "b": 5}, 5, four)  # any 3 of 4 include a or b
    with pytest.raises(SafetyViolation):
        check_durable({"a": 5}, 5, four)


# -- the live checker on a cluster with one thing broken ------------------------------------


def cluster(seed: int = 1, **options: object) -> tuple[RaftSim, RaftChecker]:
    sim = RaftSim(seed, **options)  # type: ignore[arg-type]
    checker = RaftChecker(sim, scan_every=1)
    for node_id in "abc":
        sim.add(node_id, bootstrap=ABC)
    sim.run_for(3.0)
    return sim, checker


def load(sim: RaftSim, count: int = 20) -> None:
    for i in range(count):
        leader = sim.leader()
        assert leader is not None
        sim.propose(leader.id, f"k{i % 3}={i}".encode())
        sim.run_for(0.01)
    sim.run_for(0.5)


def test_a_healthy_cluster_passes_every_check() -> None:
    sim, checker = cluster(snapshot_every=7)
    load(sim)
    leader = sim.leader()
    assert leader is not None
    sim.crash(leader.id)
    sim.run_for(3.0)
    sim.restart(leader.id)
    load(sim)
    checker.finish()
    assert checker.stats.committed >= 40 and checker.stats.leaders >= 2
    assert checker.steps > 0 and set(checker.stats.by_check) >= {
        "election safety", "leader completeness", "commit agreement", "state machine safety",
        "durable before sent", "durability", "state machine replay"}


def test_a_second_leader_in_a_term_is_caught_at_the_next_event() -> None:
    sim, _ = cluster()
    leader = sim.leader()
    assert leader is not None
    other = next(n for n in sim.nodes.values() if n is not leader)
    assert other.raft.term == leader.raft.term
    other.raft.role = Role.LEADER  # a core that let two nodes win one term
    with pytest.raises(SafetyViolation, match="Election Safety"):
        sim.call(other.id, lambda raft, now: None)


def test_a_commit_index_going_back_is_caught() -> None:
    sim, _ = cluster()
    load(sim, 3)
    node = next(n for n in sim.nodes.values() if not n.raft.is_leader)
    node.raft.commit_index -= 1
    with pytest.raises(SafetyViolation, match="commit index went back"):
        sim.call(node.id, lambda raft, now: None)


def break_ready(raft: Raft, broken: Callable[[Ready], Ready]) -> None:
    """A core whose Ready loses something: the test double of a persistence bug."""
    original = raft.ready
    raft.ready = lambda: broken(original())  # type: ignore[method-assign]


def test_an_acknowledgement_of_entries_not_on_disk_is_caught() -> None:
    sim, _ = cluster()
    follower = next(n for n in sim.nodes.values() if not n.raft.is_leader)

    def forget(ready: Ready) -> Ready:
        ready.entries = []  # acknowledged, never written
        return ready
    break_ready(follower.raft, forget)
    with pytest.raises(SafetyViolation, match="acknowledges entries up to"):
        load(sim, 3)


def test_a_second_vote_in_one_term_is_caught() -> None:
    sim, _ = cluster()
    node = next(n for n in sim.nodes.values() if not n.raft.is_leader)
    term, voted = node.disk.hard_state.term, node.disk.hard_state.voted_for
    assert voted is not None

    def revote(ready: Ready) -> Ready:
        ready.hard_state = HardState(term, "c" if voted != "c" else "b")
        return ready
    break_ready(node.raft, revote)
    with pytest.raises(SafetyViolation, match=f"voted twice in term {term}"):
        sim.run_for(0.5)


def test_a_second_ballot_in_one_term_across_a_replaced_disk_is_caught() -> None:
    sim, _ = cluster()
    node = next(n for n in sim.nodes.values() if not n.raft.is_leader)
    term, voted = node.disk.hard_state.term, node.disk.hard_state.voted_for
    assert voted is not None
    sim.wipe(node.id)
    node.disk.hard_state = HardState(0, None)  # and no fence: the bug the check is for
    sim.restart(node.id)
    other = "c" if voted != "c" else "b"
    # As if, its vote forgotten, it granted another candidate one in that term.
    with pytest.raises(SafetyViolation, match=f"{node.id} voted twice in term {term}"):
        sim.call(node.id, lambda raft, now: raft.receive(
            now, VoteRequest(term, other, node.id, 100, term)))


def test_a_commit_counting_an_acknowledgement_the_disk_lost_is_caught() -> None:
    sim = RaftSim(1)
    RaftChecker(sim, scan_every=1)
    five = Membership(frozenset("abcde"))
    for node_id in "abcde":
        sim.add(node_id, bootstrap=five)
    sim.run_for(3.0)
    leader = sim.leader()
    assert leader is not None
    follower, other, *rest = sorted(set(sim.nodes) - {leader.id})
    for node_id in (other, *rest):
        sim.block(leader.id, node_id)
    sim.propose(leader.id, b"k=1")
    sim.run_for(0.05)  # the follower acknowledged it (2 of 5); the others never got it
    sim.wipe(follower)
    sim.nodes[follower].disk.hard_state = HardState(0, None)  # and no fence
    sim.restart(follower)
    sim.block(leader.id, follower)  # so the leader never learns it lost its log
    sim.unblock(leader.id, other)
    with pytest.raises(SafetyViolation, match="but only the disks of"):
        sim.run_for(0.5)


def test_an_entry_rewritten_on_disk_is_caught_as_a_log_matching_violation() -> None:
    sim, checker = cluster()
    load(sim, 5)
    node = next(n for n in sim.nodes.values() if not n.raft.is_leader)
    last = max(node.disk.entries)
    node.disk.entries[last] = Entry(last, node.disk.entries[last].term, EntryKind.COMMAND,
                                    b"tampered=1")
    with pytest.raises(SafetyViolation, match="Log Matching"):
        checker.finish()


def test_committed_entries_lost_from_disks_are_caught() -> None:
    sim, checker = cluster()
    load(sim, 5)
    top = checker.commit_max
    for node in list(sim.nodes.values())[:2]:
        del node.disk.entries[top]  # two of three disks lose the last committed entry
    checker._prefix.clear()  # forget the cached durable prefixes, as a restart would
    with pytest.raises(SafetyViolation, match=f"committed index {top} is on the disks of"):
        checker.check_durability()


def test_a_state_machine_that_diverged_is_caught() -> None:
    sim, checker = cluster()
    load(sim, 5)
    node = next(iter(sim.nodes.values()))
    node.disk.kv["k0"] = "not what was written"
    with pytest.raises(SafetyViolation, match="is not the replay of the committed commands"):
        checker.finish()


def test_nodes_that_applied_different_entries_are_caught() -> None:
    sim, checker = cluster()
    load(sim, 5)
    node = next(iter(sim.nodes.values()))
    index = max(sim.applied[node.id])
    term, kind, _ = sim.applied[node.id][index]
    sim.applied[node.id][index] = (term, kind, b"k9=other")
    with pytest.raises(SafetyViolation, match=f"State Machine Safety: at index {index}"):
        checker.finish()
