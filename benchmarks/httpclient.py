"""A lean keep-alive HTTP/1.1 client on trio streams and h11, for load generation.

httpx costs ~1.4 ms of CPU per small request on the reference machine, which
would make the load generator the bottleneck; this client does only what the
benchmark needs: one request at a time per connection, bodies streamed from
memoryviews, response bodies either kept or only hashed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
import trio

SEND_SLICE = 1024 * 1024


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    md5: str
    length: int


class Connection:
    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._stream: trio.SocketStream | None = None
        self._conn = h11.Connection(h11.CLIENT)

    async def _ensure(self) -> trio.SocketStream:
        if self._stream is None or self._conn.our_state is not h11.IDLE:
            if self._stream is not None:
                await self._stream.aclose()
            self._stream = await trio.open_tcp_stream(self.host, self.port)
            self._conn = h11.Connection(h11.CLIENT)
        return self._stream

    async def request(self, method: str, target: str, headers: Iterable[tuple[str, str]],
                      body: Iterable[memoryview | bytes] = (), *, content_length: int = 0,
                      keep_body: bool = True) -> Reply:
        stream = await self._ensure()
        all_headers = [("Host", f"{self.host}:{self.port}"), *headers]
        if method in ("POST", "PUT"):
            all_headers.append(("Content-Length", str(content_length)))
        await stream.send_all(self._conn.send(h11.Request(method=method, target=target,
                                                          headers=all_headers)))
        for piece in body:
            for start in range(0, len(piece), SEND_SLICE):
                # h11 frames any bytes-like (its annotation says bytes): no copy per slice
                await stream.send_all(self._conn.send(h11.Data(
                    data=piece[start:start + SEND_SLICE])))  # type: ignore[arg-type]
        await stream.send_all(self._conn.send(h11.EndOfMessage()))
        return await self._read_reply(stream, keep_body)

    async def _read_reply(self, stream: trio.SocketStream, keep_body: bool) -> Reply:
        md5 = hashlib.md5()
        kept = bytearray()
        length = 0
        status, headers = 0, {}
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(1 << 20)
                if not data:
                    raise ConnectionError("server closed the connection mid-response")
                self._conn.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                md5.update(event.data)
                length += len(event.data)
                if keep_body:
                    kept += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("connection closed")
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
        else:
            await stream.aclose()
            self._stream = None
        return Reply(status, headers, bytes(kept), md5.hexdigest(), length)

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None
