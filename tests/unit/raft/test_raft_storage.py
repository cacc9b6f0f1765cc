"""Raft's durable state: what save() wrote is what load() returns, across reopenings."""

from __future__ import annotations

from pathlib import Path

from node.raft import storage
from node.raft.core import HardState, Ready
from node.raft.messages import Entry, EntryKind, Membership, SnapshotMeta, SnapshotRequest
from node.store.db import Database

M = Membership(frozenset({"a", "b", "c"}))


def entries(start: int, end: int, term: int) -> list[Entry]:
    return [Entry(i, term, EntryKind.COMMAND, f"e{i}".encode()) for i in range(start, end)]


def reopen(path: Path) -> storage.Stored:
    db = Database(path)
    try:
        return db.write_sync(storage.load)
    finally:
        db.close()


def test_a_new_store_is_empty(tmp_path: Path) -> None:
    stored = reopen(tmp_path / "raft.sqlite3")
    assert stored.empty and stored.hard_state == HardState(0, None) and stored.entries == []


def test_save_then_load_round_trips_across_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "raft.sqlite3"
    db = Database(path)
    db.write_sync(storage.create)
    first = [Entry(1, 0, EntryKind.MEMBERSHIP, M.encode()), *entries(2, 6, 1)]
    db.write_sync(lambda c: storage.save(c, Ready(hard_state=HardState(1, "a"), entries=first)))
    db.close()
    stored = reopen(path)
    assert stored.hard_state == HardState(1, "a")
    assert stored.entries == first and stored.snapshot is None


def test_truncation_and_replacement_in_one_ready(tmp_path: Path) -> None:
    path = tmp_path / "raft.sqlite3"
    db = Database(path)
    db.write_sync(storage.create)
    db.write_sync(lambda c: storage.save(c, Ready(entries=entries(1, 8, 1))))
    db.write_sync(lambda c: storage.save(c, Ready(truncate_from=4,
                                                  entries=entries(4, 6, 2))))
    db.close()
    stored = reopen(path)
    assert [(e.index, e.term) for e in stored.entries] == \
        [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2)]


def test_compaction_and_an_installed_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "raft.sqlite3"
    db = Database(path)
    db.write_sync(storage.create)
    db.write_sync(lambda c: storage.save(c, Ready(entries=entries(1, 11, 1))))
    db.write_sync(lambda c: storage.compact(c, SnapshotMeta(6, 1, M)))
    stored = db.write_sync(storage.load)
    assert stored.snapshot == SnapshotMeta(6, 1, M)
    assert [e.index for e in stored.entries] == [7, 8, 9, 10]
    # A snapshot from the leader that is ahead of everything: the whole log goes.
    install = SnapshotRequest(3, "b", "a", SnapshotMeta(20, 3, M))
    db.write_sync(lambda c: storage.save(c, Ready(snapshot=install, truncate_from=1)))
    db.close()
    stored = reopen(path)
    assert stored.snapshot == SnapshotMeta(20, 3, M) and stored.entries == []


def test_a_gap_in_the_stored_log_keeps_only_the_contiguous_prefix(tmp_path: Path) -> None:
    path = tmp_path / "raft.sqlite3"
    db = Database(path)
    db.write_sync(storage.create)
    db.write_sync(lambda c: storage.save(c, Ready(entries=entries(1, 4, 1) + entries(5, 7, 1))))
    db.close()
    assert [e.index for e in reopen(path).entries] == [1, 2, 3]


def test_the_group_id_is_kept_apart_from_the_raft_state(tmp_path: Path) -> None:
    path = tmp_path / "raft.sqlite3"
    db = Database(path)
    try:
        assert db.write_sync(storage.group_id) is None
        db.write_sync(lambda conn: storage.save_start(conn, "0123abcd", None))
        # A group id alone is not Raft state: a node that chose a group but crashed
        # before its first entry still decides again at start-up.
        assert not db.write_sync(storage.has_state)
        db.write_sync(lambda conn: storage.clear_log(conn))
    finally:
        db.close()
    db = Database(path)
    try:
        assert db.write_sync(storage.group_id) == "0123abcd"
    finally:
        db.close()


def test_the_fence_is_saved_with_the_hard_state_and_starts_with_the_joining(
        tmp_path: Path) -> None:
    path = tmp_path / "raft.sqlite3"
    db = Database(path)
    try:
        db.write_sync(lambda conn: storage.save_start(conn, "0123abcd", None))
        assert not db.write_sync(storage.has_state)  # one of the first voters: no fence
        db.write_sync(lambda conn: storage.save_start(conn, "0123abcd", "f1"))
        # A node that decided to join is fenced from then on, even if it crashes at once.
        assert db.write_sync(storage.has_state)
        assert db.write_sync(storage.group_id) == "0123abcd"
        stored = db.write_sync(storage.load)
        assert stored.hard_state == HardState(0, None, "f1") and stored.empty
        db.write_sync(lambda c: storage.save(c, Ready(hard_state=HardState(3, None, "f1"))))
        assert db.write_sync(storage.load).hard_state == HardState(3, None, "f1")
        db.write_sync(lambda c: storage.save(c, Ready(hard_state=HardState(3, "a"))))
    finally:
        db.close()
    assert reopen(path).hard_state == HardState(3, "a", None)


def test_a_store_written_before_fences_existed_loads_unfenced(tmp_path: Path) -> None:
    path = tmp_path / "raft.sqlite3"
    db = Database(path)
    try:
        db.write_sync(lambda conn: conn.executescript(
            "CREATE TABLE raft_hard_state (id INTEGER PRIMARY KEY CHECK (id = 1), "
            "term INTEGER NOT NULL, voted_for TEXT);"
            "INSERT INTO raft_hard_state (id, term, voted_for) VALUES (1, 7, 'b');"))
        assert db.write_sync(storage.load).hard_state == HardState(7, "b")
        db.write_sync(lambda c: storage.save(c, Ready(hard_state=HardState(8, None, "f"))))
    finally:
        db.close()
    assert reopen(path).hard_state == HardState(8, None, "f")
