"""POST /auth, POST /logout, /users and POST /change_password (API.md, "Authentication and users")."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from node.clock import ManualClock
from node.testing.inprocess import ADMIN_PASSWORD, NodeHandle, running_node

from api_support import (USER_PASSWORD, assert_error, assert_recent, create_container,
                         create_user, grant, parse_rfc3339, q)

Headers = dict[str, str]


def bearer(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


async def login_response(node: NodeHandle, username: str, password: str) -> Any:
    return await node.client.post("/auth", json={"username": username, "password": password})


# -- POST /auth ---------------------------------------------------------------------


async def test_login_answers_token_expiry_username_and_role(node: NodeHandle) -> None:
    r = await login_response(node, "admin", ADMIN_PASSWORD)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    body = await r.get_json()
    assert set(body) == {"token", "expires_at", "username", "role"}
    assert isinstance(body["token"], str) and body["token"]
    assert body["username"] == "admin"
    assert body["role"] == "admin"
    lifetime = parse_rfc3339(body["expires_at"]) - datetime.now(timezone.utc)
    assert timedelta(hours=11) < lifetime <= timedelta(hours=12), "default token_ttl_s is 12 h"


async def test_login_expiry_is_the_configured_token_lifetime_from_now(tmp_path: Path) -> None:
    clock = ManualClock(1_800_000_000.0)
    async with running_node(tmp_path / "n", clock=clock, token_ttl_s=3600) as node:
        body = await (await login_response(node, "admin", ADMIN_PASSWORD)).get_json()
        assert parse_rfc3339(body["expires_at"]).timestamp() == pytest.approx(1_800_003_600.0)


async def test_login_of_an_ordinary_user_reports_role_user(node: NodeHandle,
                                                           admin: Headers) -> None:
    await create_user(node, admin, "alice")
    body = await (await login_response(node, "alice", USER_PASSWORD)).get_json()
    assert body["username"] == "alice"
    assert body["role"] == "user"


async def test_the_login_token_authenticates_requests(node: NodeHandle) -> None:
    body = await (await login_response(node, "admin", ADMIN_PASSWORD)).get_json()
    r = await node.client.get("/list_containers", headers=bearer(body["token"]))
    assert r.status_code == 200


@pytest.mark.parametrize("username, password", [
    ("admin", "wrong-password"),
    ("admin", ""),
    ("admin", ADMIN_PASSWORD.upper()),
    ("nobody", ADMIN_PASSWORD),
    ("Admin", ADMIN_PASSWORD),
])
async def test_bad_credentials_are_401(node: NodeHandle, username: str, password: str) -> None:
    await assert_error(await login_response(node, username, password), 401, "Unauthorized")


@pytest.mark.parametrize("body", [
    {"username": "admin"},
    {"password": ADMIN_PASSWORD},
    {},
    {"username": "admin", "password": ADMIN_PASSWORD, "extra": 1},
    {"username": 1, "password": ADMIN_PASSWORD},
    {"username": "admin", "password": None},
    {"username": ["admin"], "password": ADMIN_PASSWORD},
], ids=["no-password", "no-username", "empty", "unknown-field", "int-username",
        "null-password", "list-username"])
async def test_malformed_login_bodies_are_400(node: NodeHandle, body: dict[str, Any]) -> None:
    await assert_error(await node.client.post("/auth", json=body), 400, "InvalidRequest")


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"[]", b'"admin"', b"null",
                                 b"\xff\xfe"])
async def test_login_body_that_is_not_a_json_object_is_400(node: NodeHandle, raw: bytes) -> None:
    r = await node.client.post("/auth", data=raw, headers={"Content-Type": "application/json"})
    await assert_error(r, 400, "InvalidRequest")


async def test_repeated_failed_logins_are_throttled_with_retry_after(tmp_path: Path) -> None:
    clock = ManualClock()
    async with running_node(tmp_path / "n", clock=clock, login_max_failures=2) as node:
        for _ in range(2):
            await assert_error(await login_response(node, "admin", "wrong-password"), 401,
                               "Unauthorized")
        r = await login_response(node, "admin", "wrong-password")
        await assert_error(r, 429, "TooManyRequests")
        retry_after = r.headers.get("Retry-After")
        assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1


async def test_a_throttled_login_is_refused_even_with_the_right_password(tmp_path: Path) -> None:
    clock = ManualClock()
    async with running_node(tmp_path / "n", clock=clock, login_max_failures=2) as node:
        for _ in range(2):
            await login_response(node, "admin", "wrong-password")
        r = await login_response(node, "admin", ADMIN_PASSWORD)
        await assert_error(r, 429, "TooManyRequests")
        clock.advance(int(r.headers["Retry-After"]) + 1)
        r = await login_response(node, "admin", ADMIN_PASSWORD)
        assert r.status_code == 200, await r.get_data()


# -- tokens -------------------------------------------------------------------------


def tampered(token: str) -> str:
    """The token with its payload's user name changed but its signature kept."""
    prefix, payload, mac = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["u"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{prefix}.{forged}.{mac}"


@pytest.mark.parametrize("make_header", [
    lambda token: None,
    lambda token: "",
    lambda token: "Bearer",
    lambda token: "Bearer ",
    lambda token: "Bearer garbage",
    lambda token: "Bearer a.b.c",
    lambda token: f"Basic {token}",
    lambda token: token,
    lambda token: f"Bearer {token}x",
    lambda token: f"Bearer {token[:-2]}",
    lambda token: f"Bearer {tampered(token)}",
    lambda token: "Bearer " + "x" * 10000,
    lambda token: "Bearer tökén",
], ids=["missing", "empty", "scheme-only", "scheme-space", "garbage", "three-parts",
        "basic", "no-scheme", "extra-char", "truncated", "tampered-payload", "huge",
        "non-ascii"])
async def test_missing_or_bad_tokens_are_401(node: NodeHandle, make_header: Any) -> None:
    token = await node.login()
    value = make_header(token)
    headers = {} if value is None else {"Authorization": value}
    r = await node.client.get("/list_containers", headers=headers)
    await assert_error(r, 401, "Unauthorized")


async def test_a_token_of_another_cluster_is_401(tmp_path: Path) -> None:
    async with running_node(tmp_path / "other") as other:
        foreign = await other.login()
    async with running_node(tmp_path / "n") as node:
        r = await node.client.get("/list_containers", headers=bearer(foreign))
        await assert_error(r, 401, "Unauthorized")


async def test_an_expired_token_is_401(tmp_path: Path) -> None:
    clock = ManualClock()
    async with running_node(tmp_path / "n", clock=clock, token_ttl_s=60) as node:
        headers = await node.admin_headers()
        assert (await node.client.get("/list_containers", headers=headers)).status_code == 200
        clock.advance(61)
        r = await node.client.get("/list_containers", headers=headers)
        await assert_error(r, 401, "Unauthorized")


PROTECTED = [
    ("POST", "/logout", None),
    ("POST", "/users", {"username": "carol", "password": USER_PASSWORD, "role": "user"}),
    ("GET", "/users", None),
    ("DELETE", "/users?username=carol", None),
    ("POST", "/change_password", {"old_password": ADMIN_PASSWORD, "new_password": "x" * 12}),
    ("POST", "/create_container", {"container": "box"}),
    ("DELETE", "/delete_container?container=box", None),
    ("GET", "/list_containers", None),
    ("POST", "/grant_access", {"container": "box", "username": "admin", "permission": "read"}),
    ("POST", "/revoke_access", {"container": "box", "username": "admin"}),
    ("GET", "/get_data?container=box&blob=b", None),
    ("HEAD", "/get_data?container=box&blob=b", None),
    ("DELETE", "/delete_data?container=box&blob=b", None),
    ("GET", "/list_blobs?container=box", None),
    ("GET", "/cluster", None),
]


@pytest.mark.parametrize("method, path, body", PROTECTED,
                         ids=[f"{m} {p.split('?')[0]}" for m, p, _ in PROTECTED])
async def test_every_protected_endpoint_needs_a_token(node: NodeHandle, method: str, path: str,
                                                      body: Any) -> None:
    kwargs = {} if body is None else {"json": body}
    r = await node.client.open(path, method=method, **kwargs)
    assert r.status_code == 401
    if method != "HEAD":
        await assert_error(r, 401, "Unauthorized")


async def test_put_data_needs_a_token(node: NodeHandle) -> None:
    await assert_error(await node.put_blob("box", "b", b"data", {}), 401, "Unauthorized")


@pytest.mark.parametrize("method, path", [("POST", "/auth"), ("GET", "/health"),
                                          ("GET", "/metrics")])
async def test_auth_health_and_metrics_need_no_token(node: NodeHandle, method: str,
                                                     path: str) -> None:
    kwargs = ({"json": {"username": "admin", "password": ADMIN_PASSWORD}}
              if path == "/auth" else {})
    r = await node.client.open(path, method=method, **kwargs)
    assert r.status_code == 200


# -- POST /logout -------------------------------------------------------------------


async def test_logout_is_204_and_revokes_the_token(node: NodeHandle) -> None:
    headers = bearer(await node.login())
    r = await node.client.post("/logout", headers=headers)
    assert r.status_code == 204
    assert await r.get_data() == b""
    await assert_error(await node.client.get("/list_containers", headers=headers), 401,
                       "Unauthorized")


async def test_logout_revokes_every_earlier_token_of_that_user(node: NodeHandle) -> None:
    first, second = bearer(await node.login()), bearer(await node.login())
    assert (await node.client.post("/logout", headers=second)).status_code == 204
    for headers in (first, second):
        await assert_error(await node.client.get("/list_containers", headers=headers), 401,
                           "Unauthorized")


async def test_a_new_login_after_logout_works(node: NodeHandle) -> None:
    assert (await node.client.post("/logout", headers=bearer(await node.login()))
            ).status_code == 204
    r = await node.client.get("/list_containers", headers=bearer(await node.login()))
    assert r.status_code == 200


async def test_logout_leaves_other_users_tokens_alone(node: NodeHandle, admin: Headers,
                                                      alice: Headers) -> None:
    assert (await node.client.post("/logout", headers=alice)).status_code == 204
    assert (await node.client.get("/list_containers", headers=admin)).status_code == 200


# -- POST /change_password ----------------------------------------------------------


NEW_PASSWORD = "brand-new-password"


async def change_password(node: NodeHandle, headers: Headers, **body: Any) -> Any:
    return await node.client.post("/change_password", headers=headers, json=body)


async def test_change_own_password(node: NodeHandle, alice: Headers) -> None:
    r = await change_password(node, alice, old_password=USER_PASSWORD, new_password=NEW_PASSWORD)
    assert r.status_code == 204
    assert await r.get_data() == b""
    assert (await login_response(node, "alice", NEW_PASSWORD)).status_code == 200
    await assert_error(await login_response(node, "alice", USER_PASSWORD), 401, "Unauthorized")


async def test_change_own_password_revokes_older_tokens(node: NodeHandle, alice: Headers) -> None:
    other_token = bearer(await node.login("alice", USER_PASSWORD))
    r = await change_password(node, alice, old_password=USER_PASSWORD, new_password=NEW_PASSWORD)
    assert r.status_code == 204
    for headers in (alice, other_token):
        await assert_error(await node.client.get("/list_containers", headers=headers), 401,
                           "Unauthorized")
    fresh = bearer(await node.login("alice", NEW_PASSWORD))
    assert (await node.client.get("/list_containers", headers=fresh)).status_code == 200


async def test_change_own_password_with_the_own_username_given(node: NodeHandle,
                                                               alice: Headers) -> None:
    r = await change_password(node, alice, username="alice", old_password=USER_PASSWORD,
                              new_password=NEW_PASSWORD)
    assert r.status_code == 204
    assert (await login_response(node, "alice", NEW_PASSWORD)).status_code == 200


async def test_a_wrong_old_password_is_403_and_changes_nothing(node: NodeHandle,
                                                              alice: Headers) -> None:
    r = await change_password(node, alice, old_password="not-the-password",
                              new_password=NEW_PASSWORD)
    await assert_error(r, 403, "Forbidden")
    assert (await node.client.get("/list_containers", headers=alice)).status_code == 200
    assert (await login_response(node, "alice", USER_PASSWORD)).status_code == 200
    await assert_error(await login_response(node, "alice", NEW_PASSWORD), 401, "Unauthorized")


async def test_admin_sets_another_users_password(node: NodeHandle, admin: Headers,
                                                 alice: Headers) -> None:
    r = await change_password(node, admin, username="alice", new_password=NEW_PASSWORD)
    assert r.status_code == 204
    await assert_error(await node.client.get("/list_containers", headers=alice), 401,
                       "Unauthorized")
    assert (await login_response(node, "alice", NEW_PASSWORD)).status_code == 200
    await assert_error(await login_response(node, "alice", USER_PASSWORD), 401, "Unauthorized")
    # The admin's own token is not affected.
    assert (await node.client.get("/users", headers=admin)).status_code == 200


async def test_admin_setting_an_unknown_users_password_is_404(node: NodeHandle,
                                                             admin: Headers) -> None:
    r = await change_password(node, admin, username="nobody", new_password=NEW_PASSWORD)
    await assert_error(r, 404, "UserNotFound")


@pytest.mark.parametrize("with_old_password", [False, True])
async def test_a_user_may_not_change_another_users_password(node: NodeHandle, alice: Headers,
                                                            bob: Headers,
                                                            with_old_password: bool) -> None:
    body: dict[str, Any] = {"username": "bob", "new_password": NEW_PASSWORD}
    if with_old_password:
        body["old_password"] = USER_PASSWORD
    await assert_error(await change_password(node, alice, **body), 403, "Forbidden")
    assert (await login_response(node, "bob", USER_PASSWORD)).status_code == 200
    assert (await node.client.get("/list_containers", headers=bob)).status_code == 200


async def test_a_user_must_give_the_old_password(node: NodeHandle, alice: Headers) -> None:
    r = await change_password(node, alice, new_password=NEW_PASSWORD)
    assert r.status_code in (400, 403)
    assert (await login_response(node, "alice", USER_PASSWORD)).status_code == 200


@pytest.mark.parametrize("body", [
    {"old_password": USER_PASSWORD, "new_password": "short"},
    {"old_password": USER_PASSWORD, "new_password": "1234567"},
    {"old_password": USER_PASSWORD, "new_password": ""},
    {"old_password": USER_PASSWORD, "new_password": 12345678},
    {"old_password": USER_PASSWORD, "new_password": None},
    {"old_password": USER_PASSWORD},
    {"old_password": 123, "new_password": NEW_PASSWORD},
    {"old_password": USER_PASSWORD, "new_password": NEW_PASSWORD, "role": "admin"},
], ids=["short", "seven-chars", "empty", "int", "null", "missing-new", "int-old",
        "unknown-field"])
async def test_bad_change_password_bodies_are_400(node: NodeHandle, alice: Headers,
                                                  body: dict[str, Any]) -> None:
    await assert_error(await change_password(node, alice, **body), 400, "InvalidRequest")
    assert (await login_response(node, "alice", USER_PASSWORD)).status_code == 200


async def test_a_password_of_exactly_the_minimum_length_is_accepted(node: NodeHandle,
                                                                   alice: Headers) -> None:
    r = await change_password(node, alice, old_password=USER_PASSWORD, new_password="12345678")
    assert r.status_code == 204
    assert (await login_response(node, "alice", "12345678")).status_code == 200


# -- /users -------------------------------------------------------------------------


async def test_create_user_is_201_with_username_role_and_created_at(node: NodeHandle,
                                                                   admin: Headers) -> None:
    r = await node.client.post("/users", headers=admin, json={
        "username": "alice", "password": USER_PASSWORD, "role": "user"})
    assert r.status_code == 201
    assert r.headers["Content-Type"].startswith("application/json")
    body = await r.get_json()
    assert set(body) == {"username", "role", "created_at"}
    assert body["username"] == "alice"
    assert body["role"] == "user"
    assert_recent(body["created_at"])


async def test_create_admin_user_who_can_then_administer(node: NodeHandle,
                                                         admin: Headers) -> None:
    r = await node.client.post("/users", headers=admin, json={
        "username": "root2", "password": USER_PASSWORD, "role": "admin"})
    assert r.status_code == 201
    assert (await r.get_json())["role"] == "admin"
    headers = bearer(await node.login("root2", USER_PASSWORD))
    assert (await node.client.get("/users", headers=headers)).status_code == 200


@pytest.mark.parametrize("name", ["alice", "admin"])
async def test_creating_an_existing_user_is_409(node: NodeHandle, admin: Headers,
                                                name: str) -> None:
    await node.client.post("/users", headers=admin, json={
        "username": "alice", "password": USER_PASSWORD, "role": "user"})
    r = await node.client.post("/users", headers=admin, json={
        "username": name, "password": "another-password", "role": "admin"})
    await assert_error(r, 409, "UserExists")
    if name == "alice":
        # The existing user keeps its password and role.
        body = await (await login_response(node, "alice", USER_PASSWORD)).get_json()
        assert body["role"] == "user"


async def test_a_user_may_not_create_users(node: NodeHandle, alice: Headers) -> None:
    r = await node.client.post("/users", headers=alice, json={
        "username": "carol", "password": USER_PASSWORD, "role": "admin"})
    await assert_error(r, 403, "Forbidden")
    await assert_error(await login_response(node, "carol", USER_PASSWORD), 401, "Unauthorized")


@pytest.mark.parametrize("name", ["", "-alice", ".alice", "has space", "a" * 65, "bob/x",
                                  "é", "al\x00ice", "al\nice", "a:b"])
async def test_invalid_usernames_are_400_invalid_name(node: NodeHandle, admin: Headers,
                                                      name: str) -> None:
    r = await node.client.post("/users", headers=admin, json={
        "username": name, "password": USER_PASSWORD, "role": "user"})
    await assert_error(r, 400, "InvalidName")


@pytest.mark.parametrize("name", ["a", "A" * 64, "alice.smith", "a_b", "x@example.com",
                                  "Mixed-Case9"])
async def test_valid_usernames_are_accepted(node: NodeHandle, admin: Headers, name: str) -> None:
    await create_user(node, admin, name)


@pytest.mark.parametrize("body", [
    {"username": 123, "password": USER_PASSWORD, "role": "user"},
    {"username": None, "password": USER_PASSWORD, "role": "user"},
    {"username": "alice", "password": "short", "role": "user"},
    {"username": "alice", "password": "1234567", "role": "user"},
    {"username": "alice", "password": "", "role": "user"},
    {"username": "alice", "password": 12345678, "role": "user"},
    {"username": "alice", "password": "x" * 1025, "role": "user"},
    {"username": "alice", "password": USER_PASSWORD, "role": "root"},
    {"username": "alice", "password": USER_PASSWORD, "role": "Admin"},
    {"username": "alice", "password": USER_PASSWORD, "role": ""},
    {"username": "alice", "password": USER_PASSWORD, "role": 1},
    {"username": "alice", "password": USER_PASSWORD, "role": None},
    {"username": "alice", "password": USER_PASSWORD, "role": ["admin"]},
    {"password": USER_PASSWORD, "role": "user"},
    {"username": "alice", "role": "user"},
    {"username": "alice", "password": USER_PASSWORD, "role": "user", "extra": True},
], ids=["int-name", "null-name", "short-password", "seven-char-password", "empty-password",
        "int-password", "huge-password", "role-root", "role-Admin", "role-empty", "role-int",
        "role-null", "role-list", "no-username", "no-password", "unknown-field"])
async def test_bad_create_user_bodies_are_400_invalid_request(node: NodeHandle, admin: Headers,
                                                             body: dict[str, Any]) -> None:
    r = await node.client.post("/users", headers=admin, json=body)
    await assert_error(r, 400, "InvalidRequest")
    users = (await (await node.client.get("/users", headers=admin)).get_json())["users"]
    assert [u["username"] for u in users] == ["admin"]


async def test_list_users_shows_every_user(node: NodeHandle, admin: Headers) -> None:
    await create_user(node, admin, "bob")
    await create_user(node, admin, "alice", role="admin")
    r = await node.client.get("/users", headers=admin)
    assert r.status_code == 200
    body = await r.get_json()
    assert set(body) == {"users"}
    by_name = {u["username"]: u for u in body["users"]}
    assert set(by_name) == {"admin", "alice", "bob"}
    assert len(body["users"]) == 3
    for user in body["users"]:
        assert set(user) == {"username", "role", "created_at"}, "no password hash, no extras"
        parse_rfc3339(user["created_at"])
    assert by_name["admin"]["role"] == "admin"
    assert by_name["alice"]["role"] == "admin"
    assert by_name["bob"]["role"] == "user"


async def test_a_user_may_not_list_users(node: NodeHandle, alice: Headers) -> None:
    await assert_error(await node.client.get("/users", headers=alice), 403, "Forbidden")


async def test_delete_user_is_204_and_the_user_is_gone(node: NodeHandle, admin: Headers,
                                                       alice: Headers) -> None:
    r = await node.client.delete("/users?username=alice", headers=admin)
    assert r.status_code == 204
    assert await r.get_data() == b""
    users = (await (await node.client.get("/users", headers=admin)).get_json())["users"]
    assert "alice" not in [u["username"] for u in users]
    await assert_error(await login_response(node, "alice", USER_PASSWORD), 401, "Unauthorized")


async def test_a_deleted_users_token_is_401(node: NodeHandle, admin: Headers,
                                            alice: Headers) -> None:
    assert (await node.client.delete("/users?username=alice", headers=admin)).status_code == 204
    await assert_error(await node.client.get("/list_containers", headers=alice), 401,
                       "Unauthorized")


async def test_a_deleted_users_token_stays_401_after_the_name_is_reused(
        node: NodeHandle, admin: Headers, alice: Headers) -> None:
    assert (await node.client.delete("/users?username=alice", headers=admin)).status_code == 204
    await create_user(node, admin, "alice", password="another-password")
    await assert_error(await node.client.get("/list_containers", headers=alice), 401,
                       "Unauthorized")


async def test_deleting_an_unknown_user_is_404(node: NodeHandle, admin: Headers) -> None:
    r = await node.client.delete("/users?username=nobody", headers=admin)
    await assert_error(r, 404, "UserNotFound")


async def test_deleting_a_user_twice_is_404_the_second_time(node: NodeHandle, admin: Headers,
                                                            alice: Headers) -> None:
    assert (await node.client.delete("/users?username=alice", headers=admin)).status_code == 204
    r = await node.client.delete("/users?username=alice", headers=admin)
    await assert_error(r, 404, "UserNotFound")


async def test_a_user_may_not_delete_users(node: NodeHandle, alice: Headers,
                                           bob: Headers) -> None:
    await assert_error(await node.client.delete("/users?username=bob", headers=alice), 403,
                       "Forbidden")
    assert (await node.client.get("/list_containers", headers=bob)).status_code == 200


@pytest.mark.parametrize("query, code", [
    ("", "InvalidRequest"),
    ("user=alice", "InvalidRequest"),
    ("username=", "InvalidName"),
    ("username=-x", "InvalidName"),
    ("username=a%00b", "InvalidName"),
    ("username=%FF", "InvalidName"),
    ("username=alice&username=bob", "InvalidRequest"),
])
async def test_bad_delete_user_queries_are_400(node: NodeHandle, admin: Headers, query: str,
                                               code: str) -> None:
    await assert_error(await node.client.delete(f"/users?{query}", headers=admin), 400, code)


async def test_the_builtin_admin_cannot_be_deleted(node: NodeHandle, admin: Headers) -> None:
    r = await node.client.delete("/users?username=admin", headers=admin)
    assert 400 <= r.status_code < 500
    assert (await login_response(node, "admin", ADMIN_PASSWORD)).status_code == 200


async def test_a_recreated_user_gets_none_of_the_old_users_containers_or_grants(
        node: NodeHandle, admin: Headers, alice: Headers) -> None:
    await create_container(node, alice, "alice-own")
    await create_container(node, admin, "shared")
    await grant(node, admin, "shared", "alice", "write")
    assert (await node.client.delete("/users?username=alice", headers=admin)).status_code == 204

    new_alice = await create_user(node, admin, "alice", password="another-password")
    r = await node.client.get("/list_containers", headers=new_alice)
    assert r.status_code == 200
    assert (await r.get_json())["containers"] == []
    for container in ("alice-own", "shared"):
        r = await node.client.get(f"/list_blobs?{q(container=container)}", headers=new_alice)
        await assert_error(r, 403, "Forbidden")
        r = await node.put_blob(container, "b", b"data", new_alice)
        await assert_error(r, 403, "Forbidden")
    r = await node.client.delete("/delete_container?container=alice-own", headers=new_alice)
    await assert_error(r, 403, "Forbidden")
    r = await node.client.post("/grant_access", headers=new_alice, json={
        "container": "alice-own", "username": "alice", "permission": "write"})
    await assert_error(r, 403, "Forbidden")
