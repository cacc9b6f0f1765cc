"""The metadata state machine: committed commands applied in order to sqlite.

``apply_batch`` runs on the database's writer thread and applies a batch of
(index, command) entries in one transaction, each inside its own savepoint, so
a command that fails its checks (a container that exists, a failed If-Match)
returns its error as its result without disturbing its neighbours. The batch's
one COMMIT is its one fsync: that is the group commit.

Results are deterministic: they depend only on the state and the command, never
on a clock or on randomness, so the replicated log can feed every node the same
entries and every node reaches the same state and the same answers.

A small blob (up to ``inline_max``) travels in its ``PutBlob`` and is kept in
``inline_data`` under its manifest's version, apart from the manifests so
listings stay compact; its manifest has no chunks. It is as durable as any
manifest: on a majority of the voters when acknowledged, and on every node once
applied.

Users, containers and grants are small and read on every request, so a copy is
kept in memory (``AuthView``). It is updated only after the transaction
commits, by swapping whole frozen records, so readers on the trio thread see
either the old or the new record and never one that could still roll back.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import replace
from types import MappingProxyType

from node.errors import (BlobstoreError, BlobNotFound, ContainerExists, ContainerNotEmpty,
                         ContainerNotFound, InvalidRequest, PreconditionFailed, RequestTimeout,
                         Unavailable, UserExists, UserNotFound)
from node.meta import commands as c
from node.meta import dirty
from node.meta.dirty import DirtyKeys
from node.meta.manifest_cache import ManifestCache
from node.meta.records import Container, Manifest, User
from node.store.db import Connection, write_transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY, uid INTEGER NOT NULL UNIQUE, role TEXT NOT NULL,
    epoch INTEGER NOT NULL, password_hash TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS containers (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, owner_uid INTEGER NOT NULL,
    created_at TEXT NOT NULL, blob_count INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS grants (
    container TEXT NOT NULL, uid INTEGER NOT NULL, permission TEXT NOT NULL,
    PRIMARY KEY (container, uid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blobs (
    container TEXT NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL, etag TEXT NOT NULL,
    content_type TEXT NOT NULL, last_modified TEXT NOT NULL, chunk_size INTEGER NOT NULL,
    chunks BLOB NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (container, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inline_data (
    version INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS chunk_refs (
    chunk BLOB PRIMARY KEY, refs INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS condemned (
    chunk BLOB PRIMARY KEY, idx INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gc_marks (idx INTEGER PRIMARY KEY, at REAL NOT NULL);
"""

ViewOp = Callable[[], None]


class AuthView:
    """In-memory users, containers and grants; mutated only after a commit."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.users_by_uid: dict[int, User] = {}
        self.containers: dict[str, Container] = {}

    def drop_container(self, name: str) -> None:
        self.containers.pop(name, None)

    def put_user(self, user: User) -> None:
        self.users[user.username] = user
        self.users_by_uid[user.uid] = user

    def drop_user(self, user: User) -> None:
        self.users.pop(user.username, None)
        self.users_by_uid.pop(user.uid, None)
        for container in list(self.containers.values()):
            if user.uid in container.grants:
                grants = {k: v for k, v in container.grants.items() if k != user.uid}
                self.containers[container.name] = replace(
                    container, grants=MappingProxyType(grants))


def pack_chunks(chunks: tuple[str, ...]) -> bytes:
    return b"".join(bytes.fromhex(h) for h in chunks)


def unpack_chunks(packed: bytes) -> tuple[bytes, ...]:
    return tuple(packed[i:i + 32] for i in range(0, len(packed), 32))


def manifest_from_row(row: tuple) -> Manifest:
    container, name, size, etag, ctype, modified, chunk_size, chunks, version = row
    return Manifest(container, name, size, etag, ctype, modified, chunk_size,
                    unpack_chunks(chunks), version)


MANIFEST_COLUMNS = ("container, name, size, etag, content_type, last_modified, chunk_size, "
                    "chunks, version")


class MetaState:
    """The state machine over one sqlite database (writer side)."""

    def __init__(self, cache_bytes: int = 64 * 1024 * 1024) -> None:
        self.view = AuthView()
        #: Manifests as of the last commit, for reads after a barrier (written through).
        self.manifests = ManifestCache(cache_bytes)
        #: What the entries applied but not yet stable changed (``node.meta.dirty``).
        self.dirty = DirtyKeys()
        self.applied_index = 0
        self.signing_key: bytes | None = None
        self.cluster_id: str | None = None

    # -- start-up ---------------------------------------------------------------

    def load(self, conn: Connection) -> None:
        """Create the schema if needed and rebuild the in-memory view from sqlite (also after
        a snapshot replaced the database: the new view is swapped in whole, at the end)."""
        conn.executescript(SCHEMA)
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        view = AuthView()
        for row in conn.execute("SELECT username, uid, role, epoch, password_hash, created_at "
                                "FROM users"):
            view.put_user(User(*row))
        grants: dict[str, dict[int, str]] = {}
        for container, uid, permission in conn.execute("SELECT * FROM grants"):
            grants.setdefault(container, {})[uid] = permission
        for name, owner, owner_uid, created_at in conn.execute(
                "SELECT name, owner, owner_uid, created_at FROM containers"):
            view.containers[name] = Container(
                name, owner, owner_uid, created_at,
                MappingProxyType(grants.get(name, {})))  # type: ignore[arg-type]
        self.view = view
        self.manifests.clear()
        self.applied_index = int(meta.get("applied_index", 0))
        self.dirty.reset(self.applied_index)
        self.signing_key = bytes.fromhex(meta["signing_key"]) if "signing_key" in meta else None
        self.cluster_id = meta.get("cluster_id")

    # -- applying ---------------------------------------------------------------

    def apply_batch(self, conn: Connection,
                    entries: list[tuple[int, c.Command]]) -> list[object]:
        """Apply entries in one transaction; return one result (value or error) each."""
        if not entries:
            return []
        previous = self.applied_index
        for index, _ in entries:
            if index <= previous:
                raise ValueError(f"entry {index} does not follow entry {previous}")
            previous = index
        results: list[object] = []
        view_ops: list[ViewOp] = []
        with write_transaction(conn):
            for index, command in entries:
                conn.execute("SAVEPOINT cmd")
                try:
                    result = self._apply_one(conn, index, command, view_ops)
                except BlobstoreError as exc:
                    conn.execute("ROLLBACK TO cmd")
                    result = exc
                except (ValueError, TypeError) as exc:
                    # A malformed command is refused the same way on every node.
                    conn.execute("ROLLBACK TO cmd")
                    result = InvalidRequest(f"malformed {command.kind} command: {exc}")
                conn.execute("RELEASE cmd")
                results.append(result)
            last = entries[-1][0]
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('applied_index', ?)", (str(last),))
        self.applied_index = entries[-1][0]
        for op in view_ops:
            op()
        return results

    def _apply_one(self, conn: Connection, index: int, cmd: c.Command,
                   ops: list[ViewOp]) -> object:
        # Marked before the commit, so no read sees the change unmarked (a rollback only
        # leaves a mark that becomes stable with its index).
        self.dirty.mark(changed_keys(cmd), index)
        handler = getattr(self, "_apply_" + cmd.kind)
        return handler(conn, index, cmd, ops)

    def _apply_bootstrap(self, conn: Connection, index: int, cmd: c.Bootstrap,
                         ops: list[ViewOp]) -> object:
        if conn.execute("SELECT 1 FROM meta WHERE key = 'signing_key'").fetchone():
            return None
        conn.execute("INSERT INTO meta VALUES ('signing_key', ?)", (cmd.signing_key_hex,))
        conn.execute("INSERT INTO meta VALUES ('cluster_id', ?)", (cmd.cluster_id,))
        admin = User("admin", index, "admin", 0, cmd.admin_password_hash, cmd.now)
        self._insert_user(conn, admin)

        def op() -> None:
            self.signing_key = bytes.fromhex(cmd.signing_key_hex)
            self.cluster_id = cmd.cluster_id
            self.view.put_user(admin)
        ops.append(op)
        return admin

    def _insert_user(self, conn: Connection, user: User) -> None:
        conn.execute("INSERT INTO users VALUES (?, ?, ?, ?, ?, ?)",
                     (user.username, user.uid, user.role, user.epoch, user.password_hash,
                      user.created_at))

    def _user(self, conn: Connection, username: str) -> User | None:
        row = conn.execute("SELECT username, uid, role, epoch, password_hash, created_at "
                           "FROM users WHERE username = ?", (username,)).fetchone()
        return User(*row) if row else None

    def _apply_create_user(self, conn: Connection, index: int, cmd: c.CreateUser,
                           ops: list[ViewOp]) -> object:
        if self._user(conn, cmd.username) is not None:
            raise UserExists(f"user {cmd.username!r} already exists")
        user = User(cmd.username, index, cmd.role, 0, cmd.password_hash, cmd.now)
        self._insert_user(conn, user)
        ops.append(lambda: self.view.put_user(user))
        return user

    def _apply_delete_user(self, conn: Connection, index: int, cmd: c.DeleteUser,
                           ops: list[ViewOp]) -> object:
        user = self._user(conn, cmd.username)
        if user is None:
            raise UserNotFound(f"user {cmd.username!r} does not exist")
        if user.username == "admin":
            raise InvalidRequest("the built-in admin cannot be deleted")
        conn.execute("DELETE FROM users WHERE username = ?", (cmd.username,))
        conn.execute("DELETE FROM grants WHERE uid = ?", (user.uid,))
        ops.append(lambda: self.view.drop_user(user))
        return None

    def _bump_epoch(self, conn: Connection, username: str, uid: int,
                    password_hash: str | None, ops: list[ViewOp]) -> User:
        user = self._user(conn, username)
        if user is None or user.uid != uid:
            raise UserNotFound(f"user {username!r} does not exist")
        updated = replace(user, epoch=user.epoch + 1,
                          password_hash=password_hash or user.password_hash)
        conn.execute("UPDATE users SET epoch = ?, password_hash = ? WHERE username = ?",
                     (updated.epoch, updated.password_hash, username))
        ops.append(lambda: self.view.put_user(updated))
        return updated

    def _apply_logout(self, conn: Connection, index: int, cmd: c.Logout,
                      ops: list[ViewOp]) -> object:
        return self._bump_epoch(conn, cmd.username, cmd.uid, None, ops)

    def _apply_set_password(self, conn: Connection, index: int, cmd: c.SetPassword,
                            ops: list[ViewOp]) -> object:
        return self._bump_epoch(conn, cmd.username, cmd.uid, cmd.password_hash, ops)

    def _container(self, conn: Connection, name: str) -> tuple | None:
        return conn.execute("SELECT name, owner, owner_uid, created_at, blob_count "
                            "FROM containers WHERE name = ?", (name,)).fetchone()

    def _apply_create_container(self, conn: Connection, index: int, cmd: c.CreateContainer,
                                ops: list[ViewOp]) -> object:
        if self._container(conn, cmd.container) is not None:
            raise ContainerExists(f"container {cmd.container!r} already exists")
        conn.execute("INSERT INTO containers (name, owner, owner_uid, created_at) "
                     "VALUES (?, ?, ?, ?)", (cmd.container, cmd.owner, cmd.owner_uid, cmd.now))
        record = Container(cmd.container, cmd.owner, cmd.owner_uid, cmd.now)
        ops.append(lambda: self.view.containers.__setitem__(cmd.container, record))
        return record

    def _apply_delete_container(self, conn: Connection, index: int, cmd: c.DeleteContainer,
                                ops: list[ViewOp]) -> object:
        row = self._container(conn, cmd.container)
        if row is None:
            raise ContainerNotFound(f"container {cmd.container!r} does not exist")
        if row[4] > 0:
            raise ContainerNotEmpty(f"container {cmd.container!r} is not empty")
        conn.execute("DELETE FROM containers WHERE name = ?", (cmd.container,))
        conn.execute("DELETE FROM grants WHERE container = ?", (cmd.container,))
        ops.append(lambda: self.view.drop_container(cmd.container))
        return None

    def _set_grant(self, conn: Connection, container: str, username: str,
                   permission: str | None, ops: list[ViewOp]) -> None:
        if self._container(conn, container) is None:
            raise ContainerNotFound(f"container {container!r} does not exist")
        user = self._user(conn, username)
        if user is None:
            raise UserNotFound(f"user {username!r} does not exist")
        if permission is None:
            conn.execute("DELETE FROM grants WHERE container = ? AND uid = ?",
                         (container, user.uid))
        else:
            conn.execute("INSERT OR REPLACE INTO grants VALUES (?, ?, ?)",
                         (container, user.uid, permission))

        def op() -> None:
            record = self.view.containers[container]
            grants = dict(record.grants)
            if permission is None:
                grants.pop(user.uid, None)
            else:
                grants[user.uid] = permission  # type: ignore[assignment]
            self.view.containers[container] = replace(record, grants=MappingProxyType(grants))
        ops.append(op)

    def _apply_grant(self, conn: Connection, index: int, cmd: c.Grant,
                     ops: list[ViewOp]) -> object:
        self._set_grant(conn, cmd.container, cmd.username, cmd.permission, ops)
        return None

    def _apply_revoke(self, conn: Connection, index: int, cmd: c.Revoke,
                      ops: list[ViewOp]) -> object:
        self._set_grant(conn, cmd.container, cmd.username, None, ops)
        return None

    # -- blobs ------------------------------------------------------------------

    def _manifest(self, conn: Connection, container: str, blob: str) -> Manifest | None:
        row = conn.execute(f"SELECT {MANIFEST_COLUMNS} FROM blobs "
                           "WHERE container = ? AND name = ?", (container, blob)).fetchone()
        return manifest_from_row(row) if row else None

    def _adjust_refs(self, conn: Connection, chunks: tuple[bytes, ...], delta: int) -> None:
        for chunk in chunks:
            conn.execute("INSERT INTO chunk_refs VALUES (?, ?) ON CONFLICT(chunk) "
                         "DO UPDATE SET refs = refs + excluded.refs", (chunk, delta))
        if delta < 0:
            conn.execute("DELETE FROM chunk_refs WHERE refs <= 0")

    def _forget_contents(self, conn: Connection, old: Manifest) -> None:
        """An overwritten or deleted blob's bytes: its chunks lose a reference (the
        collector reclaims them), its inline data goes now."""
        if is_inline(old):
            conn.execute("DELETE FROM inline_data WHERE version = ?", (old.version,))
        else:
            self._adjust_refs(conn, old.chunks, -1)

    def _apply_put_blob(self, conn: Connection, index: int, cmd: c.PutBlob,
                        ops: list[ViewOp]) -> object:
        if self._container(conn, cmd.container) is None:
            raise ContainerNotFound(f"container {cmd.container!r} does not exist")
        self._check_not_condemned(conn, cmd.since, cmd.chunks)
        old = self._manifest(conn, cmd.container, cmd.blob)
        check_put_conditions(old, cmd.if_match, cmd.if_none_match_any)
        manifest = Manifest(cmd.container, cmd.blob, cmd.size, cmd.etag, cmd.content_type,
                            cmd.now, cmd.chunk_size,
                            tuple(bytes.fromhex(h) for h in cmd.chunks), index)
        data = None
        if cmd.inline is not None:
            data = base64.b64decode(cmd.inline, validate=True)
            if len(data) != cmd.size or cmd.chunks:
                raise ValueError("inline data must be the whole blob, without chunks")
            conn.execute("INSERT INTO inline_data VALUES (?, ?)", (index, data))
        conn.execute("INSERT OR REPLACE INTO blobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (cmd.container, cmd.blob, cmd.size, cmd.etag, cmd.content_type, cmd.now,
                      cmd.chunk_size, pack_chunks(cmd.chunks), index))
        self._adjust_refs(conn, manifest.chunks, +1)
        count_delta, bytes_delta = 1, cmd.size
        if old is not None:
            self._forget_contents(conn, old)
            count_delta, bytes_delta = 0, cmd.size - old.size
        conn.execute("UPDATE containers SET blob_count = blob_count + ?, bytes = bytes + ? "
                     "WHERE name = ?", (count_delta, bytes_delta, cmd.container))
        ops.append(lambda: self.manifests.changed((cmd.container, cmd.blob), (manifest, data)))
        return manifest

    def _check_not_condemned(self, conn: Connection, since: int,
                             chunks: tuple[str, ...]) -> None:
        """Refuse a manifest whose upload began before the collector condemned one of its
        chunks: some copy the upload wrote may be gone (the uploader's hold lapsed)."""
        floor = conn.execute("SELECT value FROM meta WHERE key = 'gc_floor'").fetchone()
        if floor is not None and since < int(floor[0]):
            raise RequestTimeout("the upload ran longer than the collector waits for uploads "
                                 "(upload_max_s); retry it")
        if conn.execute("SELECT 1 FROM condemned LIMIT 1").fetchone() is None:
            return
        for chunk in chunks:
            row = conn.execute("SELECT idx FROM condemned WHERE chunk = ?",
                               (bytes.fromhex(chunk),)).fetchone()
            if row is not None and row[0] > since:
                raise Unavailable("the collector reclaimed chunks of this upload while it ran "
                                  "(its uploader went quiet); retry it")

    def _apply_condemn_chunks(self, conn: Connection, index: int, cmd: c.CondemnChunks,
                              ops: list[ViewOp]) -> object:
        condemned: list[str] = []
        for chunk_hex in cmd.chunks:
            chunk = bytes.fromhex(chunk_hex)
            if len(chunk) != 32:
                raise ValueError("a chunk id is 32 bytes")
            if conn.execute("SELECT 1 FROM chunk_refs WHERE chunk = ?", (chunk,)).fetchone():
                continue
            conn.execute("INSERT OR REPLACE INTO condemned VALUES (?, ?)", (chunk, index))
            condemned.append(chunk_hex)
        if condemned:
            conn.execute("INSERT INTO gc_marks VALUES (?, ?)", (index, cmd.now))
        self._advance_gc_floor(conn, cmd.now - cmd.horizon_s)
        return tuple(condemned)

    def _advance_gc_floor(self, conn: Connection, before: float) -> None:
        """Forget condemnations made before ``before``; uploads older than them are refused."""
        row = conn.execute("SELECT max(idx) FROM gc_marks WHERE at <= ?", (before,)).fetchone()
        if row[0] is None:
            return
        floor = row[0]
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('gc_floor', ?)", (str(floor),))
        conn.execute("DELETE FROM condemned WHERE idx <= ?", (floor,))
        conn.execute("DELETE FROM gc_marks WHERE idx <= ?", (floor,))

    def _apply_delete_blob(self, conn: Connection, index: int, cmd: c.DeleteBlob,
                           ops: list[ViewOp]) -> object:
        old = self._manifest(conn, cmd.container, cmd.blob)
        if old is None:
            if self._container(conn, cmd.container) is None:
                raise ContainerNotFound(f"container {cmd.container!r} does not exist")
            raise BlobNotFound(f"blob {cmd.blob!r} does not exist")
        conn.execute("DELETE FROM blobs WHERE container = ? AND name = ?",
                     (cmd.container, cmd.blob))
        self._forget_contents(conn, old)
        conn.execute("UPDATE containers SET blob_count = blob_count - 1, bytes = bytes - ? "
                     "WHERE name = ?", (old.size, cmd.container))
        ops.append(lambda: self.manifests.changed((cmd.container, cmd.blob), (None, None)))
        return None


def changed_keys(cmd: c.Command) -> list[dirty.Key]:
    """What applying ``cmd`` may change, as reads name it (``node.meta.dirty``)."""
    if isinstance(cmd, (c.PutBlob, c.DeleteBlob)):
        return [dirty.blob(cmd.container, cmd.blob), dirty.listing(cmd.container),
                dirty.CONTAINERS]
    if isinstance(cmd, (c.CreateContainer, c.DeleteContainer)):
        return [dirty.container(cmd.container), dirty.listing(cmd.container),
                dirty.CONTAINERS]
    if isinstance(cmd, (c.Grant, c.Revoke)):
        return [dirty.container(cmd.container), dirty.CONTAINERS]
    if isinstance(cmd, c.CondemnChunks):
        return []
    return [dirty.USERS]  # bootstrap and every change to users (and so their grants)


def is_inline(manifest: Manifest) -> bool:
    """Whether the blob's bytes live in ``inline_data`` (it has bytes but no chunks)."""
    return manifest.size > 0 and not manifest.chunks


def check_put_conditions(current: Manifest | None, if_match: tuple[str, ...] | None,
                         if_none_match_any: bool) -> None:
    """Raise PreconditionFailed unless the conditions of a PUT hold for ``current``."""
    if if_none_match_any and current is not None:
        raise PreconditionFailed("the blob exists (If-None-Match: *)")
    if if_match is not None:
        if current is None:
            raise PreconditionFailed("the blob does not exist (If-Match)")
        if "*" not in if_match and current.etag not in if_match:  # strong: W/ tags never match
            raise PreconditionFailed("the blob's ETag does not match (If-Match)")
