"""Bad input anywhere: malformed JSON, oversized bodies, unknown endpoints, wrong methods.

API.md: "Never a 500 for bad input, never a traceback"; every error is
``{"error": {"code", "message"}}`` (checked for every answer by conftest.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from node.api.errors import error_response
from node.errors import MethodNotAllowed
from node.testing.inprocess import ADMIN_PASSWORD, NodeHandle

from api_support import USER_PASSWORD, Problems, assert_error, create_user, put

Headers = dict[str, str]

# Each JSON endpoint with a body that is valid for it, so only the mangling varies.
JSON_ENDPOINTS: dict[str, dict[str, Any]] = {
    "/auth": {"username": "admin", "password": ADMIN_PASSWORD},
    "/users": {"username": "carol", "password": USER_PASSWORD, "role": "user"},
    "/change_password": {"username": "alice", "new_password": "new-password-1"},
    "/create_container": {"container": "box"},
    "/grant_access": {"container": "box", "username": "alice", "permission": "read"},
    "/revoke_access": {"container": "box", "username": "alice"},
}

NOT_JSON_OBJECTS = [
    b"", b" ", b"{", b"}", b"{'container': 'box'}", b"not json", b"[]", b'["box"]', b"null",
    b"true", b"1", b'"box"', b"\xff\xfe{}", b"\xef\xbb\xbf{}", b"{}{}", b'{"a": 1,}',
    b'{"a": NaN',
]


@pytest.fixture
async def setup(node: NodeHandle, admin: Headers) -> None:
    """A user ``alice`` and a container ``box`` so every JSON endpoint's good body works."""
    await create_user(node, admin, "alice")
    r = await node.client.post("/create_container", json={"container": "box"}, headers=admin)
    assert r.status_code == 201


@pytest.mark.parametrize("path", list(JSON_ENDPOINTS))
async def test_bodies_that_are_not_json_objects_are_400(node: NodeHandle, admin: Headers,
                                                        setup: None, path: str) -> None:
    problems = Problems()
    for raw in NOT_JSON_OBJECTS:
        r = await node.client.post(path, data=raw, headers={
            **admin, "Content-Type": "application/json"})
        await problems.expect_error(raw, r, 400, "InvalidRequest")
    problems.assert_none()


@pytest.mark.parametrize("path", list(JSON_ENDPOINTS))
async def test_unknown_fields_are_400(node: NodeHandle, admin: Headers, setup: None,
                                      path: str) -> None:
    body = {**JSON_ENDPOINTS[path], "unexpected": "field"}
    await assert_error(await node.client.post(path, json=body, headers=admin), 400,
                       "InvalidRequest")


@pytest.mark.parametrize("path", list(JSON_ENDPOINTS))
async def test_every_missing_required_field_is_400(node: NodeHandle, admin: Headers,
                                                   setup: None, path: str) -> None:
    good = JSON_ENDPOINTS[path]
    optional = {"/change_password": {"username"}, "/users": {"role"}}.get(path, set())
    problems = Problems()
    for field in set(good) - optional:
        body = {k: v for k, v in good.items() if k != field}
        r = await node.client.post(path, json=body, headers=admin)
        await problems.expect_error(f"without {field}", r, 400, "InvalidRequest")
    problems.assert_none()


# /auth's wrongly typed fields are in test_auth_users.py.
@pytest.mark.parametrize("path", [p for p in JSON_ENDPOINTS if p != "/auth"])
async def test_wrongly_typed_fields_are_400(node: NodeHandle, admin: Headers, setup: None,
                                            path: str) -> None:
    problems = Problems()
    value: object  # a JSON value of every type but the right one
    for field in JSON_ENDPOINTS[path]:
        for value in [None, 17, 1.5, True, [], {}, ["x"]]:
            body = {**JSON_ENDPOINTS[path], field: value}
            r = await node.client.post(path, json=body, headers=admin)
            await problems.expect_error(f"{field}={value!r}", r, 400, "InvalidRequest")
    problems.assert_none()


@pytest.mark.parametrize("path", list(JSON_ENDPOINTS))
async def test_deeply_nested_json_is_400(node: NodeHandle, admin: Headers, setup: None,
                                         path: str) -> None:
    problems = Problems()
    for raw in [b"[" * 50_000, b'{"a":' * 10_000, b'{"container": ' + b"[" * 5000 + b"]" * 5000
                + b"}"]:
        r = await node.client.post(path, data=raw, headers=admin)
        await problems.expect_error(raw[:20], r, 400, "InvalidRequest")
    problems.assert_none()


LONE_SURROGATES = '"\\ud800\\udc00\\ud800\\ud800\\ud800\\ud800\\ud800\\ud800\\ud800"'


@pytest.mark.parametrize("path, template", [
    ("/users", '{"username": "carol", "password": %s, "role": "user"}'),
    ("/change_password", '{"username": "alice", "new_password": %s}'),
    ("/change_password", '{"old_password": %s, "new_password": "new-password-1"}'),
    ("/auth", '{"username": "admin", "password": %s}'),
], ids=["create-user", "admin-set-password", "old-password", "login"])
async def test_passwords_that_are_not_valid_unicode_are_refused(
        node: NodeHandle, admin: Headers, setup: None, path: str, template: str) -> None:
    raw = (template % LONE_SURROGATES).encode()
    r = await node.client.post(path, data=raw, headers=admin)
    if path == "/auth":
        assert r.status_code in (400, 401)
    elif "old_password" in template:
        assert r.status_code in (400, 403)
    else:
        await assert_error(r, 400, "InvalidRequest")


@pytest.mark.parametrize("name_field", [("/users", "username"), ("/create_container",
                                                                 "container")])
async def test_names_with_lone_surrogates_are_400(node: NodeHandle, admin: Headers,
                                                  name_field: tuple[str, str]) -> None:
    path, field = name_field
    body = {"/users": {"password": USER_PASSWORD, "role": "user"}}.get(path, {})
    raw = ('{"%s": "ab\\ud800c"%s}' % (field, "".join(f', "{k}": "{v}"' for k, v in
                                                     body.items()))).encode()
    await assert_error(await node.client.post(path, data=raw, headers=admin), 400,
                       "InvalidName")


# -- size limits --------------------------------------------------------------------


def padded_body(total: int) -> bytes:
    """A JSON object of exactly ``total`` bytes: one long (invalid) container name."""
    head, tail = b'{"container": "', b'"}'
    return head + b"a" * (total - len(head) - len(tail)) + tail


@pytest.mark.parametrize("path", list(JSON_ENDPOINTS))
@pytest.mark.parametrize("declare_length", [True, False])
async def test_json_bodies_over_64_kib_are_413(node: NodeHandle, admin: Headers, path: str,
                                               declare_length: bool) -> None:
    body = padded_body(64 * 1024 + 1)
    headers = {**admin, "Content-Type": "application/json"}
    if declare_length:
        headers["Content-Length"] = str(len(body))
    await assert_error(await node.client.post(path, data=body, headers=headers), 413,
                       "TooLarge")


async def test_a_json_body_of_exactly_64_kib_is_read(node: NodeHandle, admin: Headers) -> None:
    r = await node.client.post("/create_container", data=padded_body(64 * 1024),
                               headers=admin)
    await assert_error(r, 400, "InvalidName")


async def test_a_much_larger_json_body_is_413(node: NodeHandle, admin: Headers) -> None:
    body = padded_body(5 * 1024 * 1024)
    await assert_error(await node.client.post("/create_container", data=body, headers=admin),
                       413, "TooLarge")


async def test_blob_bodies_are_not_limited_to_64_kib(node: NodeHandle, admin: Headers,
                                                     box: str) -> None:
    data = b"z" * (256 * 1024 + 3)
    assert (await put(node, admin, box, "big", data))["size"] == len(data)


async def test_a_huge_query_string_is_400_not_500(node: NodeHandle, admin: Headers,
                                                  box: str) -> None:
    r = await node.client.get("/list_blobs?container=box&prefix=" + "a" * 70_000, headers=admin)
    assert 400 <= r.status_code < 500
    await assert_error(r, r.status_code)


# -- routing ------------------------------------------------------------------------


async def test_unknown_endpoints_are_404_json(node: NodeHandle, admin: Headers) -> None:
    problems = Problems()
    for method, path in [("GET", "/nope"), ("GET", "/"), ("POST", "/nope"),
                         ("GET", "/get_data/extra"), ("GET", "/GET_DATA"),
                         ("DELETE", "/users/alice"), ("GET", "/list_blobs/"),
                         ("GET", "/%FF"), ("GET", "/.."), ("PUT", "/blobs/box/b")]:
        r = await node.client.open(path, method=method, headers=admin)
        await problems.expect_error(f"{method} {path}", r, 404)
    problems.assert_none()


async def test_wrong_methods_are_405_json(node: NodeHandle, admin: Headers) -> None:
    problems = Problems()
    for method, path in [
        ("GET", "/auth"), ("PUT", "/auth"), ("GET", "/logout"), ("PUT", "/users"),
        ("PATCH", "/users"), ("GET", "/change_password"), ("GET", "/create_container"),
        ("PUT", "/create_container"), ("POST", "/delete_container"),
        ("POST", "/list_containers"), ("GET", "/grant_access"), ("DELETE", "/revoke_access"),
        ("GET", "/put_data"), ("PUT", "/put_data"), ("POST", "/get_data"),
        ("PUT", "/get_data"), ("DELETE", "/get_data"), ("GET", "/delete_data"),
        ("POST", "/delete_data"), ("POST", "/list_blobs"), ("DELETE", "/list_blobs"),
        ("POST", "/health"), ("DELETE", "/cluster"), ("POST", "/metrics"),
        ("OPTIONS", "/put_data"), ("TRACE", "/get_data"),
    ]:
        r = await node.client.open(f"{path}?container=box&blob=b", method=method,
                                   headers=admin)
        await problems.expect_error(f"{method} {path}", r, 405)
    problems.assert_none()


def test_a_405_answer_names_the_allowed_methods() -> None:
    """RFC 9110: a 405 MUST carry ``Allow`` (found by the fuzzer, tests/e2e/test_fuzz.py)."""
    response = error_response(MethodNotAllowed("no", allowed=["POST", "GET", "HEAD", "GET"]))
    assert (response.status_code, response.headers["Allow"]) == (405, "GET, HEAD, POST")
    assert "Allow" not in error_response(MethodNotAllowed("no")).headers


async def test_wrong_methods_are_405_with_the_allowed_methods(node: NodeHandle,
                                                              admin: Headers) -> None:
    problems = Problems()
    for path, allowed in {"/users": "DELETE, GET, HEAD, POST", "/get_data": "GET, HEAD",
                          "/put_data": "POST", "/auth": "POST"}.items():
        for method in ("PATCH", "OPTIONS", "HEAD" if "HEAD" not in allowed else "PUT"):
            r = await node.client.open(path, method=method, headers=admin)
            problems.check(f"{method} {path}",
                           (r.status_code, r.headers.get("Allow")) == (405, allowed),
                           f"{r.status_code} Allow: {r.headers.get('Allow')}")
    problems.assert_none()


async def test_head_of_a_wrong_method_is_405_without_a_body(node: NodeHandle,
                                                            admin: Headers) -> None:
    r = await node.client.head("/put_data", headers=admin)
    assert r.status_code == 405
    assert await r.get_data() == b""


# -- headers ------------------------------------------------------------------------


async def test_a_bad_content_type_on_put_is_400(node: NodeHandle, admin: Headers,
                                                box: str) -> None:
    problems = Problems()
    for value in ["text/é", "x" * 300]:
        await problems.expect_error(value, await node.put_blob(box, "b", b"x", admin, **{
            "Content-Type": value}), 400, "InvalidRequest")
    problems.assert_none()
    await assert_error(await node.client.get("/get_data?container=box&blob=b", headers=admin),
                       404, "BlobNotFound")


async def test_malformed_conditional_headers_are_400_not_500(node: NodeHandle, admin: Headers,
                                                             box: str) -> None:
    await put(node, admin, box, "b", b"data")
    problems = Problems()
    for name, value in [("If-Match", '""'), ("If-None-Match", ","), ("If-Match", '"a"b"'),
                        ("If-None-Match", ", ".join(['"x"'] * 500))]:
        r = await node.client.get("/get_data?container=box&blob=b",
                                  headers={**admin, name: value})
        await problems.expect_error(f"{name}: {value[:30]}", r, 400)
    problems.assert_none()


async def test_put_if_none_match_other_than_star_is_refused(node: NodeHandle, admin: Headers,
                                                            box: str) -> None:
    r = await node.put_blob(box, "b", b"x", admin, **{"If-None-Match": '"abc"'})
    assert r.status_code in (400, 412)
    await assert_error(await node.client.get("/get_data?container=box&blob=b", headers=admin),
                       404, "BlobNotFound")


async def test_a_chunked_put_needs_no_content_length(node: NodeHandle, admin: Headers,
                                                     box: str) -> None:
    r = await node.client.post("/put_data?container=box&blob=b", data=b"chunked body",
                               headers={**admin, "Transfer-Encoding": "chunked"})
    assert r.status_code == 201, await r.get_data()
    r = await node.client.get("/get_data?container=box&blob=b", headers=admin)
    assert await r.get_data() == b"chunked body"
