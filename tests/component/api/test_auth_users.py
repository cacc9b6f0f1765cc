"""/auth, /logout, /users and /change_password (API.md, "Authentication and users")."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from node.clock import ManualClock
from node.testing.inprocess import ADMIN_PASSWORD, NodeHandle, running_node

from api_support import (USER_PASSWORD, Problems, assert_error, assert_recent, create_container,
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


BAD_CREDENTIALS = [
    ("admin", "wrong-password"),
    ("admin", ""),
    ("admin", ADMIN_PASSWORD.upper()),
    ("admin", ADMIN_PASSWORD + " "),
    ("nobody", ADMIN_PASSWORD),
    ("Admin", ADMIN_PASSWORD),
    ("", ADMIN_PASSWORD),
]


async def test_bad_credentials_are_401(tmp_path: Path) -> None:
    async with running_node(tmp_path / "n", login_max_failures=100) as node:
        problems = Problems()
        for username, password in BAD_CREDENTIALS:
            await problems.expect_error((username, password),
                                        await login_response(node, username, password),
                                        401, "Unauthorized")
        problems.assert_none()


async def test_unknown_user_and_wrong_password_answer_the_same(node: NodeHandle) -> None:
    unknown = await (await login_response(node, "nobody", "some-password")).get_json()
    wrong = await (await login_response(node, "admin", "some-password")).get_json()
    assert unknown == wrong, "the answer must not tell which user names exist"


async def test_login_bodies_missing_a_field_or_with_unknown_fields_are_400(
        node: NodeHandle) -> None:
    problems = Problems()
    for body in [{"username": "admin"}, {"password": ADMIN_PASSWORD}, {},
                 {"username": "admin", "password": ADMIN_PASSWORD, "extra": 1}]:
        await problems.expect_error(body, await node.client.post("/auth", json=body), 400,
                                    "InvalidRequest")
    problems.assert_none()


async def test_login_bodies_with_wrongly_typed_fields_are_400(node: NodeHandle) -> None:
    problems = Problems()
    for body in [{"username": 1, "password": ADMIN_PASSWORD},
                 {"username": "admin", "password": None},
                 {"username": ["admin"], "password": ADMIN_PASSWORD},
                 {"username": "admin", "password": {"x": ADMIN_PASSWORD}}]:
        await problems.expect_error(body, await node.client.post("/auth", json=body), 400,
                                    "InvalidRequest")
    problems.assert_none()


async def test_login_bodies_that_are_not_json_objects_are_400(node: NodeHandle) -> None:
    problems = Problems()
    for raw in [b"", b"{", b"not json", b"[]", b'"admin"', b"null", b"1", b"\xff\xfe",
                b'{"username": "admin", "password": "admin-password"} trailing']:
        r = await node.client.post("/auth", data=raw,
                                   headers={"Content-Type": "application/json"})
        await problems.expect_error(raw, r, 400, "InvalidRequest")
    problems.assert_none()


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


async def test_failed_logins_from_one_address_throttle_every_user_name(tmp_path: Path) -> None:
    clock = ManualClock()
    async with running_node(tmp_path / "n", clock=clock, login_max_failures=2) as node:
        await assert_error(await login_response(node, "nobody-1", "wrong-password"), 401)
        await assert_error(await login_response(node, "nobody-2", "wrong-password"), 401)
        r = await login_response(node, "nobody-3", "wrong-password")
        await assert_error(r, 429, "TooManyRequests")
        assert int(r.headers["Retry-After"]) >= 1


# -- tokens -------------------------------------------------------------------------


def tampered(token: str) -> str:
    """The token with its payload's user name changed but its signature kept."""
    prefix, payload, mac = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["u"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{prefix}.{forged}.{mac}"


async def test_missing_or_bad_tokens_are_401(node: NodeHandle) -> None:
    token = await node.login()
    cases = {
        "missing": None, "empty": "", "scheme-only": "Bearer", "scheme-space": "Bearer ",
        "garbage": "Bearer garbage", "three-parts": "Bearer a.b.c", "basic": f"Basic {token}",
        "no-scheme": token, "extra-char": f"Bearer {token}x",
        "truncated": f"Bearer {token[:-2]}", "tampered-payload": f"Bearer {tampered(token)}",
        "huge": "Bearer " + "x" * 10000, "non-ascii": "Bearer tökén",
        "bad-base64": "Bearer bst1.!!!.???",
    }
    problems = Problems()
    for label, value in cases.items():
        headers = {} if value is None else {"Authorization": value}
        r = await node.client.get("/list_containers", headers=headers)
        await problems.expect_error(label, r, 401, "Unauthorized")
    problems.assert_none()
    # The good token still works.
    assert (await node.client.get("/list_containers", headers=bearer(token))).status_code == 200


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


async def test_every_protected_endpoint_needs_a_token(node: NodeHandle) -> None:
    problems = Problems()
    for method, path, body in PROTECTED:
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        r = await node.client.open(path, method=method, **kwargs)
        await problems.expect_error(f"{method} {path}", r, 401,
                                    None if method == "HEAD" else "Unauthorized")
    await problems.expect_error("POST /put_data", await node.put_blob("box", "b", b"data", {}),
                                401, "Unauthorized")
    problems.assert_none()


async def test_auth_health_and_metrics_need_no_token(node: NodeHandle) -> None:
    r = await node.client.post("/auth", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 200
    assert (await node.client.get("/health")).status_code == 200
    assert (await node.client.get("/metrics")).status_code == 200


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


async def test_the_bearer_scheme_is_case_insensitive(node: NodeHandle) -> None:
    token = await node.login()
    for scheme in ("bearer", "BEARER"):
        r = await node.client.get("/list_containers",
                                  headers={"Authorization": f"{scheme} {token}"})
        assert r.status_code == 200, scheme


async def test_bad_change_password_bodies_are_400(node: NodeHandle, alice: Headers) -> None:
    problems = Problems()
    for body in [
        {"old_password": USER_PASSWORD, "new_password": "short"},
        {"old_password": USER_PASSWORD, "new_password": "1234567"},
        {"old_password": USER_PASSWORD, "new_password": ""},
        {"old_password": USER_PASSWORD, "new_password": "x" * 1025},
        {"old_password": USER_PASSWORD, "new_password": "with\x00nul-inside"},
        {"old_password": USER_PASSWORD, "new_password": 12345678},
        {"old_password": USER_PASSWORD, "new_password": None},
        {"old_password": USER_PASSWORD},
        {"old_password": 123, "new_password": NEW_PASSWORD},
        {"old_password": USER_PASSWORD, "new_password": NEW_PASSWORD, "role": "admin"},
    ]:
        await problems.expect_error(body, await change_password(node, alice, **body), 400,
                                    "InvalidRequest")
    problems.assert_none()
    assert (await node.client.get("/list_containers", headers=alice)).status_code == 200
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


async def test_invalid_usernames_are_400_invalid_name(node: NodeHandle, admin: Headers) -> None:
    problems = Problems()
    for name in ["", "-alice", ".alice", "has space", "a" * 65, "bob/x", "é", "al\x00ice",
                 "al\nice", "a:b", "\nalice", "alice "]:
        r = await node.client.post("/users", headers=admin, json={
            "username": name, "password": USER_PASSWORD, "role": "user"})
        await problems.expect_error(name, r, 400, "InvalidName")
    problems.assert_none()


async def test_a_username_with_a_trailing_newline_is_400_invalid_name(
        node: NodeHandle, admin: Headers, alice: Headers) -> None:
    r = await node.client.post("/users", headers=admin, json={
        "username": "alice\n", "password": USER_PASSWORD, "role": "user"})
    await assert_error(r, 400, "InvalidName")
    await assert_error(await node.client.delete("/users?username=alice%0A", headers=admin),
                       400, "InvalidName")


async def test_valid_usernames_are_accepted(node: NodeHandle, admin: Headers) -> None:
    names = ["a", "A" * 64, "alice.smith", "a_b", "x@example.com", "Mixed-Case9", "7"]
    for name in names:
        await create_user(node, admin, name)
    users = (await (await node.client.get("/users", headers=admin)).get_json())["users"]
    assert {u["username"] for u in users} == {"admin", *names}


BAD_CREATE_USER_BODIES = [
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
]


async def test_bad_create_user_bodies_are_400_invalid_request(node: NodeHandle,
                                                             admin: Headers) -> None:
    problems = Problems()
    for body in BAD_CREATE_USER_BODIES:
        r = await node.client.post("/users", headers=admin, json=body)
        await problems.expect_error(body, r, 400, "InvalidRequest")
    problems.assert_none()
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


async def test_bad_delete_user_queries_are_400(node: NodeHandle, admin: Headers,
                                               alice: Headers) -> None:
    problems = Problems()
    for query, code in [
        ("", "InvalidRequest"),
        ("user=alice", "InvalidRequest"),
        ("username=", "InvalidName"),
        ("username=-x", "InvalidName"),
        ("username=a%00b", "InvalidName"),
        ("username=%FF", "InvalidName"),
        ("username=alice&username=alice", "InvalidRequest"),
        ("username=al%ZZice", "InvalidRequest"),
    ]:
        r = await node.client.delete(f"/users?{query}", headers=admin)
        await problems.expect_error(query, r, 400, code)
    problems.assert_none()
    assert (await node.client.get("/list_containers", headers=alice)).status_code == 200


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
