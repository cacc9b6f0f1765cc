"""Containers and grants (API.md, "Containers"): create, delete, list, grant and revoke."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from node.testing.inprocess import NodeHandle

from api_support import (Problems, assert_error, assert_recent, blob_url, create_container,
                         create_user, grant, parse_rfc3339, put, q)

Headers = dict[str, str]


async def list_containers(node: NodeHandle, headers: Headers) -> list[dict[str, Any]]:
    r = await node.client.get("/list_containers", headers=headers)
    assert r.status_code == 200, await r.get_data()
    body = await r.get_json()
    assert set(body) == {"containers"}
    return body["containers"]


async def names_visible(node: NodeHandle, headers: Headers) -> list[str]:
    return [c["container"] for c in await list_containers(node, headers)]


async def stats(node: NodeHandle, headers: Headers, name: str) -> tuple[int, int]:
    [entry] = [c for c in await list_containers(node, headers) if c["container"] == name]
    return entry["blob_count"], entry["bytes"]


async def revoke(node: NodeHandle, headers: Headers, container: str, username: str) -> Any:
    return await node.client.post("/revoke_access", headers=headers,
                                  json={"container": container, "username": username})


# -- POST /create_container ---------------------------------------------------------


async def test_create_container_is_201_with_container_owner_and_created_at(
        node: NodeHandle, alice: Headers) -> None:
    r = await node.client.post("/create_container", json={"container": "photos"}, headers=alice)
    assert r.status_code == 201
    assert r.headers["Content-Type"].startswith("application/json")
    body = await r.get_json()
    assert set(body) == {"container", "owner", "created_at"}
    assert body["container"] == "photos"
    assert body["owner"] == "alice"
    assert_recent(body["created_at"])


async def test_creating_an_existing_container_is_409(node: NodeHandle, alice: Headers) -> None:
    await create_container(node, alice, "photos")
    r = await node.client.post("/create_container", json={"container": "photos"}, headers=alice)
    await assert_error(r, 409, "ContainerExists")


async def test_container_names_are_global(node: NodeHandle, admin: Headers, alice: Headers,
                                          bob: Headers) -> None:
    await create_container(node, alice, "photos")
    for headers in (bob, admin):
        r = await node.client.post("/create_container", json={"container": "photos"},
                                   headers=headers)
        await assert_error(r, 409, "ContainerExists")
    [entry] = await list_containers(node, admin)
    assert entry["owner"] == "alice"
    assert await names_visible(node, bob) == []


INVALID_CONTAINER_NAMES = [
    "ab", "a", "", "a" * 64, "Photos", "PHOTOS", "-photos", "photos-", "my_photos",
    "my.photos", "my photos", "phötos", "photos/x", "a\x00b", "123-", "-", "---",
    "\nphotos", "photos ", "ph\totos",
]


async def test_concurrent_creates_of_one_name_make_exactly_one_container(
        node: NodeHandle, admin: Headers, alice: Headers, bob: Headers) -> None:
    statuses: list[tuple[str, int]] = []

    async def create(who: str, headers: Headers) -> None:
        r = await node.client.post("/create_container", json={"container": "race"},
                                   headers=headers)
        statuses.append((who, r.status_code))

    async with trio.open_nursery() as nursery:
        for who, headers in [("alice", alice), ("bob", bob), ("admin", admin)] * 3:
            nursery.start_soon(create, who, headers)
    winners = [who for who, status in statuses if status == 201]
    assert len(winners) == 1, statuses
    assert sorted(status for _, status in statuses) == [201] + [409] * 8
    [entry] = await list_containers(node, admin)
    assert entry["owner"] == winners[0]


async def test_invalid_container_names_are_400_invalid_name(node: NodeHandle,
                                                            alice: Headers) -> None:
    problems = Problems()
    for name in INVALID_CONTAINER_NAMES:
        r = await node.client.post("/create_container", json={"container": name},
                                   headers=alice)
        await problems.expect_error(name, r, 400, "InvalidName")
    problems.assert_none()
    assert await names_visible(node, alice) == []


async def test_a_container_name_with_a_trailing_newline_is_400_invalid_name(
        node: NodeHandle, alice: Headers) -> None:
    r = await node.client.post("/create_container", json={"container": "photos\n"},
                               headers=alice)
    await assert_error(r, 400, "InvalidName")
    assert await names_visible(node, alice) == []
    await create_container(node, alice, "photos")
    r = await node.client.delete("/delete_container?container=photos%0A", headers=alice)
    await assert_error(r, 400, "InvalidName")


async def test_non_string_container_names_are_400_invalid_request(node: NodeHandle,
                                                                  alice: Headers) -> None:
    problems = Problems()
    for value in [123, None, True, ["photos"], {"name": "photos"}, 1.5]:
        r = await node.client.post("/create_container", json={"container": value},
                                   headers=alice)
        await problems.expect_error(value, r, 400, "InvalidRequest")
    problems.assert_none()
    assert await names_visible(node, alice) == []


async def test_missing_or_unknown_fields_are_400(node: NodeHandle, alice: Headers) -> None:
    problems = Problems()
    for body in [{}, {"name": "photos"}, {"container": "photos", "owner": "bob"}]:
        r = await node.client.post("/create_container", json=body, headers=alice)
        await problems.expect_error(body, r, 400, "InvalidRequest")
    problems.assert_none()
    assert await names_visible(node, alice) == []


async def test_valid_container_names_are_accepted(node: NodeHandle, alice: Headers) -> None:
    names = ["abc", "a" * 63, "a-b", "123", "0-0", "a--b", "9lives", "z-9"]
    for name in names:
        await create_container(node, alice, name)
    assert await names_visible(node, alice) == sorted(names)


# -- DELETE /delete_container -------------------------------------------------------


async def test_delete_container_is_204_and_it_is_gone(node: NodeHandle, alice: Headers) -> None:
    await create_container(node, alice, "photos")
    r = await node.client.delete("/delete_container?container=photos", headers=alice)
    assert r.status_code == 204
    assert await r.get_data() == b""
    assert await names_visible(node, alice) == []
    r = await node.client.get("/list_blobs?container=photos", headers=alice)
    await assert_error(r, 404, "ContainerNotFound")


async def test_a_deleted_containers_name_can_be_reused(node: NodeHandle, alice: Headers,
                                                       bob: Headers) -> None:
    await create_container(node, alice, "photos")
    assert (await node.client.delete("/delete_container?container=photos",
                                     headers=alice)).status_code == 204
    r = await node.client.post("/create_container", json={"container": "photos"}, headers=bob)
    assert r.status_code == 201
    assert (await r.get_json())["owner"] == "bob"


async def test_deleting_an_unknown_container_is_404(node: NodeHandle, alice: Headers) -> None:
    r = await node.client.delete("/delete_container?container=nothere", headers=alice)
    await assert_error(r, 404, "ContainerNotFound")


async def test_deleting_a_container_twice_is_404_the_second_time(node: NodeHandle,
                                                                 alice: Headers) -> None:
    await create_container(node, alice, "photos")
    assert (await node.client.delete("/delete_container?container=photos",
                                     headers=alice)).status_code == 204
    r = await node.client.delete("/delete_container?container=photos", headers=alice)
    await assert_error(r, 404, "ContainerNotFound")


async def test_deleting_a_non_empty_container_is_409_until_it_is_empty(
        node: NodeHandle, alice: Headers) -> None:
    await create_container(node, alice, "photos")
    await put(node, alice, "photos", "cat.jpg", b"meow")
    r = await node.client.delete("/delete_container?container=photos", headers=alice)
    await assert_error(r, 409, "ContainerNotEmpty")
    assert await names_visible(node, alice) == ["photos"]
    assert (await node.client.delete(blob_url("photos", "cat.jpg", "/delete_data"),
                                     headers=alice)).status_code == 204
    r = await node.client.delete("/delete_container?container=photos", headers=alice)
    assert r.status_code == 204


async def test_an_empty_blob_keeps_a_container_non_empty(node: NodeHandle,
                                                         alice: Headers) -> None:
    await create_container(node, alice, "photos")
    await put(node, alice, "photos", "empty", b"")
    r = await node.client.delete("/delete_container?container=photos", headers=alice)
    await assert_error(r, 409, "ContainerNotEmpty")


@pytest.mark.parametrize("permission", [None, "read", "write"])
async def test_only_the_owner_or_an_admin_may_delete_a_container(
        node: NodeHandle, alice: Headers, bob: Headers, permission: str | None) -> None:
    await create_container(node, alice, "photos")
    if permission is not None:
        await grant(node, alice, "photos", "bob", permission)
    r = await node.client.delete("/delete_container?container=photos", headers=bob)
    await assert_error(r, 403, "Forbidden")
    assert await names_visible(node, alice) == ["photos"]


async def test_an_admin_may_delete_a_users_container(node: NodeHandle, admin: Headers,
                                                     alice: Headers) -> None:
    await create_container(node, alice, "photos")
    r = await node.client.delete("/delete_container?container=photos", headers=admin)
    assert r.status_code == 204
    assert await names_visible(node, alice) == []


async def test_bad_delete_container_queries_are_400(node: NodeHandle, alice: Headers) -> None:
    await create_container(node, alice, "photos")
    problems = Problems()
    for query, code in [
        ("", "InvalidRequest"),
        ("name=photos", "InvalidRequest"),
        ("container=", "InvalidName"),
        ("container=Photos", "InvalidName"),
        ("container=ab", "InvalidName"),
        ("container=photos&container=photos", "InvalidRequest"),
        ("container=%FF%FE%FD", "InvalidName"),
        ("container=pho%tos", "InvalidRequest"),
    ]:
        r = await node.client.delete(f"/delete_container?{query}", headers=alice)
        await problems.expect_error(query, r, 400, code)
    problems.assert_none()
    assert await names_visible(node, alice) == ["photos"]


async def test_a_deleted_and_recreated_container_has_none_of_the_old_grants(
        node: NodeHandle, alice: Headers, bob: Headers) -> None:
    await create_container(node, alice, "photos")
    await grant(node, alice, "photos", "bob", "write")
    assert (await node.client.delete("/delete_container?container=photos",
                                     headers=alice)).status_code == 204
    await create_container(node, alice, "photos")
    assert await names_visible(node, bob) == []
    r = await node.client.get("/list_blobs?container=photos", headers=bob)
    await assert_error(r, 403, "Forbidden")


# -- GET /list_containers -----------------------------------------------------------


async def test_list_containers_entries_have_the_contract_fields(node: NodeHandle,
                                                                alice: Headers) -> None:
    created = await (await node.client.post("/create_container", json={"container": "photos"},
                                            headers=alice)).get_json()
    [entry] = await list_containers(node, alice)
    assert set(entry) == {"container", "owner", "created_at", "blob_count", "bytes"}
    assert entry["container"] == "photos"
    assert entry["owner"] == "alice"
    assert entry["created_at"] == created["created_at"]
    parse_rfc3339(entry["created_at"])
    assert entry["blob_count"] == 0 and entry["bytes"] == 0
    assert type(entry["blob_count"]) is int and type(entry["bytes"]) is int


async def test_list_containers_is_empty_for_a_new_user(node: NodeHandle, admin: Headers,
                                                       alice: Headers) -> None:
    await create_container(node, admin, "admins-box")
    assert await list_containers(node, alice) == []


async def test_list_containers_is_sorted_by_name(node: NodeHandle, alice: Headers) -> None:
    names = ["zeta", "alpha", "m-1", "m-0", "123", "beta", "a00", "a-0"]
    for name in names:
        await create_container(node, alice, name)
    assert await names_visible(node, alice) == sorted(names)


async def test_blob_count_and_bytes_follow_puts_overwrites_and_deletes(
        node: NodeHandle, alice: Headers) -> None:
    await create_container(node, alice, "photos")
    await put(node, alice, "photos", "a", b"x" * 100)
    await put(node, alice, "photos", "b", b"y" * 50)
    await put(node, alice, "photos", "c", b"")
    assert await stats(node, alice, "photos") == (3, 150)
    await put(node, alice, "photos", "a", b"x" * 10)  # overwrite: smaller
    assert await stats(node, alice, "photos") == (3, 60)
    await put(node, alice, "photos", "c", b"z" * 1000)  # overwrite: larger
    assert await stats(node, alice, "photos") == (3, 1060)
    assert (await node.client.delete(blob_url("photos", "b", "/delete_data"),
                                     headers=alice)).status_code == 204
    assert await stats(node, alice, "photos") == (2, 1010)
    assert (await node.client.delete(blob_url("photos", "a", "/delete_data"),
                                     headers=alice)).status_code == 204
    assert (await node.client.delete(blob_url("photos", "c", "/delete_data"),
                                     headers=alice)).status_code == 204
    assert await stats(node, alice, "photos") == (0, 0)


async def test_stats_are_per_container(node: NodeHandle, alice: Headers) -> None:
    await create_container(node, alice, "one")
    await create_container(node, alice, "two")
    await put(node, alice, "one", "a", b"1234")
    await put(node, alice, "two", "a", b"12")
    await put(node, alice, "two", "b", b"1")
    assert await stats(node, alice, "one") == (1, 4)
    assert await stats(node, alice, "two") == (2, 3)


async def test_failed_puts_do_not_change_the_stats(node: NodeHandle, alice: Headers) -> None:
    await create_container(node, alice, "photos")
    await put(node, alice, "photos", "a", b"12345")
    r = await node.put_blob("photos", "a", b"1234567890", alice, **{"If-None-Match": "*"})
    assert r.status_code == 412
    r = await node.put_blob("photos", "b", b"1234567890", alice,
                            **{"Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg=="})
    assert r.status_code == 400
    assert await stats(node, alice, "photos") == (1, 5)


async def test_a_user_sees_owned_and_granted_containers_and_an_admin_sees_all(
        node: NodeHandle, admin: Headers, alice: Headers, bob: Headers) -> None:
    await create_container(node, alice, "alice-own")
    await create_container(node, bob, "bob-read")
    await create_container(node, bob, "bob-write")
    await create_container(node, bob, "bob-private")
    await create_container(node, admin, "admin-box")
    await grant(node, bob, "bob-read", "alice", "read")
    await grant(node, bob, "bob-write", "alice", "write")

    assert await names_visible(node, alice) == ["alice-own", "bob-read", "bob-write"]
    assert await names_visible(node, bob) == ["bob-private", "bob-read", "bob-write"]
    assert await names_visible(node, admin) == ["admin-box", "alice-own", "bob-private",
                                                "bob-read", "bob-write"]
    owners = {c["container"]: c["owner"] for c in await list_containers(node, alice)}
    assert owners == {"alice-own": "alice", "bob-read": "bob", "bob-write": "bob"}


async def test_a_granted_user_sees_the_same_stats_as_the_owner(node: NodeHandle, alice: Headers,
                                                               bob: Headers) -> None:
    await create_container(node, alice, "photos")
    await put(node, alice, "photos", "a", b"123")
    await grant(node, alice, "photos", "bob", "read")
    assert await stats(node, bob, "photos") == (1, 3)


# -- POST /grant_access and POST /revoke_access -------------------------------------


async def test_grant_is_204_with_no_body(node: NodeHandle, alice: Headers, bob: Headers) -> None:
    await create_container(node, alice, "photos")
    r = await node.client.post("/grant_access", headers=alice, json={
        "container": "photos", "username": "bob", "permission": "read"})
    assert r.status_code == 204
    assert await r.get_data() == b""


async def test_revoke_is_204_with_no_body(node: NodeHandle, alice: Headers, bob: Headers) -> None:
    await create_container(node, alice, "photos")
    await grant(node, alice, "photos", "bob", "read")
    r = await revoke(node, alice, "photos", "bob")
    assert r.status_code == 204
    assert await r.get_data() == b""


async def check_access(node: NodeHandle, headers: Headers, container: str) -> dict[str, int]:
    """The status of each kind of request ``headers`` makes on ``container``."""
    results = {}
    r = await node.client.get(f"/list_blobs?{q(container=container)}", headers=headers)
    results["list"] = r.status_code
    r = await node.client.get(blob_url(container, "existing"), headers=headers)
    results["get"] = r.status_code
    if r.status_code == 200:
        assert await r.get_data() == b"old content"
    r = await node.client.head(blob_url(container, "existing"), headers=headers)
    results["head"] = r.status_code
    r = await node.put_blob(container, "new", b"new content", headers)
    results["put"] = r.status_code
    r = await node.put_blob(container, "existing", b"overwritten", headers)
    results["overwrite"] = r.status_code
    r = await node.client.delete(blob_url(container, "doomed", "/delete_data"), headers=headers)
    results["delete"] = r.status_code
    return results


async def prepare(node: NodeHandle, owner: Headers) -> None:
    await create_container(node, owner, "photos")
    await put(node, owner, "photos", "existing", b"old content")
    await put(node, owner, "photos", "doomed", b"x")


async def test_without_a_grant_a_user_has_no_access(node: NodeHandle, alice: Headers,
                                                    bob: Headers) -> None:
    await prepare(node, alice)
    assert await check_access(node, bob, "photos") == {
        "list": 403, "get": 403, "head": 403, "put": 403, "overwrite": 403, "delete": 403}
    r = await node.client.get(blob_url("photos", "existing"), headers=bob)
    await assert_error(r, 403, "Forbidden")


async def test_read_grant_allows_reading_but_not_writing(node: NodeHandle, alice: Headers,
                                                         bob: Headers) -> None:
    await prepare(node, alice)
    await grant(node, alice, "photos", "bob", "read")
    assert await check_access(node, bob, "photos") == {
        "list": 200, "get": 200, "head": 200, "put": 403, "overwrite": 403, "delete": 403}
    # Nothing changed.
    r = await node.client.get(blob_url("photos", "existing"), headers=alice)
    assert await r.get_data() == b"old content"
    assert (await node.client.get(blob_url("photos", "doomed"), headers=alice)).status_code == 200
    assert (await node.client.get(blob_url("photos", "new"), headers=alice)).status_code == 404


async def test_write_grant_allows_reading_and_writing(node: NodeHandle, alice: Headers,
                                                      bob: Headers) -> None:
    await prepare(node, alice)
    await grant(node, alice, "photos", "bob", "write")
    assert await check_access(node, bob, "photos") == {
        "list": 200, "get": 200, "head": 200, "put": 201, "overwrite": 201, "delete": 204}
    r = await node.client.get(blob_url("photos", "existing"), headers=alice)
    assert await r.get_data() == b"overwritten"


async def test_the_owner_and_an_admin_have_full_access(node: NodeHandle, admin: Headers,
                                                       alice: Headers) -> None:
    await prepare(node, alice)
    full = {"list": 200, "get": 200, "head": 200, "put": 201, "overwrite": 201, "delete": 204}
    assert await check_access(node, alice, "photos") == full
    await put(node, alice, "photos", "existing", b"old content")
    await put(node, alice, "photos", "doomed", b"x")
    assert await check_access(node, admin, "photos") == full


async def test_revoke_removes_access(node: NodeHandle, alice: Headers, bob: Headers) -> None:
    await prepare(node, alice)
    await grant(node, alice, "photos", "bob", "write")
    assert (await revoke(node, alice, "photos", "bob")).status_code == 204
    assert await check_access(node, bob, "photos") == {
        "list": 403, "get": 403, "head": 403, "put": 403, "overwrite": 403, "delete": 403}
    assert await names_visible(node, bob) == []


async def test_a_new_grant_replaces_the_old_permission(node: NodeHandle, alice: Headers,
                                                       bob: Headers) -> None:
    await prepare(node, alice)
    await grant(node, alice, "photos", "bob", "write")
    await grant(node, alice, "photos", "bob", "read")
    assert (await node.put_blob("photos", "new", b"x", bob)).status_code == 403
    await grant(node, alice, "photos", "bob", "write")
    assert (await node.put_blob("photos", "new", b"x", bob)).status_code == 201


async def test_an_admin_may_grant_and_revoke_on_any_container(node: NodeHandle, admin: Headers,
                                                              alice: Headers,
                                                              bob: Headers) -> None:
    await prepare(node, alice)
    await grant(node, admin, "photos", "bob", "read")
    assert (await node.client.get(blob_url("photos", "existing"), headers=bob)).status_code == 200
    assert (await revoke(node, admin, "photos", "bob")).status_code == 204
    assert (await node.client.get(blob_url("photos", "existing"), headers=bob)).status_code == 403


@pytest.mark.parametrize("permission", [None, "read", "write"])
async def test_only_the_owner_or_an_admin_may_grant(node: NodeHandle, admin: Headers,
                                                    alice: Headers, bob: Headers,
                                                    permission: str | None) -> None:
    await create_user(node, admin, "carol")
    await prepare(node, alice)
    if permission is not None:
        await grant(node, alice, "photos", "bob", permission)
    r = await node.client.post("/grant_access", headers=bob, json={
        "container": "photos", "username": "carol", "permission": "write"})
    await assert_error(r, 403, "Forbidden")
    r = await node.client.post("/grant_access", headers=bob, json={
        "container": "photos", "username": "bob", "permission": "write"})
    await assert_error(r, 403, "Forbidden")
    if permission != "write":
        assert (await node.put_blob("photos", "new", b"x", bob)).status_code == 403


@pytest.mark.parametrize("permission", [None, "read", "write"])
async def test_only_the_owner_or_an_admin_may_revoke(node: NodeHandle, admin: Headers,
                                                     alice: Headers, bob: Headers,
                                                     permission: str | None) -> None:
    carol = await create_user(node, admin, "carol")
    await prepare(node, alice)
    await grant(node, alice, "photos", "carol", "read")
    if permission is not None:
        await grant(node, alice, "photos", "bob", permission)
    await assert_error(await revoke(node, bob, "photos", "carol"), 403, "Forbidden")
    assert (await node.client.get(blob_url("photos", "existing"),
                                  headers=carol)).status_code == 200


async def test_granting_on_an_unknown_container_is_404(node: NodeHandle, alice: Headers,
                                                       bob: Headers) -> None:
    r = await node.client.post("/grant_access", headers=alice, json={
        "container": "nothere", "username": "bob", "permission": "read"})
    await assert_error(r, 404, "ContainerNotFound")
    await assert_error(await revoke(node, alice, "nothere", "bob"), 404, "ContainerNotFound")


async def test_granting_to_an_unknown_user_is_404(node: NodeHandle, alice: Headers) -> None:
    await create_container(node, alice, "photos")
    r = await node.client.post("/grant_access", headers=alice, json={
        "container": "photos", "username": "nobody", "permission": "read"})
    await assert_error(r, 404, "UserNotFound")
    await assert_error(await revoke(node, alice, "photos", "nobody"), 404, "UserNotFound")


async def test_a_grant_to_a_later_created_namesake_does_not_exist(node: NodeHandle,
                                                                  admin: Headers,
                                                                  alice: Headers) -> None:
    await create_container(node, alice, "photos")
    r = await node.client.post("/grant_access", headers=alice, json={
        "container": "photos", "username": "carol", "permission": "read"})
    await assert_error(r, 404, "UserNotFound")
    carol = await create_user(node, admin, "carol")
    assert await names_visible(node, carol) == []


BAD_GRANT_BODIES = [
    ({"container": "photos", "username": "bob", "permission": "admin"}, "InvalidRequest"),
    ({"container": "photos", "username": "bob", "permission": "owner"}, "InvalidRequest"),
    ({"container": "photos", "username": "bob", "permission": "READ"}, "InvalidRequest"),
    ({"container": "photos", "username": "bob", "permission": ""}, "InvalidRequest"),
    ({"container": "photos", "username": "bob", "permission": None}, "InvalidRequest"),
    ({"container": "photos", "username": "bob", "permission": 1}, "InvalidRequest"),
    ({"container": "photos", "username": "bob", "permission": ["read"]}, "InvalidRequest"),
    ({"container": "photos", "username": "bob"}, "InvalidRequest"),
    ({"container": "photos", "permission": "read"}, "InvalidRequest"),
    ({"username": "bob", "permission": "read"}, "InvalidRequest"),
    ({"container": "photos", "username": "bob", "permission": "read", "x": 1},
     "InvalidRequest"),
    ({"container": "Photos", "username": "bob", "permission": "read"}, "InvalidName"),
    ({"container": 7, "username": "bob", "permission": "read"}, "InvalidRequest"),
    ({"container": "photos", "username": "-bob", "permission": "read"}, "InvalidName"),
    ({"container": "photos", "username": 7, "permission": "read"}, "InvalidRequest"),
]


async def test_bad_grant_bodies_are_400(node: NodeHandle, alice: Headers, bob: Headers) -> None:
    await create_container(node, alice, "photos")
    problems = Problems()
    for body, code in BAD_GRANT_BODIES:
        r = await node.client.post("/grant_access", headers=alice, json=body)
        await problems.expect_error(body, r, 400, code)
    problems.assert_none()
    assert await names_visible(node, bob) == []


BAD_REVOKE_BODIES = [
    ({"container": "photos"}, "InvalidRequest"),
    ({"username": "bob"}, "InvalidRequest"),
    ({"container": "photos", "username": "bob", "permission": "read"}, "InvalidRequest"),
    ({"container": "photos!", "username": "bob"}, "InvalidName"),
    ({"container": "photos", "username": "b b"}, "InvalidName"),
    ({"container": None, "username": "bob"}, "InvalidRequest"),
    ({"container": "photos", "username": None}, "InvalidRequest"),
]


async def test_bad_revoke_bodies_are_400(node: NodeHandle, alice: Headers, bob: Headers) -> None:
    await create_container(node, alice, "photos")
    await grant(node, alice, "photos", "bob", "read")
    problems = Problems()
    for body, code in BAD_REVOKE_BODIES:
        r = await node.client.post("/revoke_access", headers=alice, json=body)
        await problems.expect_error(body, r, 400, code)
    problems.assert_none()
    assert await names_visible(node, bob) == ["photos"]
