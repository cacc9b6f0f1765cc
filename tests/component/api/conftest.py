"""Fixtures of the API component tests, and the invariants every answer must keep.

``_every_answer_keeps_the_contract`` wraps Quart's test client for every test in
this directory: no answer may be a 5xx (the node is healthy and alone, so even
503 would be a bug here), and every error answer to a non-HEAD request carries
the contract's JSON body ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from quart.testing.client import QuartClient

from node.testing.inprocess import NodeHandle

from api_support import create_container, create_user


@pytest.fixture(autouse=True)
def _every_answer_keeps_the_contract(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    original = QuartClient.open

    async def checked_open(self: QuartClient, *args: Any, **kwargs: Any) -> Any:
        response = await original(self, *args, **kwargs)
        method = kwargs.get("method", "GET")
        where = f"{method} {args[0] if args else kwargs.get('path')}"
        body = await response.get_data()
        assert response.status_code < 500, \
            f"{where} answered {response.status_code}: {body[:300]!r}"
        if response.status_code >= 400 and method != "HEAD":
            assert response.headers.get("Content-Type", "").startswith("application/json"), \
                f"{where}: error without a JSON body"
            document = json.loads(body)
            error = document.get("error") if isinstance(document, dict) else None
            assert isinstance(error, dict), f"{where}: error body {document!r}"
            assert isinstance(error.get("code"), str), f"{where}: error body {document!r}"
            assert isinstance(error.get("message"), str), f"{where}: error body {document!r}"
            assert "Traceback" not in error["message"], f"{where}: traceback in {document!r}"
        return response

    monkeypatch.setattr(QuartClient, "open", checked_open)
    yield


@pytest.fixture
async def alice(node: NodeHandle, admin: dict[str, str]) -> dict[str, str]:
    """Authorization headers of the ordinary user ``alice``."""
    return await create_user(node, admin, "alice")


@pytest.fixture
async def bob(node: NodeHandle, admin: dict[str, str]) -> dict[str, str]:
    """Authorization headers of the ordinary user ``bob``."""
    return await create_user(node, admin, "bob")


@pytest.fixture
async def box(node: NodeHandle, admin: dict[str, str]) -> str:
    """A container ``box`` owned by the admin."""
    await create_container(node, admin, "box")
    return "box"
