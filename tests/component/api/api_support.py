"""Helpers shared by the API component tests (the public contract is /work/shared/API.md).

Quart's test client sends the query string exactly as given (it must be ASCII),
so every query here is built with ``q()``, which percent-encodes each value
completely: the node sees the bytes a real HTTP client would send.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from node.testing.inprocess import NodeHandle

USER_PASSWORD = "user-password-1"
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$")
HEX_MD5 = re.compile(r"^[0-9a-f]{32}$")


def q(**params: str) -> str:
    """A query string with every name and value fully percent-encoded (UTF-8)."""
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items())


def blob_url(container: str, blob: str, path: str = "/get_data") -> str:
    return f"{path}?{q(container=container, blob=blob)}"


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def parse_rfc3339(text: Any) -> datetime:
    """The moment of an RFC 3339 UTC timestamp; fails the test if it is not one."""
    assert isinstance(text, str) and RFC3339_UTC.match(text), f"not RFC 3339 UTC: {text!r}"
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    offset = moment.utcoffset()
    assert offset is not None and offset.total_seconds() == 0
    return moment


def assert_recent(text: Any, slack_s: float = 120.0) -> datetime:
    moment = parse_rfc3339(text)
    now = datetime.now(timezone.utc)
    assert abs((now - moment).total_seconds()) < slack_s, f"{text} is not about now"
    return moment


async def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is ``status`` with the contract's JSON error body (and ``code``)."""
    body = await response.get_data()
    assert response.status_code == status, (response.status_code, body[:500])
    assert response.headers.get("Content-Type", "").startswith("application/json"), \
        response.headers.get("Content-Type")
    document = await response.get_json()
    assert isinstance(document, dict) and set(document) == {"error"}, document
    error = document["error"]
    assert isinstance(error, dict) and {"code", "message"} <= set(error), error
    assert isinstance(error["code"], str) and isinstance(error["message"], str), error
    if code is not None:
        assert error["code"] == code, error
    return error


async def error_mismatch(response: Any, status: int, code: str | None = None) -> str | None:
    """None if the response is the contract's error ``status``/``code``, else what it was.

    For tests that try many bad inputs on one node (starting a node per input
    would make the suite slow) and report every input that was mishandled.
    """
    body = await response.get_data()
    got = f"{response.status_code} {body[:200]!r}"
    if response.status_code != status:
        return got
    if code is not None and response.headers.get("Content-Type", "").startswith(
            "application/json"):
        document = await response.get_json()
        if not isinstance(document, dict) or document.get("error", {}).get("code") != code:
            return got
    return None


class Problems:
    """Collects the inputs a test found mishandled, then fails once listing them all."""

    def __init__(self) -> None:
        self.found: list[str] = []

    async def expect_error(self, label: Any, response: Any, status: int,
                           code: str | None = None) -> None:
        problem = await error_mismatch(response, status, code)
        if problem is not None:
            self.found.append(f"{label!r}: expected {status} {code or ''}, got {problem}")

    def check(self, label: Any, ok: bool, detail: Any = "") -> None:
        if not ok:
            self.found.append(f"{label!r}: {detail}")

    def assert_none(self) -> None:
        assert not self.found, "\n".join(["mishandled inputs:", *self.found])


async def create_user(node: NodeHandle, admin: dict[str, str], username: str,
                      password: str = USER_PASSWORD, role: str = "user") -> dict[str, str]:
    """Create a user and return its Authorization headers."""
    r = await node.client.post("/users", headers=admin,
                               json={"username": username, "password": password, "role": role})
    assert r.status_code == 201, await r.get_data()
    return {"Authorization": f"Bearer {await node.login(username, password)}"}


async def create_container(node: NodeHandle, headers: dict[str, str], name: str) -> None:
    r = await node.client.post("/create_container", json={"container": name}, headers=headers)
    assert r.status_code == 201, await r.get_data()


async def put(node: NodeHandle, headers: dict[str, str], container: str, blob: str,
              data: bytes, **extra: str) -> Any:
    """A successful PUT; returns its JSON body."""
    r = await node.put_blob(container, blob, data, headers, **extra)
    assert r.status_code == 201, await r.get_data()
    return await r.get_json()


async def get_body(node: NodeHandle, headers: dict[str, str], container: str,
                   blob: str) -> bytes:
    r = await node.client.get(blob_url(container, blob), headers=headers)
    assert r.status_code == 200, await r.get_data()
    return await r.get_data(as_text=False)


async def grant(node: NodeHandle, headers: dict[str, str], container: str, username: str,
                permission: str) -> None:
    r = await node.client.post("/grant_access", headers=headers, json={
        "container": container, "username": username, "permission": permission})
    assert r.status_code == 204, await r.get_data()


async def list_names(node: NodeHandle, headers: dict[str, str], container: str,
                     **params: str) -> dict[str, Any]:
    r = await node.client.get(f"/list_blobs?{q(container=container, **params)}",
                              headers=headers)
    assert r.status_code == 200, await r.get_data()
    return await r.get_json()
