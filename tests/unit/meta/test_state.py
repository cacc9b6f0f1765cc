"""The metadata state machine on a real sqlite file: effects, domain errors, recovery."""

from __future__ import annotations

import base64
import dataclasses
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.errors import (BlobNotFound, BlobstoreError, ContainerExists, ContainerNotEmpty,
                         ContainerNotFound, InvalidRequest, PreconditionFailed, RequestTimeout,
                         Unavailable, UserExists, UserNotFound)
from node.meta import commands as c
from node.meta.queries import container_stats, get_blob, get_manifest, unreferenced
from node.meta.records import Container, Manifest, User
from node.meta.state import MetaState, is_inline, unpack_chunks
from node.store.db import Connection, Database

T = "2026-01-01T00:00:00.000Z"
KEY_HEX = "5a" * 32


def chunk(n: int) -> str:
    return f"{n:064x}"


def raw(n: int) -> bytes:
    return bytes.fromhex(chunk(n))


def bootstrap(password_hash: str = "admin-hash") -> c.Bootstrap:
    return c.Bootstrap(cluster_id="cluster-1", signing_key_hex=KEY_HEX,
                       admin_password_hash=password_hash, now=T)


def put(container: str, blob: str, chunks: list[int], size: int | None = None,
        etag: str = "etag", **kw: object) -> c.PutBlob:
    return c.PutBlob(container=container, blob=blob,
                     size=len(chunks) * 4 if size is None else size, etag=etag,
                     content_type="application/octet-stream", now=T, chunk_size=4,
                     chunks=tuple(chunk(n) for n in chunks), **kw)  # type: ignore[arg-type]


class Meta:
    """A MetaState over one Database, applying commands with consecutive indexes."""

    def __init__(self, path: Path) -> None:
        self.db = Database(path)
        self.state = MetaState()
        self.db.write_sync(self.state.load)

    async def apply(self, *commands: c.Command) -> list[object]:
        base = self.state.applied_index
        entries = [(base + i + 1, cmd) for i, cmd in enumerate(commands)]
        return await self.db.write(lambda conn: self.state.apply_batch(conn, entries))

    async def one(self, command: c.Command) -> object:
        (result,) = await self.apply(command)
        return result

    async def unreferenced(self, chunks: list[int]) -> list[int]:
        found = await self.db.read(lambda conn: unreferenced(conn, [raw(n) for n in chunks]))
        return [int.from_bytes(d, "big") for d in found]

    async def stats(self, name: str) -> tuple[int, int]:
        (row,) = await self.db.read(lambda conn: container_stats(conn, [name]))
        return row.blob_count, row.bytes

    async def manifest(self, container: str, blob: str) -> Manifest | None:
        return await self.db.read(lambda conn: get_manifest(conn, container, blob))

    async def dump(self) -> dict[str, list[tuple]]:
        return await self.db.read(dump_tables)


def dump_tables(conn: Connection) -> dict[str, list[tuple]]:
    tables = [name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {name: sorted(conn.execute(f"SELECT * FROM {name}").fetchall(), key=repr)
            for name in tables}


@pytest.fixture
def meta(tmp_path: Path) -> Iterator[Meta]:
    m = Meta(tmp_path / "m.db")
    yield m
    m.db.close()


@pytest.fixture
async def ready(meta: Meta) -> Meta:
    """Bootstrapped (admin uid 1), users alice (2) and bob (3), container 'c' owned by alice."""
    await meta.apply(bootstrap(),
                     c.CreateUser(username="alice", role="user", password_hash="ha", now=T),
                     c.CreateUser(username="bob", role="user", password_hash="hb", now=T),
                     c.CreateContainer(container="c", owner="alice", owner_uid=2, now=T))
    return meta


def view_snapshot(state: MetaState) -> tuple:
    users = dict(state.view.users)
    by_uid = dict(state.view.users_by_uid)
    containers = {name: (rec.name, rec.owner, rec.owner_uid, rec.created_at, dict(rec.grants))
                  for name, rec in state.view.containers.items()}
    return users, by_uid, containers, state.signing_key, state.cluster_id, state.applied_index


def reloaded(path: Path) -> MetaState:
    db = Database(path)
    try:
        state = MetaState()
        db.write_sync(state.load)
        return state
    finally:
        db.close()


# -- users ---------------------------------------------------------------------------------


async def test_fresh_state_is_empty(meta: Meta) -> None:
    assert meta.state.applied_index == 0
    assert meta.state.signing_key is None and meta.state.cluster_id is None
    assert meta.state.view.users == {} and meta.state.view.containers == {}


async def test_bootstrap_creates_admin_and_key(meta: Meta) -> None:
    (admin,) = await meta.apply(bootstrap())
    assert admin == User("admin", 1, "admin", 0, "admin-hash", T)
    assert admin.is_admin
    assert meta.state.signing_key == bytes.fromhex(KEY_HEX)
    assert meta.state.cluster_id == "cluster-1"
    assert meta.state.view.users == {"admin": admin}
    assert meta.state.view.users_by_uid == {1: admin}


async def test_second_bootstrap_is_a_no_op(meta: Meta) -> None:
    await meta.apply(bootstrap())
    before = await meta.dump()
    view_before = view_snapshot(meta.state)
    second = c.Bootstrap(cluster_id="other", signing_key_hex="77" * 32,
                         admin_password_hash="other-hash", now="later")
    assert await meta.apply(second) == [None]
    after = await meta.dump()
    assert after.pop("meta") != before.pop("meta")  # only applied_index moved
    assert after == before
    assert dict(r for r in (await meta.dump())["meta"]) == {
        "applied_index": "2", "signing_key": KEY_HEX, "cluster_id": "cluster-1"}
    assert view_snapshot(meta.state)[:5] == view_before[:5]
    assert meta.state.signing_key == bytes.fromhex(KEY_HEX)


async def test_create_user_and_duplicate(meta: Meta) -> None:
    results = await meta.apply(
        bootstrap(),
        c.CreateUser(username="alice", role="user", password_hash="ha", now=T),
        c.CreateUser(username="alice", role="admin", password_hash="other", now=T))
    alice = User("alice", 2, "user", 0, "ha", T)
    assert results[1] == alice
    assert isinstance(results[2], UserExists)
    assert meta.state.view.users["alice"] == alice
    assert meta.state.view.users_by_uid[2] == alice
    assert 3 not in meta.state.view.users_by_uid


async def test_create_user_uid_is_the_log_index(ready: Meta) -> None:
    user = await ready.one(c.CreateUser(username="carol", role="admin", password_hash="h",
                                        now=T))
    assert isinstance(user, User)
    assert user.uid == ready.state.applied_index == 5
    assert user.is_admin


async def test_delete_user(ready: Meta) -> None:
    assert await ready.one(c.DeleteUser(username="bob")) is None
    assert "bob" not in ready.state.view.users
    assert 3 not in ready.state.view.users_by_uid
    assert isinstance(await ready.one(c.DeleteUser(username="bob")), UserNotFound)
    assert isinstance(await ready.one(c.DeleteUser(username="nobody")), UserNotFound)


async def test_builtin_admin_cannot_be_deleted(ready: Meta) -> None:
    result = await ready.one(c.DeleteUser(username="admin"))
    assert type(result) is InvalidRequest
    assert "admin" in ready.state.view.users


async def test_recreated_user_gets_a_new_uid(ready: Meta) -> None:
    await ready.one(c.DeleteUser(username="bob"))
    bob = await ready.one(c.CreateUser(username="bob", role="user", password_hash="x", now=T))
    assert isinstance(bob, User) and bob.uid == 6
    assert ready.state.view.users_by_uid[6] == bob
    assert 3 not in ready.state.view.users_by_uid


async def test_logout_bumps_epoch(ready: Meta) -> None:
    updated = await ready.one(c.Logout(username="alice", uid=2))
    assert updated == User("alice", 2, "user", 1, "ha", T)
    again = await ready.one(c.Logout(username="alice", uid=2))
    assert isinstance(again, User) and again.epoch == 2
    assert ready.state.view.users["alice"].epoch == 2
    assert ready.state.view.users_by_uid[2].epoch == 2


async def test_logout_checks_uid_and_existence(ready: Meta) -> None:
    assert isinstance(await ready.one(c.Logout(username="alice", uid=3)), UserNotFound)
    assert isinstance(await ready.one(c.Logout(username="ghost", uid=2)), UserNotFound)
    assert ready.state.view.users["alice"].epoch == 0


async def test_set_password(ready: Meta) -> None:
    updated = await ready.one(c.SetPassword(username="bob", uid=3, password_hash="new"))
    assert updated == User("bob", 3, "user", 1, "new", T)
    assert ready.state.view.users["bob"] == updated
    assert ready.state.view.users_by_uid[3] == updated
    wrong = await ready.one(c.SetPassword(username="bob", uid=2, password_hash="evil"))
    assert isinstance(wrong, UserNotFound)
    assert ready.state.view.users["bob"].password_hash == "new"


# -- containers and grants -----------------------------------------------------------------


async def test_create_container_and_duplicate(ready: Meta) -> None:
    record = await ready.one(c.CreateContainer(container="d", owner="bob", owner_uid=3, now=T))
    assert record == Container("d", "bob", 3, T)
    assert ready.state.view.containers["d"] == record
    dup = await ready.one(c.CreateContainer(container="d", owner="alice", owner_uid=2, now=T))
    assert isinstance(dup, ContainerExists)
    assert ready.state.view.containers["d"].owner == "bob"
    assert await ready.stats("d") == (0, 0)


async def test_delete_container(ready: Meta) -> None:
    assert isinstance(await ready.one(c.DeleteContainer(container="zz")), ContainerNotFound)
    await ready.one(put("c", "x", [1]))
    assert isinstance(await ready.one(c.DeleteContainer(container="c")), ContainerNotEmpty)
    assert "c" in ready.state.view.containers
    await ready.one(c.DeleteBlob(container="c", blob="x"))
    assert await ready.one(c.DeleteContainer(container="c")) is None
    assert "c" not in ready.state.view.containers
    assert (await ready.dump())["containers"] == []


async def test_grant_and_revoke(ready: Meta) -> None:
    assert await ready.one(c.Grant(container="c", username="bob", permission="read")) is None
    assert dict(ready.state.view.containers["c"].grants) == {3: "read"}
    await ready.one(c.Grant(container="c", username="bob", permission="write"))
    assert dict(ready.state.view.containers["c"].grants) == {3: "write"}
    assert (await ready.dump())["grants"] == [("c", 3, "write")]
    assert await ready.one(c.Revoke(container="c", username="bob")) is None
    assert dict(ready.state.view.containers["c"].grants) == {}
    assert (await ready.dump())["grants"] == []
    # Revoking what was never granted is fine.
    assert await ready.one(c.Revoke(container="c", username="alice")) is None


async def test_grant_errors(ready: Meta) -> None:
    results = await ready.apply(
        c.Grant(container="nope", username="bob", permission="read"),
        c.Grant(container="c", username="ghost", permission="read"),
        c.Revoke(container="nope", username="bob"),
        c.Revoke(container="c", username="ghost"))
    assert [type(r) for r in results] == [ContainerNotFound, UserNotFound,
                                          ContainerNotFound, UserNotFound]
    assert dict(ready.state.view.containers["c"].grants) == {}


async def test_grants_record_is_immutable(ready: Meta) -> None:
    await ready.one(c.Grant(container="c", username="bob", permission="read"))
    grants = ready.state.view.containers["c"].grants
    with pytest.raises(TypeError):
        grants[2] = "write"  # type: ignore[index]


async def test_deleting_a_user_drops_their_grants(ready: Meta) -> None:
    await ready.apply(
        c.CreateContainer(container="d", owner="alice", owner_uid=2, now=T),
        c.Grant(container="c", username="bob", permission="read"),
        c.Grant(container="d", username="bob", permission="write"),
        c.Grant(container="d", username="alice", permission="read"))
    await ready.one(c.DeleteUser(username="bob"))
    assert dict(ready.state.view.containers["c"].grants) == {}
    assert dict(ready.state.view.containers["d"].grants) == {2: "read"}
    assert (await ready.dump())["grants"] == [("d", 2, "read")]
    # A namesake created later does not inherit the grants.
    await ready.one(c.CreateUser(username="bob", role="user", password_hash="h", now=T))
    assert dict(ready.state.view.containers["c"].grants) == {}
    assert view_snapshot(reloaded(ready.db.path))[:3] == view_snapshot(ready.state)[:3]


async def test_deleting_a_container_drops_its_grants(ready: Meta) -> None:
    await ready.apply(c.Grant(container="c", username="bob", permission="read"),
                      c.DeleteContainer(container="c"),
                      c.CreateContainer(container="c", owner="bob", owner_uid=3, now=T))
    assert dict(ready.state.view.containers["c"].grants) == {}
    assert (await ready.dump())["grants"] == []


# -- blobs ---------------------------------------------------------------------------------


async def test_put_blob_result_and_manifest(ready: Meta) -> None:
    command = put("c", "a/b", [1, 2], size=7, etag="abc")
    manifest = await ready.one(command)
    assert manifest == Manifest("c", "a/b", 7, "abc", "application/octet-stream", T, 4,
                                (raw(1), raw(2)), 5)
    assert await ready.manifest("c", "a/b") == manifest
    assert await ready.stats("c") == (1, 7)


async def test_put_blob_into_missing_container(ready: Meta) -> None:
    assert isinstance(await ready.one(put("nope", "x", [1])), ContainerNotFound)
    assert await ready.unreferenced([1]) == [1]


async def test_delete_blob_errors(ready: Meta) -> None:
    assert isinstance(await ready.one(c.DeleteBlob(container="c", blob="x")), BlobNotFound)
    assert isinstance(await ready.one(c.DeleteBlob(container="no", blob="x")),
                      ContainerNotFound)


async def test_if_none_match_any(ready: Meta) -> None:
    first = await ready.one(put("c", "x", [1], etag="e1", if_none_match_any=True))
    assert isinstance(first, Manifest)
    second = await ready.one(put("c", "x", [2], etag="e2", if_none_match_any=True))
    assert isinstance(second, PreconditionFailed)
    current = await ready.manifest("c", "x")
    assert current is not None and current.etag == "e1"
    assert await ready.unreferenced([1, 2]) == [2]
    assert await ready.stats("c") == (1, 4)


async def test_if_match(ready: Meta) -> None:
    missing = await ready.one(put("c", "x", [1], if_match=("*",)))
    assert isinstance(missing, PreconditionFailed)
    assert await ready.manifest("c", "x") is None
    await ready.one(put("c", "x", [1], etag="e1"))
    wrong = await ready.one(put("c", "x", [2], etag="e2", if_match=("e0", "e9")))
    assert isinstance(wrong, PreconditionFailed)
    right = await ready.one(put("c", "x", [2], etag="e2", if_match=("e0", "e1")))
    assert isinstance(right, Manifest) and right.etag == "e2"
    star = await ready.one(put("c", "x", [3], etag="e3", if_match=("*",)))
    assert isinstance(star, Manifest) and star.etag == "e3"
    assert await ready.unreferenced([1, 2, 3]) == [1, 2]
    assert await ready.stats("c") == (1, 4)


async def test_both_conditions(ready: Meta) -> None:
    # If-None-Match: * with If-Match can never both hold.
    assert isinstance(await ready.one(put("c", "x", [1], if_match=("*",),
                                          if_none_match_any=True)), PreconditionFailed)
    await ready.one(put("c", "x", [1], etag="e1"))
    assert isinstance(await ready.one(put("c", "x", [1], if_match=("e1",),
                                          if_none_match_any=True)), PreconditionFailed)


async def test_container_counters_through_put_overwrite_delete(ready: Meta) -> None:
    await ready.one(put("c", "a", [1], size=3))
    assert await ready.stats("c") == (1, 3)
    await ready.one(put("c", "b", [2, 3], size=8))
    assert await ready.stats("c") == (2, 11)
    await ready.one(put("c", "a", [4, 5, 6], size=10))  # overwrite
    assert await ready.stats("c") == (2, 18)
    await ready.one(put("c", "a", [], size=0))  # overwrite with an empty blob
    assert await ready.stats("c") == (2, 8)
    await ready.one(c.DeleteBlob(container="c", blob="b"))
    assert await ready.stats("c") == (1, 0)
    await ready.one(c.DeleteBlob(container="c", blob="a"))
    assert await ready.stats("c") == (0, 0)


async def test_chunk_refs_shared_between_blobs(ready: Meta) -> None:
    await ready.one(put("c", "a", [1, 2]))
    await ready.one(put("c", "b", [2, 3]))
    assert await ready.unreferenced([1, 2, 3, 4]) == [4]
    await ready.one(put("c", "a", [5]))  # overwrite: 1 goes, 2 is still in b
    assert await ready.unreferenced([1, 2, 3, 4, 5]) == [1, 4]
    await ready.one(c.DeleteBlob(container="c", blob="b"))
    assert await ready.unreferenced([1, 2, 3, 5]) == [1, 2, 3]
    await ready.one(c.DeleteBlob(container="c", blob="a"))
    assert await ready.unreferenced([5]) == [5]
    assert (await ready.dump())["chunk_refs"] == []


async def test_chunk_refs_across_containers_and_repeats(ready: Meta) -> None:
    await ready.one(c.CreateContainer(container="d", owner="bob", owner_uid=3, now=T))
    await ready.one(put("c", "a", [7, 7, 7]))  # a blob of identical chunks
    await ready.one(put("d", "a", [7]))
    await ready.one(put("c", "a", [7]))  # overwrite keeps 7 referenced
    assert await ready.unreferenced([7]) == []
    await ready.one(c.DeleteBlob(container="c", blob="a"))
    assert await ready.unreferenced([7]) == []
    await ready.one(c.DeleteBlob(container="d", blob="a"))
    assert await ready.unreferenced([7]) == [7]


async def test_overwrite_with_same_chunks_keeps_them(ready: Meta) -> None:
    await ready.one(put("c", "a", [1, 2]))
    await ready.one(put("c", "a", [1, 2]))
    assert await ready.unreferenced([1, 2]) == []
    assert sorted((await ready.dump())["chunk_refs"]) == [(raw(1), 1), (raw(2), 1)]


def inline_put(blob: str, data: bytes, **kw: object) -> c.PutBlob:
    return c.PutBlob(container="c", blob=blob, size=len(data), etag="etag",
                     content_type="text/plain", now=T, chunk_size=4, chunks=(),
                     inline=base64.b64encode(data).decode(), **kw)  # type: ignore[arg-type]


async def blob_of(meta: Meta, blob: str) -> tuple[Manifest | None, bytes | None]:
    return await meta.db.read(lambda conn: get_blob(conn, "c", blob))


async def inline_rows(meta: Meta) -> list[tuple]:
    return (await meta.dump())["inline_data"]


async def test_an_inline_blob_keeps_its_bytes_beside_its_manifest(ready: Meta) -> None:
    manifest = await ready.one(inline_put("small", b"hello"))
    assert isinstance(manifest, Manifest) and manifest.chunks == () and is_inline(manifest)
    assert await blob_of(ready, "small") == (manifest, b"hello")
    assert await ready.stats("c") == (1, 5)
    assert await ready.unreferenced([]) == []


async def test_overwriting_or_deleting_an_inline_blob_drops_its_bytes(ready: Meta) -> None:
    await ready.one(inline_put("x", b"one"))
    second = await ready.one(inline_put("x", b"two!"))
    assert isinstance(second, Manifest)
    assert await inline_rows(ready) == [(second.version, b"two!")]
    chunked = await ready.one(put("c", "x", [7]))
    assert isinstance(chunked, Manifest) and not is_inline(chunked)
    assert await inline_rows(ready) == [] and await blob_of(ready, "x") == (chunked, None)
    await ready.one(inline_put("x", b"three"))
    assert await ready.unreferenced([7]) == [7]  # the chunked version's chunk is free again
    assert await ready.one(c.DeleteBlob(container="c", blob="x")) is None
    assert await inline_rows(ready) == [] and await ready.stats("c") == (0, 0)


async def test_inline_data_must_be_the_whole_blob(ready: Meta) -> None:
    bad = dataclasses.replace(inline_put("x", b"abc"), size=4)
    assert isinstance(await ready.one(bad), InvalidRequest)
    with_chunks = dataclasses.replace(inline_put("x", b"abc"), chunks=(chunk(1),))
    assert isinstance(await ready.one(with_chunks), InvalidRequest)
    assert await inline_rows(ready) == [] and await blob_of(ready, "x") == (None, None)


async def test_a_refused_inline_put_stores_nothing(ready: Meta) -> None:
    await ready.one(inline_put("x", b"abc"))
    refused = await ready.one(inline_put("x", b"abcd", if_none_match_any=True))
    assert isinstance(refused, PreconditionFailed)
    assert [row[1] for row in await inline_rows(ready)] == [b"abc"]


async def test_manifest_version_is_the_index(ready: Meta) -> None:
    first = await ready.one(put("c", "a", [1]))
    second = await ready.one(put("c", "a", [1]))
    assert isinstance(first, Manifest) and isinstance(second, Manifest)
    assert (first.version, second.version) == (5, 6)


# -- the collector's condemnations ---------------------------------------------------------

DAY = 86400.0


def condemn(chunks: list[int], now: float = 1000.0, horizon_s: float = DAY) -> c.CondemnChunks:
    return c.CondemnChunks(chunks=tuple(chunk(n) for n in chunks), now=now, horizon_s=horizon_s)


async def test_condemn_takes_only_unreferenced_chunks(ready: Meta) -> None:
    await ready.one(put("c", "a", [1, 2]))
    assert await ready.one(condemn([1, 3, 4])) == (chunk(3), chunk(4))
    tables = await ready.dump()
    assert sorted(tables["condemned"]) == [(raw(3), 6), (raw(4), 6)]
    assert await ready.one(condemn([1, 2])) == ()


async def test_commit_racing_the_collector_is_refused(ready: Meta) -> None:
    """An upload noted index 4 and wrote chunk 7; the collector condemned it (index 5)
    because its hold had lapsed; the copy may be gone, so the manifest must not commit."""
    since = ready.state.applied_index
    assert await ready.one(condemn([7])) == (chunk(7),)
    refused = await ready.one(put("c", "late", [1, 7], since=since))
    assert isinstance(refused, Unavailable)
    assert await ready.unreferenced([1, 7]) == [1, 7], "nothing of it was applied"
    # An upload that began after the condemnation wrote its copies after it: accepted.
    accepted = await ready.one(put("c", "late", [1, 7], since=ready.state.applied_index))
    assert isinstance(accepted, Manifest)
    assert await ready.one(condemn([7])) == (), "referenced now"


async def test_a_commit_before_the_condemnation_wins(ready: Meta) -> None:
    since = ready.state.applied_index
    assert isinstance(await ready.one(put("c", "a", [7], since=since)), Manifest)
    assert await ready.one(condemn([7])) == ()
    assert await ready.unreferenced([7]) == []


async def test_condemnations_older_than_the_horizon_are_forgotten(ready: Meta) -> None:
    old_upload = ready.state.applied_index
    await ready.one(condemn([7], now=1000.0))
    await ready.one(condemn([8], now=1000.0 + DAY / 2))
    mark = ready.state.applied_index
    await ready.one(condemn([], now=1000.0 + DAY + 1))  # the first mark is a day old now
    tables = await ready.dump()
    assert [row[0] for row in tables["condemned"]] == [raw(8)]
    # An upload older than the forgotten condemnation is refused outright ...
    refused = await ready.one(put("c", "a", [9], since=old_upload))
    assert isinstance(refused, RequestTimeout)
    # ... one that began after it is judged by the condemnations that are left.
    assert isinstance(await ready.one(put("c", "a", [8], since=mark - 1)), Unavailable)
    assert isinstance(await ready.one(put("c", "a", [8, 7], since=mark)), Manifest)


async def test_malformed_condemnation_is_refused_whole(ready: Meta) -> None:
    bad = c.CondemnChunks(chunks=(chunk(3), "abcd"), now=1.0, horizon_s=DAY)
    assert isinstance(await ready.one(bad), InvalidRequest)
    assert (await ready.dump())["condemned"] == []


# -- batches, indexes, recovery ------------------------------------------------------------


async def test_failing_command_does_not_undo_neighbours(ready: Meta) -> None:
    results = await ready.apply(
        c.CreateContainer(container="d", owner="bob", owner_uid=3, now=T),
        c.CreateContainer(container="c", owner="bob", owner_uid=3, now=T),  # exists
        put("d", "x", [1], size=5),
        put("d", "x", [2], if_none_match_any=True),  # exists now
        c.DeleteBlob(container="d", blob="nope"),
        c.Grant(container="d", username="alice", permission="read"))
    assert [type(r) for r in results] == [Container, ContainerExists, Manifest,
                                          PreconditionFailed, BlobNotFound, type(None)]
    assert "d" in ready.state.view.containers
    assert dict(ready.state.view.containers["d"].grants) == {2: "read"}
    assert await ready.stats("d") == (1, 5)
    assert await ready.unreferenced([1, 2]) == [2]
    assert ready.state.applied_index == 10


async def test_results_are_errors_not_raised(ready: Meta) -> None:
    results = await ready.apply(c.DeleteUser(username="ghost"))
    assert isinstance(results[0], BlobstoreError)


async def test_applied_index_persisted(ready: Meta) -> None:
    assert ready.state.applied_index == 4
    await ready.apply(c.Logout(username="alice", uid=2))
    assert ready.state.applied_index == 5
    assert reloaded(ready.db.path).applied_index == 5
    assert ("applied_index", "5") in (await ready.dump())["meta"]


async def test_applied_index_moves_even_when_every_command_fails(ready: Meta) -> None:
    await ready.apply(c.DeleteUser(username="ghost"), c.DeleteUser(username="ghost"))
    assert ready.state.applied_index == 6
    assert reloaded(ready.db.path).applied_index == 6


async def test_entries_may_skip_indexes(ready: Meta) -> None:
    results = await ready.db.write(lambda conn: ready.state.apply_batch(
        conn, [(10, c.Logout(username="alice", uid=2))]))
    assert isinstance(results[0], User)
    assert ready.state.applied_index == 10


@pytest.mark.parametrize("index", [1, 3, 4])
async def test_reapplying_an_old_index_raises(ready: Meta, index: int) -> None:
    before = await ready.dump()
    view_before = view_snapshot(ready.state)
    with pytest.raises(ValueError):
        await ready.db.write(lambda conn: ready.state.apply_batch(
            conn, [(index, c.CreateUser(username="x", role="user", password_hash="h",
                                        now=T))]))
    assert await ready.dump() == before
    assert view_snapshot(ready.state) == view_before


async def test_stale_entry_rolls_back_the_whole_batch(ready: Meta) -> None:
    before = await ready.dump()
    view_before = view_snapshot(ready.state)
    entries: list[tuple[int, c.Command]] = [
        (5, c.CreateUser(username="x", role="user", password_hash="h", now=T)),
        (2, c.CreateUser(username="y", role="user", password_hash="h", now=T))]
    with pytest.raises(ValueError):
        await ready.db.write(lambda conn: ready.state.apply_batch(conn, entries))
    assert await ready.dump() == before
    assert view_snapshot(ready.state) == view_before
    # The writer connection is usable afterwards.
    assert await ready.apply(c.Logout(username="alice", uid=2))


@pytest.mark.parametrize("indexes", [(5, 5), (6, 5), (5, 7, 6)],
                         ids=["repeated", "backwards", "backwards-after-gap"])
async def test_indexes_within_a_batch_must_increase(ready: Meta,
                                                    indexes: tuple[int, ...]) -> None:
    """An index repeated or going backwards inside one batch is a re-application too:
    otherwise applied_index could move backwards and let an applied entry in again."""
    before = await ready.dump()
    entries: list[tuple[int, c.Command]] = [
        (index, c.Logout(username="alice", uid=2)) for index in indexes]
    with pytest.raises(ValueError):
        await ready.db.write(lambda conn: ready.state.apply_batch(conn, entries))
    assert await ready.dump() == before
    assert ready.state.applied_index == 4


async def test_view_matches_sqlite_after_reopening(ready: Meta) -> None:
    await ready.apply(
        c.CreateContainer(container="d", owner="bob", owner_uid=3, now=T),
        c.CreateContainer(container="e", owner="admin", owner_uid=1, now=T),
        c.Grant(container="c", username="bob", permission="write"),
        c.Grant(container="d", username="alice", permission="read"),
        c.Grant(container="e", username="alice", permission="write"),
        c.Grant(container="e", username="bob", permission="read"),
        c.CreateUser(username="carol", role="admin", password_hash="hc", now=T),
        c.Grant(container="e", username="carol", permission="read"),
        c.Revoke(container="e", username="bob"),
        c.SetPassword(username="alice", uid=2, password_hash="ha2"),
        c.Logout(username="bob", uid=3),
        c.DeleteUser(username="carol"),
        c.DeleteContainer(container="d"),
        put("c", "blob", [1, 2]))
    fresh = reloaded(ready.db.path)
    assert view_snapshot(fresh) == view_snapshot(ready.state)
    assert fresh.signing_key == bytes.fromhex(KEY_HEX)
    users, by_uid, containers, *_ = view_snapshot(fresh)
    assert set(users) == {"admin", "alice", "bob"}
    assert {u: r.uid for u, r in users.items()} == {"admin": 1, "alice": 2, "bob": 3}
    assert by_uid == {u.uid: u for u in users.values()}
    assert containers["c"][4] == {3: "write"}
    assert containers["e"][4] == {2: "write"}
    assert "d" not in containers


async def test_reopened_state_keeps_applying(ready: Meta, tmp_path: Path) -> None:
    ready.db.close()
    again = Meta(ready.db.path)
    try:
        assert again.state.applied_index == 4
        results = await again.apply(
            bootstrap("ignored"),
            c.CreateUser(username="alice", role="user", password_hash="h", now=T))
        assert results[0] is None
        assert isinstance(results[1], UserExists)
        assert again.state.applied_index == 6
    finally:
        again.db.close()
        ready.db = Database(ready.db.path)  # so the fixture's close() has something to close


# -- determinism ---------------------------------------------------------------------------

USERS = ["admin", "u1", "u2", "u3"]
CONTAINERS = ["k1", "k2"]
BLOBS = ["a", "b", "c/d"]


def random_commands(rng: random.Random, count: int) -> list[c.Command]:
    """A random but replayable command sequence; uids are guessed from a small range."""
    commands: list[c.Command] = [bootstrap()]
    for _ in range(count):
        roll = rng.random()
        user = rng.choice(USERS)
        container = rng.choice(CONTAINERS)
        uid = rng.randint(1, 8)
        if roll < 0.08:
            commands.append(c.CreateUser(username=user, role=rng.choice(["user", "admin"]),
                                         password_hash=f"h{rng.random()}", now=T))
        elif roll < 0.12:
            commands.append(c.DeleteUser(username=user))
        elif roll < 0.15:
            commands.append(c.Logout(username=user, uid=uid))
        elif roll < 0.18:
            commands.append(c.SetPassword(username=user, uid=uid, password_hash="p"))
        elif roll < 0.25:
            commands.append(c.CreateContainer(container=container, owner=user, owner_uid=uid,
                                              now=T))
        elif roll < 0.29:
            commands.append(c.DeleteContainer(container=container))
        elif roll < 0.36:
            commands.append(c.Grant(container=container, username=user,
                                    permission=rng.choice(["read", "write"])))
        elif roll < 0.40:
            commands.append(c.Revoke(container=container, username=user))
        elif roll < 0.80:
            chunks = [rng.randint(0, 6) for _ in range(rng.randint(0, 3))]
            kw: dict[str, object] = {}
            if rng.random() < 0.2:
                kw["if_none_match_any"] = True
            if rng.random() < 0.2:
                kw["if_match"] = tuple(rng.sample(["e0", "e1", "e2", "*"], rng.randint(1, 2)))
            kw["since"] = rng.randint(0, len(commands))
            commands.append(put(container, rng.choice(BLOBS), chunks, size=rng.randint(0, 20),
                                etag=f"e{rng.randint(0, 2)}", **kw))
        elif roll < 0.85:
            commands.append(condemn([rng.randint(0, 6) for _ in range(rng.randint(0, 3))],
                                    now=float(len(commands)), horizon_s=20.0))
        elif roll < 0.97:
            commands.append(c.DeleteBlob(container=container, blob=rng.choice(BLOBS)))
        else:
            commands.append(bootstrap("again"))
    return commands


def normalise(result: object) -> object:
    if isinstance(result, BaseException):
        return (type(result).__name__, str(result))
    if isinstance(result, Container):
        return (result.name, result.owner, result.owner_uid, result.created_at,
                dict(result.grants))
    return result


def split(rng: random.Random, commands: list[c.Command]) -> list[list[c.Command]]:
    batches, i = [], 0
    while i < len(commands):
        n = rng.randint(1, 12)
        batches.append(commands[i:i + n])
        i += n
    return batches


def check_invariants(tables: dict[str, list[tuple]]) -> None:
    expected_refs: Counter[bytes] = Counter()
    per_container: dict[str, tuple[int, int]] = {}
    for row in tables["blobs"]:
        container, size, chunks = row[0], row[2], row[7]
        expected_refs.update(unpack_chunks(chunks))
        count, total = per_container.get(container, (0, 0))
        per_container[container] = (count + 1, total + size)
    assert dict(tables["chunk_refs"]) == dict(expected_refs)
    containers = {row[0]: (row[4], row[5]) for row in tables["containers"]}
    assert set(per_container) <= set(containers)  # no blob outlives its container
    for name, counters in containers.items():
        assert counters == per_container.get(name, (0, 0)), name
    user_uids = {row[1] for row in tables["users"]}
    assert {row[1] for row in tables["grants"]} <= user_uids
    assert {row[0] for row in tables["grants"]} <= set(containers)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
async def test_same_commands_same_state_and_results(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    commands = random_commands(rng, 250)
    metas = [Meta(tmp_path / "one.db"), Meta(tmp_path / "two.db")]
    try:
        outcomes = []
        for number, m in enumerate(metas):
            # The two replicas group the same log into different batches.
            batches = split(random.Random(seed * 100 + number), commands)
            results: list[object] = []
            for batch in batches:
                results.extend(await m.apply(*batch))
            outcomes.append(([normalise(r) for r in results], await m.dump()))
        (results_a, tables_a), (results_b, tables_b) = outcomes
        assert results_a == results_b, f"seed={seed}"
        assert tables_a == tables_b, f"seed={seed}"
        check_invariants(tables_a)
        assert any(isinstance(r, tuple) and r and r[0] == "PreconditionFailed"
                   for r in results_a) or seed != 1
        for m in metas:
            assert view_snapshot(reloaded(m.db.path)) == view_snapshot(m.state), f"seed={seed}"
    finally:
        for m in metas:
            m.db.close()


async def test_the_manifest_cache_follows_every_commit_and_a_reload(ready: Meta,
                                                                    tmp_path: Path) -> None:
    async def never() -> tuple[Manifest | None, bytes | None]:
        raise AssertionError("the cache should answer")

    cache = ready.state.manifests
    first = await ready.one(inline_put("x", b"one"))
    assert await cache.read(("c", "x"), never) == (first, b"one")
    second = await ready.one(put("c", "x", [5]))
    assert await cache.read(("c", "x"), never) == (second, None)
    assert isinstance(await ready.one(put("c", "x", [6], if_none_match_any=True)),
                      PreconditionFailed)  # refused: the cache keeps what is committed
    assert await cache.read(("c", "x"), never) == (second, None)
    await ready.one(c.DeleteBlob(container="c", blob="x"))
    assert await cache.read(("c", "x"), never) == (None, None)
    await ready.db.write(ready.state.load)  # as after installing a snapshot
    assert len(cache) == 0
