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
        db.write_sync(lambda conn: storage.save_group_id(conn, "0123abcd"))
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
