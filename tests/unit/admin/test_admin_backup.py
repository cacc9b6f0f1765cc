"""``blobstore-node backup`` / ``restore`` on data dirs built without a node: what is
copied, what a restored data dir holds, and every refusal, which must leave nothing
behind (so the operator can fix the cause and run it again)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import trio

from node.admin import cli
from node.admin.backup import (RESTORED_TERM, BackupError, BackupInfo, backup, blockers,
                               check_restorable, resolve_node_id, restore)
from node.meta import commands as c
from node.meta.state import MetaState
from node.raft import storage as raft_storage
from node.raft.messages import Membership
from node.store.db import Database


async def make_metadata(data_dir: Path, *, bootstrapped: bool = True) -> None:
    """A node's ``meta.sqlite3`` after a bootstrap, a user, a container and a blob."""
    data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(data_dir / "meta.sqlite3")
    state = MetaState()
    try:
        db.write_sync(state.load)
        now = "2026-12-03T00:00:00Z"
        commands: list[c.Command] = [
            c.CreateUser("alice", "user", "hash", now), c.CreateContainer("box", "alice", 2, now),
            c.PutBlob("box", "b", 3, "0" * 32, "text/plain", now, 65536, (), inline="YWJj")]
        if bootstrapped:
            commands.insert(0, c.Bootstrap("cluster-1", "ab" * 32, "hash", now))
        await db.write(lambda conn: state.apply_batch(
            conn, [(i + 1, cmd) for i, cmd in enumerate(commands)]))
    finally:
        db.close()


def journal_mode(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


# -- pure checks ---------------------------------------------------------------------------

def test_the_node_id_comes_from_node_json_or_the_caller_and_they_must_agree() -> None:
    d = Path("/d")
    assert resolve_node_id("n1", None, d) == "n1"
    assert resolve_node_id(None, "n2", d) == "n2"
    assert resolve_node_id("n3", "n3", d) == "n3"
    with pytest.raises(BackupError, match="belongs to node 'n1', not 'n2'"):
        resolve_node_id("n1", "n2", d)
    with pytest.raises(BackupError, match="give --node-id"):
        resolve_node_id(None, None, d)
    with pytest.raises(BackupError, match="invalid node id"):
        resolve_node_id(None, "-bad id", d)


def test_only_a_bootstrapped_state_can_seed_a_cluster() -> None:
    good = BackupInfo(7, "c", True, 1, 0, 0, 0, 0, 0)
    check_restorable(good)
    with pytest.raises(BackupError, match="signing key missing"):
        check_restorable(BackupInfo(7, "c", False, 1, 0, 0, 0, 0, 0))
    with pytest.raises(BackupError, match="applied index 0"):
        check_restorable(BackupInfo(0, "c", True, 1, 0, 0, 0, 0, 0))


def test_blockers_are_metadata_files_but_not_chunks_or_identity(tmp_path: Path) -> None:
    (tmp_path / "store" / "chunks").mkdir(parents=True)
    (tmp_path / "node.json").write_text("{}")
    (tmp_path / "snapshots").mkdir()
    assert blockers(tmp_path) == []
    for name in ("raft.sqlite3-wal", "snapshots/snapshot-5-1.sqlite3", "meta.sqlite3"):
        (tmp_path / name).write_bytes(b"")
    assert sorted(p.name for p in blockers(tmp_path)) == [
        "meta.sqlite3", "raft.sqlite3-wal", "snapshot-5-1.sqlite3"]


# -- backup --------------------------------------------------------------------------------

async def test_a_backup_is_one_checked_self_contained_file(tmp_path: Path) -> None:
    await make_metadata(tmp_path / "node")
    out = tmp_path / "backups" / "meta.sqlite3"
    out.parent.mkdir()
    info = await backup(tmp_path / "node", out)
    assert (info.applied_index, info.cluster_id, info.bootstrapped) == (4, "cluster-1", True)
    assert (info.users, info.containers, info.blobs, info.inline_blobs, info.blob_bytes) == \
        (2, 1, 1, 1, 3)
    assert journal_mode(out) == "delete"
    assert out.stat().st_mode & 0o777 == 0o600  # it holds the token signing key
    assert sorted(p.name for p in out.parent.iterdir()) == ["meta.sqlite3"]  # no staging left
    again = await backup(tmp_path / "node", out)  # an existing backup is replaced
    assert again == info


async def test_a_backup_refuses_a_dir_without_metadata_or_unbootstrapped(
        tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="does not exist"):
        await backup(tmp_path / "nowhere", tmp_path / "out.sqlite3")
    await make_metadata(tmp_path / "new", bootstrapped=False)
    with pytest.raises(BackupError, match="no bootstrapped cluster"):
        await backup(tmp_path / "new", tmp_path / "out.sqlite3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]


# -- restore -------------------------------------------------------------------------------

async def test_a_restored_data_dir_is_a_one_voter_group_at_the_backups_index(
        tmp_path: Path) -> None:
    await make_metadata(tmp_path / "old")
    await backup(tmp_path / "old", tmp_path / "b.sqlite3")
    target = tmp_path / "new"
    restored = await restore(target, tmp_path / "b.sqlite3", "n7")
    assert restored.node_id == "n7" and restored.snapshot.index == 4
    assert json.loads((target / "node.json").read_text())["node_id"] == "n7"
    assert (target / "snapshots" / f"snapshot-4-{RESTORED_TERM}.sqlite3").is_file()
    raft = Database(target / "raft.sqlite3")
    try:
        stored = await raft.write(raft_storage.load)
        group = await raft.write(raft_storage.group_id)
    finally:
        raft.close()
    assert stored.snapshot is not None and stored.entries == []
    assert (stored.snapshot.index, stored.snapshot.term) == (4, RESTORED_TERM)
    assert stored.snapshot.membership == Membership(frozenset({"n7"}))
    assert stored.hard_state.term == RESTORED_TERM and stored.hard_state.fence is None
    assert group == restored.group and len(group) == 16
    # The restored metadata is the backup's.
    meta = Database(target / "meta.sqlite3")
    state = MetaState()
    try:
        meta.write_sync(state.load)
    finally:
        meta.close()
    assert state.applied_index == 4 and state.cluster_id == "cluster-1"
    assert set(state.view.users) == {"admin", "alice"}
    assert not (target / "raft.sqlite3.restoring").exists()


async def test_a_restore_refuses_and_leaves_nothing_behind(tmp_path: Path) -> None:
    await make_metadata(tmp_path / "old")
    good = tmp_path / "b.sqlite3"
    await backup(tmp_path / "old", good)
    target = tmp_path / "new"
    (target / "store").mkdir(parents=True)

    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"not a database at all" * 100)
    other = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    await make_metadata(tmp_path / "unbooted", bootstrapped=False)
    for source, why in [(tmp_path / "missing.sqlite3", "does not exist"),
                        (junk, "not a blobstore metadata backup"),
                        (other, "not a blobstore metadata backup"),
                        (tmp_path / "unbooted" / "meta.sqlite3", "no bootstrapped cluster")]:
        with pytest.raises(BackupError, match=why):
            await restore(target, source, "n1")
        assert blockers(target) == [], source
    assert journal_mode(good) == "delete"  # the backup file was only read

    await restore(target, good, "n1")
    with pytest.raises(BackupError, match="already holds metadata"):
        await restore(target, good, "n1")
    with pytest.raises(BackupError, match="belongs to node 'n1', not 'n2'"):
        await restore(target, good, "n2")


# -- the command line ----------------------------------------------------------------------

def test_the_command_line_prints_json_and_exits_1_on_refusal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trio.run(make_metadata, tmp_path / "node")
    out = tmp_path / "b.sqlite3"
    assert cli.main(["backup", "--out", str(out)],
                    {"BLOBSTORE_DATA_DIR": str(tmp_path / "node")}) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["backup"] == str(out) and printed["applied_index"] == 4

    target = tmp_path / "restored"
    assert cli.main(["restore", "--data-dir", str(target), "--from", str(out)], {}) == 1
    assert "give --node-id" in capsys.readouterr().err
    assert cli.main(["restore", "--data-dir", str(target), "--from", str(out)],
                    {"BLOBSTORE_NODE_ID": "n4"}) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["node_id"] == "n4" and printed["snapshot_index"] == 4
    assert printed["backup"]["users"] == 2
    with pytest.raises(SystemExit) as usage:
        cli.main(["backup", "--data-dir", str(target)], {})
    assert usage.value.code == 2
