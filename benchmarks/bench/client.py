"""The load generator's HTTP client: aiohttp, one keep-alive connection per slot.

aiohttp is the client the OpenStack Swift reference figures were measured with, so
the two are compared like for like. Measured here against nginx's static files (see
``limits``) it costs about 95 us of CPU per small request (~10,000 requests/s per
core); httpx costs ~1.4 ms, and the h11-on-trio client in ``benchmarks/httpclient``
about 120 us. A hand-written ``asyncio.Protocol`` client parsing only Content-Length
responses costs ~10 us, but would be a second HTTP implementation to trust; the
report prints the client's CPU next to every figure instead, so a saturated client
shows.

Bodies go out from ``memoryview`` slices of the shared body buffer (``SlicesPayload``),
never copied whole; response bodies are fed piece by piece to a ``Check`` and not kept.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, NamedTuple

import aiohttp
from aiohttp.abc import AbstractStreamWriter
from yarl import URL

from benchmarks.bench.bodies import Check

#: Bytes handed to the socket per write: small enough that asyncio's copy of what the
#: socket did not take at once stays small, large enough to cost few calls.
SEND_PIECE = 256 * 1024
#: aiohttp's read buffer; its default (64 KiB) pauses and resumes the socket so often
#: that large GETs cost ~15 % more client CPU.
READ_BUFFER = 1024 * 1024
#: Errors a request can end in, other than an HTTP status.
REQUEST_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class Answer(NamedTuple):
    status: int
    length: int  # body bytes received
    verified: bool  # the body was exactly the expected bytes (True when nothing expected)
    data: Any = None  # the parsed JSON of a JSON answer, or the start of an error body


class SlicesPayload(aiohttp.payload.Payload):
    """A request body streamed from a memoryview in ``SEND_PIECE`` slices (no copy)."""

    def __init__(self, view: memoryview) -> None:
        super().__init__(view, content_type="application/octet-stream")
        self._view = view
        self._size = len(view)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a benchmark body is binary")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: AbstractStreamWriter,
                                content_length: int | None) -> None:
        end = len(self._view) if content_length is None else min(content_length,
                                                                  len(self._view))
        for start in range(0, end, SEND_PIECE):
            await writer.write(self._view[start:min(start + SEND_PIECE, end)])


class Slot:
    """One concurrency slot: one keep-alive connection to one server, one request at a time.

    Resource handling: the connection opens on the first request and closes with
    ``close()``; a request that fails leaves aiohttp to open a new one next time.
    """

    def __init__(self, base_url: str, token: str | None = None, *,
                 timeout_s: float = 300.0) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1, force_close=False),
            cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
            read_bufsize=READ_BUFFER, headers=headers, skip_auto_headers=("User-Agent",),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_s))

    def _url(self, path: str) -> URL:
        return URL(self.base_url + path, encoded=True)

    async def put(self, path: str, body: memoryview,
                  headers: dict[str, str] | None = None) -> Answer:
        """POST ``body``; the answer's data is the parsed JSON (or the error body)."""
        data: memoryview | SlicesPayload = body if len(body) <= SEND_PIECE else \
            SlicesPayload(body)
        async with self._session.post(self._url(path), data=data, headers=headers) as resp:
            raw = await resp.read()
        return Answer(resp.status, len(raw), True, _parse(raw))

    async def get(self, path: str, check: Check | None,
                  headers: dict[str, str] | None = None) -> Answer:
        """GET, feeding the body to ``check`` as it arrives (an error body is kept)."""
        async with self._session.get(self._url(path), headers=headers) as resp:
            if resp.status >= 300:
                raw = await resp.read()
                return Answer(resp.status, len(raw), False, _parse(raw))
            length = 0
            async for piece in resp.content.iter_any():
                length += len(piece)
                if check is not None:
                    check.feed(piece)
        return Answer(resp.status, length, check is None or check.ok)

    async def call(self, method: str, path: str, body: Any = None) -> Answer:
        """A small API call with an optional JSON body; the answer's data is its JSON."""
        payload = None if body is None else json.dumps(body).encode()
        headers = None if body is None else {"Content-Type": "application/json"}
        async with self._session.request(method, self._url(path), data=payload,
                                         headers=headers) as resp:
            raw = await resp.read()
        return Answer(resp.status, len(raw), True, _parse(raw))

    async def close(self) -> None:
        await self._session.close()


def _parse(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw[:200]


def error_kind(answer: Answer | BaseException) -> str:
    """A short name for a failure: the HTTP status and the error code, or the exception."""
    if isinstance(answer, BaseException):
        return type(answer).__name__
    code = ""
    if isinstance(answer.data, dict):
        code = str(answer.data.get("error", {}).get("code", ""))
    return f"{answer.status} {code}".strip()
