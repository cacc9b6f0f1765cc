"""RaftLog (node.raft.log): the in-memory log after the snapshot, as a pure value.

Logs are written as a list of terms: ``log_of(0, 1, 1, 2)`` holds index 1 at
term 0, indexes 2-3 at term 1 and index 4 at term 2.
"""

from __future__ import annotations

import pytest

from node.raft.log import EMPTY_SNAPSHOT, RaftLog
from node.raft.messages import Entry, EntryKind, Membership, SnapshotMeta

ABC = Membership(frozenset({"a", "b", "c"}))
ABCD = Membership(frozenset({"a", "b", "c", "d"}))
AB_C = Membership(frozenset({"a", "b"}), frozenset({"c"}))


def entries_of(*terms: int, start: int = 1) -> list[Entry]:
    return [Entry(start + i, term, data=f"{start + i}".encode()) for i, term in enumerate(terms)]


def log_of(*terms: int) -> RaftLog:
    return RaftLog(entries=entries_of(*terms))


def terms(log: RaftLog) -> list[int | None]:
    return [log.term_at(i) for i in range(log.first_index, log.last_index + 1)]


def member_entry(index: int, term: int, membership: Membership) -> Entry:
    return Entry(index, term, EntryKind.MEMBERSHIP, membership.encode())


# -- construction ---------------------------------------------------------------------------


def test_empty_log_has_index_zero_at_term_zero() -> None:
    log = RaftLog()
    assert (log.first_index, log.last_index, log.last_term) == (1, 0, 0)
    assert log.term_at(0) == 0
    assert log.term_at(1) is None
    assert log.snapshot == EMPTY_SNAPSHOT


def test_a_gap_in_the_initial_entries_raises() -> None:
    with pytest.raises(ValueError, match="gap at index 3"):
        RaftLog(entries=[Entry(1, 1), Entry(2, 1), Entry(4, 1)])


def test_initial_entries_must_start_right_after_the_snapshot() -> None:
    with pytest.raises(ValueError, match="gap"):
        RaftLog(SnapshotMeta(3, 1, ABC), [Entry(5, 1)])


def test_initial_entries_covered_by_the_snapshot_are_dropped() -> None:
    log = RaftLog(SnapshotMeta(3, 1, ABC), entries_of(1, 1, 1, 2, 2))
    assert (log.first_index, log.last_index, log.last_term) == (4, 5, 2)
    assert terms(log) == [2, 2]


# -- append -----------------------------------------------------------------------------------


def test_append_extends_and_reports_no_truncation() -> None:
    log = log_of(1, 1)
    assert log.append(entries_of(1, 2, start=3)) is None
    assert terms(log) == [1, 1, 1, 2]
    assert log.last_term == 2


def test_append_of_matching_entries_is_a_no_op() -> None:
    log = log_of(1, 1, 2)
    assert log.append(entries_of(1, 2, start=2)) is None
    assert terms(log) == [1, 1, 2]


def test_append_truncates_a_conflicting_suffix_and_returns_where() -> None:
    log = log_of(1, 1, 1, 1, 1)
    # Index 3 matches, index 4 conflicts: everything from 4 goes.
    assert log.append([Entry(3, 1), Entry(4, 3)]) == 4
    assert terms(log) == [1, 1, 1, 3]
    assert log.last_index == 4


def test_append_truncation_of_a_longer_suffix_by_a_shorter_one() -> None:
    log = log_of(1, 2, 2, 2, 2, 2)
    assert log.append(entries_of(3, start=2)) == 2
    assert terms(log) == [1, 3]


def test_append_leaving_a_gap_raises() -> None:
    log = log_of(1, 1)
    with pytest.raises(ValueError, match="gap"):
        log.append([Entry(4, 1)])


def test_append_skips_entries_covered_by_the_snapshot() -> None:
    log = RaftLog(SnapshotMeta(3, 1, ABC))
    assert log.append(entries_of(1, 1, 1, 2, start=1)) is None
    assert (log.first_index, log.last_index) == (4, 4)
    assert log.entry(4).term == 2


# -- term_at and entry --------------------------------------------------------------------------


def test_term_at_at_below_and_above_the_snapshot() -> None:
    log = RaftLog(SnapshotMeta(5, 2, ABC), entries_of(3, 3, start=6))
    assert log.term_at(5) == 2          # exactly the snapshot: its term
    assert log.term_at(4) is None       # compacted away
    assert log.term_at(0) is None       # even index 0 is gone once a snapshot exists
    assert log.term_at(6) == 3
    assert log.term_at(7) == 3
    assert log.term_at(8) is None       # beyond the end
    assert (log.first_index, log.last_index, log.last_term) == (6, 7, 3)


def test_last_term_of_an_empty_suffix_is_the_snapshots() -> None:
    log = RaftLog(SnapshotMeta(5, 2, ABC))
    assert (log.last_index, log.last_term) == (5, 2)


def test_entry_below_the_first_index_raises() -> None:
    log = RaftLog(SnapshotMeta(5, 2, ABC), entries_of(3, 3, start=6))
    with pytest.raises(IndexError):
        log.entry(5)


# -- slice ------------------------------------------------------------------------------------


def test_slice_returns_the_half_open_range() -> None:
    log = log_of(1, 1, 2, 2, 3)
    assert [e.index for e in log.slice(2, 5, 1 << 20)] == [2, 3, 4]
    assert [e.index for e in log.slice(4, 100, 1 << 20)] == [4, 5]
    assert log.slice(6, 10, 1 << 20) == ()


def test_slice_stops_past_max_bytes_but_returns_at_least_one() -> None:
    log = RaftLog(entries=[Entry(i, 1, data=b"x" * 100) for i in range(1, 6)])
    # Each entry costs len(data) + 32 = 132 bytes.
    assert len(log.slice(1, 6, 1)) == 1
    assert len(log.slice(1, 6, 132)) == 1
    assert len(log.slice(1, 6, 263)) == 1
    assert len(log.slice(1, 6, 264)) == 2
    assert len(log.slice(1, 6, 10_000)) == 5


def test_slice_starts_no_earlier_than_the_first_held_entry() -> None:
    log = RaftLog(SnapshotMeta(3, 1, ABC), entries_of(2, 2, start=4))
    assert [e.index for e in log.slice(1, 10, 1 << 20)] == [4, 5]


# -- compact ----------------------------------------------------------------------------------


def test_compact_keeps_a_suffix_that_matches_the_snapshot() -> None:
    log = log_of(1, 1, 2, 2, 3)
    log.compact(SnapshotMeta(3, 2, ABC))
    assert log.snapshot == SnapshotMeta(3, 2, ABC)
    assert (log.first_index, log.last_index) == (4, 5)
    assert terms(log) == [2, 3]
    assert log.term_at(3) == 2


def test_compact_drops_a_suffix_that_does_not_match() -> None:
    log = log_of(1, 1, 2, 2, 3)
    log.compact(SnapshotMeta(3, 5, ABC))  # our index 3 is term 2: not the snapshot's history
    assert (log.first_index, log.last_index, log.last_term) == (4, 3, 5)
    assert terms(log) == []


def test_compact_beyond_the_end_leaves_just_the_snapshot() -> None:
    log = log_of(1, 1)
    log.compact(SnapshotMeta(9, 4, ABC))
    assert (log.last_index, log.last_term) == (9, 4)


def test_compact_to_an_older_snapshot_changes_nothing() -> None:
    log = RaftLog(SnapshotMeta(5, 2, ABC), entries_of(3, start=6))
    log.compact(SnapshotMeta(4, 2, ABC))
    log.compact(SnapshotMeta(5, 2, ABC))
    assert log.snapshot.index == 5
    assert terms(log) == [3]


# -- terms ------------------------------------------------------------------------------------


def test_first_index_of_term_walks_back_to_the_terms_start() -> None:
    log = log_of(1, 1, 2, 2, 2, 3)
    assert log.first_index_of_term(2, 5) == 3
    assert log.first_index_of_term(2, 3) == 3
    assert log.first_index_of_term(1, 2) == 1
    assert log.first_index_of_term(3, 6) == 6


def test_first_index_of_term_stops_at_the_snapshot() -> None:
    log = RaftLog(SnapshotMeta(3, 2, ABC), entries_of(2, 2, 3, start=4))
    assert log.first_index_of_term(2, 5) == 4


def test_last_index_of_term() -> None:
    log = log_of(1, 1, 3, 3, 5)
    assert log.last_index_of_term(1) == 2
    assert log.last_index_of_term(3) == 4
    assert log.last_index_of_term(5) == 5
    assert log.last_index_of_term(2) is None  # the log skips term 2
    assert log.last_index_of_term(4) is None
    assert log.last_index_of_term(6) is None


def test_last_index_of_term_does_not_look_into_the_snapshot() -> None:
    log = RaftLog(SnapshotMeta(3, 1, ABC), entries_of(2, start=4))
    assert log.last_index_of_term(2) == 4
    assert log.last_index_of_term(1) is None


# -- membership -------------------------------------------------------------------------------


def test_membership_comes_from_the_newest_membership_entry() -> None:
    log = RaftLog(entries=[member_entry(1, 0, ABC), Entry(2, 1), member_entry(3, 1, ABCD),
                           Entry(4, 1), member_entry(5, 2, AB_C), Entry(6, 2)])
    assert log.latest_membership() == (5, AB_C)
    assert log.membership_at(1) == ABC
    assert log.membership_at(2) == ABC
    assert log.membership_at(3) == ABCD
    assert log.membership_at(4) == ABCD
    assert log.membership_at(6) == AB_C
    assert log.membership_at(99) == AB_C


def test_membership_falls_back_to_the_snapshots() -> None:
    log = RaftLog(SnapshotMeta(4, 1, ABCD), [Entry(5, 1), member_entry(6, 2, AB_C)])
    assert log.membership_at(5) == ABCD
    assert log.membership_at(6) == AB_C
    assert log.latest_membership() == (6, AB_C)
    log.append([Entry(6, 3)])  # the membership entry is truncated away
    assert log.latest_membership() == (4, ABCD)
    assert log.membership_at(6) == ABCD


def test_empty_log_has_the_empty_membership() -> None:
    assert RaftLog().latest_membership() == (0, Membership())


def test_membership_round_trips_and_rejects_overlap() -> None:
    assert Membership.decode(AB_C.encode()) == AB_C
    assert AB_C.members == {"a", "b", "c"}
    assert (ABC.quorum(), ABCD.quorum(), AB_C.quorum()) == (2, 3, 2)
    with pytest.raises(ValueError, match="both voter and learner"):
        Membership(frozenset({"a"}), frozenset({"a"}))
