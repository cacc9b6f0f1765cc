"""Authenticated channels between nodes: a handshake, then MAC'ed frames, over one stream.

Inter-node calls (Raft messages now, chunk transfer later) travel on TCP
streams to the peer's gossip port. A channel begins with a handshake in which
each side proves it holds the cluster key without revealing it, and both
contribute a fresh nonce::

    client -> server   "BRPC" | version | client nonce (16) | client node id
    server -> client   server nonce (16) | MAC(k, "server" | cn | sn | client id)
    client -> server   MAC(k, "client" | cn | sn | client id)

``k`` is ``HMAC(cluster_key, "blobstore rpc v1")``. The session key is
``HMAC(k, cn | sn)``; every frame after the handshake is, in version 1::

    length u32 | body | MAC16(session, direction | sequence u64 | body)

and in version 2::

    length u32 | payload length u32 | body |
        MAC16(session, direction | sequence u64 | payload length u32 | body) | payload

so a frame cannot be altered, replayed, reordered, reflected back to its
sender, or replayed into another connection. A peer without the key learns
nothing but the server's nonce, and its connection is closed.

The payload of a version 2 frame (a chunk's bytes) is outside the MAC: MAC'ing
it cost two more hash passes over every copy of every chunk, at the sender and
at the receiver, although the receiver hashes the bytes anyway to check them
against the chunk id, which is in the body and so under the MAC. Only callers
that check a payload that way may take one (``receive_frame``; ``receive``
refuses it); its length is under the MAC, so a frame without a payload cannot
be given one. A server speaks both versions; a client uses version 2 only with
a server that announces it (a gossip tag), so old and new nodes mix during a
rolling upgrade.

Rotating the cluster key: a server may accept more than one key (its current
one and ``accepted_keys``), so it must learn which one the client holds before
it proves anything. The client says so in its nonce, without changing the
layout above: ``cn`` is 12 random bytes ``r`` then the hint
``MAC(k, "key hint" | r)[:4]``. The server computes the hint of each of its
keys (all of them, without stopping at a match) and runs the handshake with the
key whose hint matches, or with its current key if none does; both sides then
derive the session from that key. A hint reveals nothing of the key (it is a
MAC of fresh random bytes), nor links two connections. A client that sends no
hint (a fully random nonce: an older version) gets the current key, as before;
a false match of a random nonce with another accepted key (2^-32 per key) only
costs that connection, which is retried.

Streams only: the caller sets timeouts (``trio.move_on_after``); every read is
bounded by ``max_frame_bytes``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import trio

PREFACE = b"BRPC"
#: The newest frame format (see the module docstring); servers accept all of ``VERSIONS``.
VERSION = 2
VERSIONS = (1, 2)
NONCE_BYTES = 16
#: The last bytes of a client nonce: which key the client uses (see the module docstring).
HINT_BYTES = 4
MAC_BYTES = 16
MAX_ID_BYTES = 64
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
#: Frames below this size are joined into one buffer before sending; larger ones are not.
COPY_BELOW = 64 * 1024
_LABEL = b"blobstore rpc v1"


class ChannelError(Exception):
    """The peer failed the handshake, sent a bad frame, or the stream broke mid-frame."""


def _subkey(cluster_key: bytes) -> bytes:
    return hmac.new(cluster_key, _LABEL, hashlib.sha256).digest()


Buffer = bytes | bytearray | memoryview


def _mac(key: bytes, *parts: Buffer) -> bytes:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part)
    return mac.digest()[:MAC_BYTES]


def _hint(key: bytes, random_part: bytes) -> bytes:
    return _mac(key, b"key hint", random_part)[:HINT_BYTES]


def _client_nonce(key: bytes) -> bytes:
    """Fresh random bytes that end in the hint of ``key`` (a subkey)."""
    random_part = secrets.token_bytes(NONCE_BYTES - HINT_BYTES)
    return random_part + _hint(key, random_part)


def _key_for(client_nonce: bytes, keys: list[bytes]) -> bytes:
    """The subkey among ``keys`` whose hint the nonce carries, else the first (current)."""
    random_part, hint = client_nonce[:-HINT_BYTES], client_nonce[-HINT_BYTES:]
    chosen = keys[0]
    for key in reversed(keys):  # every key is tried; the earliest match wins
        if hmac.compare_digest(_hint(key, random_part), hint):
            chosen = key
    return chosen


class _Buffered:
    """Exact reads from a stream, keeping what arrived beyond them."""

    def __init__(self, stream: trio.abc.Stream, initial: bytes = b"") -> None:
        self.stream = stream
        self.buffer = bytearray(initial)

    async def exactly(self, size: int) -> bytes:
        if size >= COPY_BELOW and len(self.buffer) < size:
            return await self._large(size)
        while len(self.buffer) < size:
            self.buffer += await self._some(max(65536, size - len(self.buffer)))
        out = bytes(self.buffer[:size])
        del self.buffer[:size]
        return out

    async def _large(self, size: int) -> bytes:
        """A chunk-sized read: received straight into its own buffer, one copy in all."""
        out = bytearray(size)
        await self.into(memoryview(out))
        return out  # type: ignore[return-value]  # bytes-like; callers only slice and hash

    async def into(self, view: memoryview) -> None:
        """Fill ``view`` exactly: what is buffered first, then straight from the stream."""
        filled = min(len(self.buffer), len(view))
        view[:filled] = self.buffer[:filled]
        del self.buffer[:filled]
        while filled < len(view):
            data = await self._some(len(view) - filled)
            view[filled:filled + len(data)] = data
            filled += len(data)

    async def _some(self, max_bytes: int) -> bytes | bytearray:
        try:
            data = await self.stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ChannelError("the stream broke") from exc
        if not data:
            raise ChannelError("the peer closed the stream mid-frame")
        return data


class Channel:
    """One authenticated, ordered, bidirectional frame stream with a known peer."""

    def __init__(self, stream: trio.abc.Stream, reader: _Buffered, session: bytes,
                 peer: str, *, initiator: bool, max_frame_bytes: int,
                 version: int = VERSION) -> None:
        self.stream = stream
        self.peer = peer
        self.version = version
        self._head_bytes = len(self._lengths(0, 0))
        self._reader = reader
        self._session = session
        self._out_dir, self._in_dir = (b"c", b"s") if initiator else (b"s", b"c")
        self._sent = 0
        self._received = 0
        self._max = max_frame_bytes
        self._send_lock = trio.Lock()

    async def send(self, *parts: Buffer, payload: Buffer = b"") -> None:
        """One frame: the parts, concatenated, then ``payload``, which a version 2 channel
        leaves outside the MAC (the receiver must check it; see the module docstring).
        Nothing is joined into a frame buffer when the frame is large: a chunk goes out of
        its own buffer."""
        if self.version < 2 and payload:
            parts, payload = (*parts, payload), b""
        size = sum(len(part) for part in parts)
        if size + len(payload) > self._max:
            raise ValueError(f"frame of {size + len(payload)} bytes exceeds {self._max}")
        async with self._send_lock:
            head = self._lengths(size, len(payload))
            mac = _mac(self._session, self._out_dir, self._sent.to_bytes(8, "big"),
                       head[4:], *parts)  # the payload length, if the version has one
            self._sent += 1
            try:
                if size + len(payload) < COPY_BELOW:  # one write for small frames
                    await self.stream.send_all(b"".join((head, *parts, mac, payload)))
                else:  # a chunk: a write per part rather than one more copy of megabytes
                    for part in (head, *parts, mac, payload):
                        if part:
                            await self.stream.send_all(part)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ChannelError("the stream broke") from exc

    async def receive(self) -> bytes | None:
        """The next frame, or None when the peer closed the channel between frames; a frame
        with a payload outside the MAC is a ChannelError here (see ``receive_frame``)."""
        received = await self.receive_frame()
        if received is None:
            return None
        frame, authenticated = received
        if authenticated != len(frame):
            raise ChannelError("a frame carried bytes outside the MAC")
        return frame

    async def receive_frame(self) -> tuple[bytes, int] | None:
        """The next frame (its body and payload in one buffer) and the length of its
        authenticated part, the body; None when the peer closed the channel between frames.
        The caller must check the rest, the payload, itself."""
        if not self._reader.buffer:
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ChannelError("the stream broke") from exc
            if not data:
                return None
            self._reader.buffer += data
        lengths = await self._reader.exactly(self._head_bytes)
        size, payload_size = int.from_bytes(lengths[:4], "big"), int.from_bytes(lengths[4:], "big")
        if size + payload_size > self._max:
            raise ChannelError(f"frame of {size + payload_size} bytes exceeds {self._max}")
        if not payload_size:
            body = frame = await self._reader.exactly(size)
        else:  # one buffer for both: the handler gets the frame as one piece, unjoined
            frame = bytearray(size + payload_size)  # type: ignore[assignment]
            body = memoryview(frame)[:size]  # type: ignore[assignment]
            await self._reader.into(body)  # type: ignore[arg-type]
        mac = await self._reader.exactly(MAC_BYTES)
        expected = _mac(self._session, self._in_dir, self._received.to_bytes(8, "big"),
                        lengths[4:], body)
        if not hmac.compare_digest(mac, expected):
            raise ChannelError("a frame failed authentication")
        self._received += 1
        if payload_size:  # authenticated so far: only now is the payload worth reading
            await self._reader.into(memoryview(frame)[size:])
        return frame, size

    def _lengths(self, size: int, payload_size: int) -> bytes:
        """A frame's leading length fields: the body's, then (version 2) the payload's."""
        if self.version < 2:
            return size.to_bytes(4, "big")
        return size.to_bytes(4, "big") + payload_size.to_bytes(4, "big")

    async def aclose(self) -> None:
        await self.stream.aclose()


async def connect_channel(stream: trio.abc.Stream, cluster_key: bytes, node_id: str, *,
                          peer: str = "", max_frame_bytes: int = DEFAULT_MAX_FRAME,
                          version: int = VERSION) -> Channel:
    """Run the client side of the handshake on a freshly opened stream to ``peer``, in the
    frame format ``version`` (the newest the server announces)."""
    if version not in VERSIONS:
        raise ValueError(f"channel version {version} is not one of {VERSIONS}")
    raw_id = node_id.encode()
    if not 0 < len(raw_id) <= MAX_ID_BYTES:
        raise ValueError("node id must be 1..64 bytes")
    key = _subkey(cluster_key)
    client_nonce = _client_nonce(key)
    try:
        await stream.send_all(PREFACE + bytes((version, len(raw_id))) + client_nonce + raw_id)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise ChannelError("the stream broke") from exc
    reader = _Buffered(stream)
    server_nonce = await reader.exactly(NONCE_BYTES)
    proof = await reader.exactly(MAC_BYTES)
    if not hmac.compare_digest(proof, _mac(key, b"server", client_nonce, server_nonce, raw_id)):
        raise ChannelError("the server does not hold the cluster key")
    try:
        await stream.send_all(_mac(key, b"client", client_nonce, server_nonce, raw_id))
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise ChannelError("the stream broke") from exc
    session = hmac.new(key, client_nonce + server_nonce, hashlib.sha256).digest()
    return Channel(stream, reader, session, peer, initiator=True,
                   max_frame_bytes=max_frame_bytes, version=version)


async def accept_channel(stream: trio.abc.Stream, cluster_key: bytes, *,
                         accepted_keys: tuple[bytes, ...] = (), initial: bytes = b"",
                         max_frame_bytes: int = DEFAULT_MAX_FRAME,
                         versions: tuple[int, ...] = VERSIONS) -> Channel:
    """Run the server side of the handshake; ``initial`` is what a router already read.

    A client may hold ``cluster_key`` or one of ``accepted_keys`` (a key
    rotation): its nonce says which (see the module docstring). It may use any frame format
    of ``versions``.

    The channel's ``peer`` is the node id the client proved it may claim (any
    holder of the cluster key may claim any id: the key is the trust boundary).
    """
    keys = [_subkey(k) for k in (cluster_key, *accepted_keys)]
    reader = _Buffered(stream, initial)
    head = await reader.exactly(len(PREFACE) + 2)
    version = head[len(PREFACE)]
    if head[:len(PREFACE)] != PREFACE or version not in versions:
        raise ChannelError("not an RPC channel of a version this node speaks")
    id_size = head[len(PREFACE) + 1]
    if not 0 < id_size <= MAX_ID_BYTES:
        raise ChannelError("bad node id length")
    client_nonce = await reader.exactly(NONCE_BYTES)
    raw_id = await reader.exactly(id_size)
    key = _key_for(client_nonce, keys)
    server_nonce = secrets.token_bytes(NONCE_BYTES)
    try:
        await stream.send_all(server_nonce +
                              _mac(key, b"server", client_nonce, server_nonce, raw_id))
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise ChannelError("the stream broke") from exc
    proof = await reader.exactly(MAC_BYTES)
    if not hmac.compare_digest(proof, _mac(key, b"client", client_nonce, server_nonce, raw_id)):
        raise ChannelError("the client does not hold the cluster key")
    try:
        peer = raw_id.decode()
    except UnicodeDecodeError:
        raise ChannelError("node id is not UTF-8") from None
    session = hmac.new(key, client_nonce + server_nonce, hashlib.sha256).digest()
    return Channel(stream, reader, session, peer, initiator=False,
                   max_frame_bytes=max_frame_bytes, version=version)
