"""Bridges from Quart's request to the strict parsers of ``node.api.params``."""

from __future__ import annotations

from typing import Any

from quart import request

from node.api import params
from node.errors import TooLarge


def query() -> dict[str, str]:
    return params.parse_query(request.query_string)


async def json_body(allowed: set[str], required: set[str]) -> dict[str, Any]:
    """The request's JSON object, read with a size cap (never the whole of a huge body)."""
    declared = request.content_length
    if declared is not None and declared > params.MAX_JSON_BYTES:
        raise TooLarge(f"JSON bodies are limited to {params.MAX_JSON_BYTES} bytes")
    data = bytearray()
    async for piece in request.body:
        data += piece
        if len(data) > params.MAX_JSON_BYTES:
            raise TooLarge(f"JSON bodies are limited to {params.MAX_JSON_BYTES} bytes")
    return params.json_object(bytes(data), allowed, required)


def client_address() -> str:
    return request.remote_addr or "unknown"
