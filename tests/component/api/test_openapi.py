"""The OpenAPI document (node/api/openapi.json) is valid, served, and true to the app.

The document is written by hand from API.md and the README, so these tests are
what keeps it honest: every route of the app is documented and every documented
operation is a route, the naming rules in it are the ones ``node.api.params``
enforces, and every error code the node can answer is one it lists.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from node import errors
from node.api import openapi, params
from node.testing.inprocess import NodeHandle, running_node

from api_support import assert_error

#: Werkzeug adds HEAD to every GET rule by itself (and OPTIONS unless told not to); those
#: are not operations of ours unless the document lists them (HEAD /get_data is).
AUTOMATIC_METHODS = {"HEAD", "OPTIONS"}
#: The operations that need no login (API.md: "every endpoint except ...").
PUBLIC_OPERATIONS = {("POST", "/auth"), ("GET", "/health"), ("GET", "/metrics"),
                     ("GET", "/openapi.json")}
#: Quart's own static-file route; ``test_no_static_file_route`` is about it.
QUART_STATIC_ENDPOINT = "static"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
#: Error classes that are only bases of others and never answered themselves.
ABSTRACT_ERRORS = {errors.Conflict}


def _openapi_path(rule: str) -> str:
    """``/a/<int:b>`` as OpenAPI writes it: ``/a/{b}``."""
    return re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule)


def _routes(node: NodeHandle) -> set[tuple[str, str]]:
    """(METHOD, path) of every route, less the methods Werkzeug adds on its own."""
    app = node.node.app
    assert app is not None
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == QUART_STATIC_ENDPOINT:
            continue
        for method in rule.methods or ():
            if method == "OPTIONS" or (method == "HEAD" and "GET" in (rule.methods or ())):
                continue
            found.add((method, _openapi_path(rule.rule)))
    return found


def _served_methods(node: NodeHandle, path: str) -> set[str]:
    app = node.node.app
    assert app is not None
    return {method for rule in app.url_map.iter_rules()
            if _openapi_path(rule.rule) == path for method in rule.methods or ()}


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method.upper(), path): operation
            for path, item in document["paths"].items()
            for method, operation in item.items() if method in HTTP_METHODS}


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_the_document_is_valid_openapi() -> None:
    document = openapi.document()
    validate(document)
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["version"] == version("blobstore")


async def test_every_route_is_documented_and_every_operation_is_a_route(
        node: NodeHandle) -> None:
    documented = _operations(openapi.document())
    routes = _routes(node)
    explicit = {op for op in documented if op[0] not in AUTOMATIC_METHODS}
    assert routes - explicit == set(), "routes missing from the document"
    assert explicit - routes == set(), "documented operations the app does not serve"
    for method, path in set(documented) - explicit:
        assert method in _served_methods(node, path), f"{method} {path} is not served"


def test_security_is_bearer_everywhere_but_the_public_operations() -> None:
    document = openapi.document()
    bearer = document["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    assert document["security"] == [{"bearer": []}]
    for key, operation in _operations(document).items():
        security = operation.get("security", document["security"])
        assert (security == []) == (key in PUBLIC_OPERATIONS), key
        if security:
            assert "401" in operation["responses"], f"{key} lists no 401"


def _answered_errors() -> dict[str, int]:
    """Every error code the node can answer, with its status."""
    found: dict[str, int] = {}
    pending: list[type[errors.BlobstoreError]] = [errors.BlobstoreError]
    while pending:
        cls = pending.pop()
        if cls not in ABSTRACT_ERRORS:
            found[cls.code] = cls.status
        pending.extend(cls.__subclasses__())
    return found


def test_every_error_code_of_the_node_is_listed() -> None:
    error = openapi.document()["components"]["schemas"]["Error"]["properties"]["error"]
    assert set(error["properties"]["code"]["enum"]) == set(_answered_errors())


def test_every_error_response_has_the_error_body_and_codes_of_its_status() -> None:
    document = openapi.document()
    statuses = _answered_errors()
    for key, operation in _operations(document).items():
        for status, response in operation["responses"].items():
            if int(status) < 400 or key[0] == "HEAD":
                continue
            schema = _resolve(document, response)["content"]["application/json"]["schema"]
            assert schema["allOf"][0] == {"$ref": "#/components/schemas/Error"}, (key, status)
            codes = schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]
            assert {statuses[code] for code in codes} == {int(status)}, (key, status, codes)


def test_the_naming_rules_are_those_the_node_enforces() -> None:
    schemas = openapi.document()["components"]["schemas"]
    assert schemas["ContainerName"]["pattern"] == f"^{params._CONTAINER_RE.pattern}$"
    assert schemas["Username"]["pattern"] == f"^{params._USERNAME_RE.pattern}$"
    assert schemas["BlobName"]["maxLength"] == params.MAX_BLOB_NAME_BYTES
    for name in ("ContainerName", "Username"):
        assert re.compile(schemas[name]["pattern"]).fullmatch(schemas[name]["example"])
    limit = next(p for p in openapi.document()["paths"]["/list_blobs"]["get"]["parameters"]
                 if p.get("name") == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 10_000)


async def test_the_document_is_served_without_login(node: NodeHandle) -> None:
    r = await node.client.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    assert await r.get_data() == openapi.document_bytes()
    assert await r.get_json() == openapi.document()


async def test_other_methods_on_the_document_are_405(node: NodeHandle) -> None:
    await assert_error(await node.client.post("/openapi.json"), 405, "MethodNotAllowed")


async def test_no_static_file_route(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node started in a directory with a ``static/`` folder must not serve its files:
    the API has no such route, and those files need no token."""
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "secret.txt").write_text("not for the world\n")
    monkeypatch.chdir(tmp_path)
    async with running_node(tmp_path / "node") as node:
        app = node.node.app
        assert app is not None
        rules = [rule.rule for rule in app.url_map.iter_rules()
                 if rule.endpoint == QUART_STATIC_ENDPOINT]
        r = await node.client.get("/static/secret.txt")
        assert (r.status_code, rules) == (404, []), await r.get_data()
