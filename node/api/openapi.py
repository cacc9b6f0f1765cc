"""``GET /openapi.json``: the OpenAPI 3.1 document of the public API, without login.

The document is a data file beside this module (``openapi.json``), not generated
from the routes: it says what API.md and the README's "Where API.md is silent"
promise (names' patterns, every status with its error codes, headers), which
the routes cannot tell. ``tests/component/api/test_openapi.py`` keeps the two in
step (every route is documented and every documented operation is a route), and
``tests/e2e/test_fuzz.py`` fuzzes a live node against it.

It is read once per process and served as stored bytes: every node of a
cluster runs the same code, so they all serve the same document.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from quart import Response

from node.api.app import BlobApp, endpoint
from node.services import Services

PATH = "/openapi.json"


@functools.cache
def document_bytes() -> bytes:
    """The document as served; read from the package on first use, then kept."""
    return resources.files("node.api").joinpath("openapi.json").read_bytes()


def document() -> dict[str, Any]:
    """A fresh parsed copy of the document (callers may change it)."""
    parsed: dict[str, Any] = json.loads(document_bytes())
    return parsed


@endpoint("openapi")
async def openapi(svc: Services) -> Response:
    return Response(document_bytes(), status=200, content_type="application/json")


def register(app: BlobApp) -> None:
    app.add_url_rule(PATH, view_func=openapi, methods=["GET"])
