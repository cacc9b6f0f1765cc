"""Metadata backups: a consistent copy of one node's metadata, and a new cluster seeded from it.

**What a backup is.** One self-contained sqlite file: a copy of a node's
``meta.sqlite3`` as that node had applied the coordinator's log up to one index
(``applied_index``, recorded inside it). It holds users (password hashes and
token epochs), the token signing key, containers, grants, every blob's
manifest, the bytes of small blobs stored inline (``inline_max``), and the
collector's condemnations. Every node applies the same committed log, so any
node's copy is a committed state of the whole cluster's metadata; the most
caught-up node gives the freshest one.

**Why it is consistent while the node serves.** sqlite's online backup API
copies every page in one step, under one read transaction on the live
database; in WAL mode the node's writer goes on meanwhile and the copy is the
state of one commit, never half of a batch. It runs in its own process, on
the node's machine, against the data dir (``blobstore-node backup``): it needs
no quorum, no token and no running node, which is when a backup matters most,
and it adds no network surface (whoever can read the data dir can read the
metadata anyway). The copy is checked (``PRAGMA integrity_check``, bootstrapped,
``applied_index`` > 0) before it replaces ``out``, atomically and fsynced.

**What it does not cover.** Chunk files, the bytes of every blob above
``inline_max``: they stay on the nodes' disks and must survive or be copied
separately (a restore reads a blob only if its chunk files are on a node of the
restored cluster). Anything committed after the backup: those blobs, users,
containers and grants are gone after a restore, and their chunk files become
garbage that the collector reclaims after ``gc_grace_s``. Also undone: deletions
and overwrites after the backup (the old manifests come back; their chunks are
readable only if the collector had not yet reclaimed them), and logouts and
password changes (tokens they revoked work again until they expire, unless
``revoke_tokens``). The Raft log and membership are not in it: a restore starts
a new coordinator group.

**Restore.** ``restore`` prepares a data dir holding no metadata (chunk files
may be there) so that a node started on it is the one voter of a new Raft
group whose state is the backup: ``meta.sqlite3`` is the backup;
``snapshots/snapshot-N-1.sqlite3`` a copy of it, the Raft snapshot at the
backup's applied index N, which is what every node that joins later receives
(the log before N exists nowhere); and ``raft.sqlite3`` records that snapshot
with this node as the only voter, term 1, and a fresh group id, so a node of
the old group that kept its metadata never mixes with the new one. Log indexes
go on from N, so the upload ``since`` indexes and condemnations inside the
metadata keep their meaning. ``raft.sqlite3`` is written last, under a
temporary name, and renamed into place: a data dir that has it holds a
complete restore; an interrupted restore leaves metadata without a Raft log,
which a node refuses to start on.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from node import datadir
from node.config import valid_node_id
from node.datadir import META_DB, RAFT_DB, SNAPSHOT_DIR
from node.raft import storage as raft_storage
from node.raft.core import HardState, Ready
from node.raft.messages import Membership, SnapshotMeta
from node.raft.snapshots import file_name
from node.store.db import Connection, Database, DatabaseError, write_transaction
from node.store.files import replace_durably

#: A backup holds password hashes and the key that signs every token: owner-only.
BACKUP_MODE = 0o600
#: The term of the restored snapshot and of the new group's first hard state; its first
#: election makes the node leader in a later term.
RESTORED_TERM = 1


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """What a metadata backup holds, read from the copy itself."""

    applied_index: int
    cluster_id: str | None
    bootstrapped: bool
    users: int
    containers: int
    grants: int
    blobs: int
    blob_bytes: int
    inline_blobs: int

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class RestoreInfo:
    node_id: str
    group: str
    snapshot: SnapshotMeta
    tokens_revoked: bool
    backup: BackupInfo

    def to_json(self) -> dict[str, object]:
        return {"node_id": self.node_id, "group": self.group,
                "snapshot_index": self.snapshot.index, "snapshot_term": self.snapshot.term,
                "tokens_revoked": self.tokens_revoked, "backup": self.backup.to_json()}


# -- reading a metadata database -----------------------------------------------------------

def describe(conn: Connection) -> BackupInfo:
    """What the metadata database on ``conn`` holds. Raises DatabaseError if it is not one."""
    meta = dict(conn.execute("SELECT key, value FROM meta"))

    def count(sql: str) -> int:
        return int(conn.execute(sql).fetchone()[0])

    blobs, size = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM blobs").fetchone()
    return BackupInfo(
        applied_index=int(meta.get("applied_index", 0)), cluster_id=meta.get("cluster_id"),
        bootstrapped="signing_key" in meta, users=count("SELECT count(*) FROM users"),
        containers=count("SELECT count(*) FROM containers"),
        grants=count("SELECT count(*) FROM grants"), blobs=int(blobs), blob_bytes=int(size),
        inline_blobs=count("SELECT count(*) FROM inline_data"))


def check_integrity(conn: Connection) -> None:
    """Raise BackupError unless sqlite finds the database file intact."""
    rows = conn.execute("PRAGMA integrity_check").fetchall()
    if [tuple(row) for row in rows] != [("ok",)]:
        raise BackupError(f"the copy is damaged: {[row[0] for row in rows[:5]]}")


def check_restorable(info: BackupInfo) -> None:
    """A backup seeds a cluster only if it holds a bootstrapped cluster's state."""
    if info.applied_index <= 0 or not info.bootstrapped:
        key = "present" if info.bootstrapped else "missing"
        raise BackupError("the metadata holds no bootstrapped cluster (applied index "
                          f"{info.applied_index}, signing key {key})")


def revoke_all_tokens(conn: Connection) -> int:
    """Bump every user's token epoch, as a logout of everyone would; the users changed."""
    with write_transaction(conn):
        return int(conn.execute("UPDATE users SET epoch = epoch + 1").rowcount)


# -- backup --------------------------------------------------------------------------------

async def backup(data_dir: Path, out: Path) -> BackupInfo:
    """Copy the metadata of the node whose data dir is ``data_dir`` to ``out`` (replaced
    atomically if it exists, readable by its owner only); the node may be running.

    Raises:
        BackupError: no metadata there, or the copy failed its checks (``out`` untouched).

    Resource handling: a staging copy next to ``out`` is checked first and always removed;
    the live database is only read.
    """
    source = data_dir / META_DB
    if not source.is_file():
        raise BackupError(f"{source} does not exist: is {data_dir} a node's data dir?")
    if out.is_dir():
        raise BackupError(f"{out} is a directory; give the backup file's name")
    staging = out.with_name(f".{out.name}.staging")
    _remove_database(staging)
    try:
        live = Database(source, readers=1)
        try:
            await live.backup_to(staging)
        finally:
            live.close()
        copy = Database(staging, readers=1)
        try:
            info = await copy.read(describe)
            await copy.read(check_integrity)
            check_restorable(info)
            await copy.backup_to(out)  # journal_mode=DELETE: one self-contained file
        finally:
            copy.close()
        os.chmod(out, BACKUP_MODE)
    except DatabaseError as exc:
        raise BackupError(f"cannot copy {source}: {exc}") from None
    finally:
        _remove_database(staging)
    return info


# -- restore -------------------------------------------------------------------------------

def resolve_node_id(stored: str | None, given: str | None, data_dir: Path) -> str:
    """The node id a restored data dir belongs to: the one it already names in ``node.json``
    (``stored``) or else the one given; both must agree and be valid."""
    if stored is not None and given is not None and stored != given:
        raise BackupError(f"data dir {data_dir} belongs to node {stored!r}, not {given!r}")
    node_id = stored if stored is not None else given
    if node_id is None:
        raise BackupError(f"data dir {data_dir} names no node yet: give --node-id")
    if not valid_node_id(node_id):
        raise BackupError(f"invalid node id {node_id!r}")
    return node_id


def blockers(data_dir: Path) -> list[Path]:
    """What shows that ``data_dir`` already holds metadata: a restore never overwrites it."""
    found = [path for name in (META_DB, RAFT_DB) for suffix in ("", "-wal")
             if (path := data_dir / f"{name}{suffix}").exists()]
    snapshots = data_dir / SNAPSHOT_DIR
    if snapshots.is_dir():
        found += sorted(snapshots.glob("*.sqlite3*"))
    return found


async def restore(data_dir: Path, source: Path, node_id: str | None = None, *,
                  revoke_tokens: bool = False) -> RestoreInfo:
    """Prepare ``data_dir`` so that a node started on it (without ``--join``) is a new
    one-voter cluster whose metadata is the backup at ``source``.

    ``data_dir`` may hold chunk files (``store/``) and its ``node.json``, but no metadata;
    no node may be running on it. ``source`` is only read.

    Raises:
        BackupError: the data dir is in use or holds metadata, the node id is missing or
            disagrees with ``node.json``, or ``source`` is not a usable backup. What this
            call created is removed again, so it can simply be run once more.
    """
    if not source.is_file():
        raise BackupError(f"backup file {source} does not exist")
    data_dir.mkdir(parents=True, exist_ok=True)
    with _locked(data_dir):
        stored = _stored_node_id(data_dir)
        node_id = resolve_node_id(stored, node_id, data_dir)
        found = blockers(data_dir)
        if found:
            raise BackupError(f"data dir {data_dir} already holds metadata "
                              f"({', '.join(p.name for p in found)}); a restore never "
                              "overwrites it: remove meta.sqlite3*, raft.sqlite3* and "
                              "snapshots/ (chunk files in store/ are kept)")
        if stored is None:  # as a node writes it at its first start
            datadir.write_identity(data_dir, node_id)
        created: list[Path] = [data_dir / META_DB]
        try:
            info, snapshot = await _restore_metadata(data_dir, source, node_id, revoke_tokens,
                                                     created)
            group = secrets.token_hex(8)
            await _start_group(data_dir, group, snapshot)
        except BaseException:
            for path in created:
                _remove_database(path)
            raise
    return RestoreInfo(node_id, group, snapshot, revoke_tokens, info)


async def _restore_metadata(data_dir: Path, source: Path, node_id: str, revoke_tokens: bool,
                            created: list[Path]) -> tuple[BackupInfo, SnapshotMeta]:
    """``meta.sqlite3`` from the backup, and the snapshot file of it that joiners receive."""
    meta = Database(data_dir / META_DB, readers=1)
    try:
        try:
            await meta.restore_from(source)
            info = await meta.read(describe)
            await meta.read(check_integrity)
        except DatabaseError as exc:
            raise BackupError(f"{source} is not a blobstore metadata backup: {exc}") from None
        check_restorable(info)
        if revoke_tokens:
            await meta.write(revoke_all_tokens)
        snapshot = SnapshotMeta(info.applied_index, RESTORED_TERM,
                                Membership(frozenset({node_id})))
        directory = data_dir / SNAPSHOT_DIR
        directory.mkdir(exist_ok=True)
        created.append(directory / file_name(snapshot))
        await meta.backup_to(directory / file_name(snapshot))
    finally:
        meta.close()
    return info, snapshot


async def _start_group(data_dir: Path, group: str, snapshot: SnapshotMeta) -> None:
    """``raft.sqlite3``: the new group's id, the snapshot, the first hard state. Built under
    a temporary name and renamed into place, so it exists only complete."""
    final = data_dir / RAFT_DB
    tmp = data_dir / f"{RAFT_DB}.restoring"
    _remove_database(tmp)

    def write(conn: Connection) -> None:
        raft_storage.save_start(conn, group, None)
        raft_storage.compact(conn, snapshot)
        raft_storage.save(conn, Ready(hard_state=HardState(RESTORED_TERM, None)))

    raft = Database(tmp, readers=1)
    try:
        await raft.write(write)
    finally:
        raft.close()  # the last connection: sqlite checkpoints the WAL into the file
    try:
        if Path(f"{tmp}-wal").exists():
            raise BackupError(f"{tmp} kept a write-ahead log after closing; not renaming it")
        replace_durably(tmp, final)
    finally:
        _remove_database(tmp)


# -- the data dir --------------------------------------------------------------------------

@contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """The lock a running node holds on its data dir: taken for the whole restore, so
    neither a node nor a second restore can start meanwhile."""
    try:
        fd = datadir.lock(data_dir)
    except datadir.DataDirInUse:
        raise BackupError(f"data dir {data_dir} is in use by a running node; stop it "
                          "first") from None
    try:
        yield
    finally:
        os.close(fd)


def _stored_node_id(data_dir: Path) -> str | None:
    try:
        return datadir.stored_node_id(data_dir)
    except datadir.BadIdentity as exc:
        raise BackupError(str(exc)) from None


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal", ".tmp"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
