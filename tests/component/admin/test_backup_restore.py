"""A metadata backup taken from a serving node, restored into a new cluster of one.

In one process: a node with users, grants, an inline blob and a chunked blob
is backed up while it serves (``node.admin.backup.backup`` against its live
data dir); then more is written; then the node stops and its metadata is
destroyed, its chunk files kept. ``restore`` prepares the data dir and a new
``Node`` is started on it: it is the only voter of a new Raft group whose log
starts with a snapshot at the backup's applied index, and it serves exactly
the backup's state, tokens included. This is also what keeps the restore's
idea of the data dir's layout in step with the node's.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from node.admin.backup import RESTORED_TERM, BackupError, backup, restore
from node.testing.inprocess import NodeHandle, eventually, running_node

SMALL = b"small blob, stored inline in its manifest"
BIG = bytes(range(256)) * 400  # 100 KiB: above inline_max, stored as a chunk
ALICE = ("alice", "alice-password-1")


def blob_query(container: str, blob: str) -> str:
    return urlencode({"container": container, "blob": blob})


async def call(h: NodeHandle, method: str, path: str, headers: dict[str, str],
               **kwargs: Any) -> Any:
    return await h.client.open(path, method=method, headers=headers, **kwargs)


async def put(h: NodeHandle, headers: dict[str, str], container: str, blob: str,
              data: bytes) -> None:
    answer = await h.put_blob(container, blob, data, headers)
    assert answer.status_code == 201, await answer.get_data()


async def get(h: NodeHandle, headers: dict[str, str], container: str, blob: str
              ) -> tuple[int, bytes]:
    answer = await h.client.get(f"/get_data?{blob_query(container, blob)}", headers=headers)
    return answer.status_code, await answer.get_data(as_text=False)


async def populate(h: NodeHandle) -> tuple[dict[str, str], str]:
    """alice with read access to ``photos`` (small and big blob); admin headers and alice's
    token."""
    admin = await h.admin_headers()
    answer = await h.client.post("/users", json={"username": ALICE[0], "password": ALICE[1],
                                                 "role": "user"}, headers=admin)
    assert answer.status_code == 201, await answer.get_data()
    answer = await h.client.post("/create_container", json={"container": "photos"},
                                 headers=admin)
    assert answer.status_code == 201
    answer = await h.client.post("/grant_access", json={"container": "photos",
                                                        "username": "alice",
                                                        "permission": "read"}, headers=admin)
    assert answer.status_code == 204
    await put(h, admin, "photos", "small.txt", SMALL)
    await put(h, admin, "photos", "big.bin", BIG)
    return admin, await h.login(*ALICE)


def destroy_metadata(data_dir: Path) -> None:
    """What a lost metadata disk leaves: the chunk files (``store/``) and ``node.json``."""
    for path in data_dir.iterdir():
        if path.name.startswith(("meta.sqlite3", "raft.sqlite3")):
            path.unlink()
    shutil.rmtree(data_dir / "snapshots")


async def test_a_backup_of_a_serving_node_restores_as_a_new_cluster_of_one(
        tmp_path: Path) -> None:
    data_dir, backup_file = tmp_path / "n1", tmp_path / "meta-backup.sqlite3"
    async with running_node(data_dir) as h:
        admin, alice = await populate(h)
        info = await backup(data_dir, backup_file)  # the node keeps serving meanwhile
        assert info.applied_index == h.services.state.applied_index
        assert (info.users, info.containers, info.grants, info.blobs, info.inline_blobs) == \
            (2, 1, 1, 2, 1)
        assert info.bootstrapped and info.cluster_id == h.services.state.cluster_id
        # Written after the backup: not in it.
        await put(h, admin, "photos", "later.txt", b"after the backup")
        answer = await h.client.post("/create_container", json={"container": "later"},
                                     headers=admin)
        assert answer.status_code == 201
        cluster_id = h.services.state.cluster_id

    destroy_metadata(data_dir)
    restored = await restore(data_dir, backup_file)  # the node id comes from node.json
    assert restored.node_id == "n1" and restored.snapshot.index == info.applied_index
    assert (data_dir / "snapshots" / f"snapshot-{info.applied_index}-{RESTORED_TERM}.sqlite3"
            ).is_file()

    async with running_node(data_dir) as h:
        await eventually("the restored node leads its new group",
                         lambda: h.services.log.status().leader == "n1")
        status = h.services.log.status()
        assert status.voters == ("n1",) and status.learners == ()
        assert h.services.state.cluster_id == cluster_id
        # Tokens issued before the backup still work: same signing key, same epochs.
        assert await get(h, admin, "photos", "small.txt") == (200, SMALL)
        assert await get(h, admin, "photos", "big.bin") == (200, BIG)
        assert await get(h, {"Authorization": f"Bearer {alice}"}, "photos", "big.bin") == \
            (200, BIG)
        assert (await get(h, admin, "photos", "later.txt"))[0] == 404
        answer = await h.client.get("/list_containers", headers=admin)
        assert [c["container"] for c in (await answer.get_json())["containers"]] == ["photos"]
        # The new group takes writes, its log going on after the snapshot.
        await put(h, admin, "photos", "new.txt", b"written after the restore")
        assert h.services.state.applied_index > info.applied_index
        assert await get(h, admin, "photos", "new.txt") == (200, b"written after the restore")


async def test_a_restore_with_revoked_tokens_keeps_passwords_but_not_tokens(
        tmp_path: Path) -> None:
    data_dir, backup_file = tmp_path / "n1", tmp_path / "meta-backup.sqlite3"
    async with running_node(data_dir) as h:
        admin, alice = await populate(h)
        await backup(data_dir, backup_file)
    restored_dir = tmp_path / "restored"
    shutil.copytree(data_dir / "store", restored_dir / "store")  # chunks copied by hand
    await restore(restored_dir, backup_file, "n1", revoke_tokens=True)
    async with running_node(restored_dir) as h:
        answer = await h.client.get("/list_containers", headers=admin)
        assert answer.status_code == 401
        fresh = await h.admin_headers()  # the password is the backup's
        assert await get(h, fresh, "photos", "big.bin") == (200, BIG)
        assert (await get(h, {"Authorization": f"Bearer {alice}"}, "photos", "small.txt")
                )[0] == 401
        assert await get(h, {"Authorization": f"Bearer {await h.login(*ALICE)}"}, "photos",
                         "small.txt") == (200, SMALL)


async def test_a_running_node_cannot_be_restored_over(tmp_path: Path) -> None:
    data_dir, backup_file = tmp_path / "n1", tmp_path / "meta-backup.sqlite3"
    async with running_node(data_dir):
        await backup(data_dir, backup_file)
        try:
            await restore(data_dir, backup_file)
        except BackupError as exc:
            assert "in use by a running node" in str(exc)
        else:
            raise AssertionError("restored over a running node")
