"""RPC channels: only holders of the cluster key get through; frames cannot be altered,
replayed, reordered or reflected."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from node.rpc.channel import (DEFAULT_MAX_FRAME, VERSION, Channel, ChannelError, _mac,
                              accept_channel, connect_channel)

KEY = b"cluster-key-0123456789"


async def pair(client_key: bytes = KEY, server_key: bytes = KEY
               ) -> tuple[Channel | BaseException, Channel | BaseException]:
    a, b = trio.testing.memory_stream_pair()
    results: dict[str, Channel | BaseException] = {}

    async def client() -> None:
        try:
            results["c"] = await connect_channel(a, client_key, "n1", peer="n2")
        except ChannelError as exc:
            results["c"] = exc
            await a.aclose()

    async def server() -> None:
        try:
            results["s"] = await accept_channel(b, server_key)
        except ChannelError as exc:
            results["s"] = exc
            await b.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        nursery.start_soon(server)
    return results["c"], results["s"]


async def test_frames_flow_both_ways_in_order() -> None:
    c, s = await pair()
    assert isinstance(c, Channel) and isinstance(s, Channel)
    assert s.peer == "n1" and c.peer == "n2"
    for i in range(50):
        await c.send(f"ping {i}".encode() * i)
        assert await s.receive() == f"ping {i}".encode() * i
        await s.send(b"pong")
        assert await c.receive() == b"pong"
    await c.send(b"")
    assert await s.receive() == b""
    await c.aclose()
    assert await s.receive() is None


async def test_a_frame_in_parts_arrives_whole_small_or_chunk_sized() -> None:
    """Parts are the sender's scatter list: a chunk goes out of its own buffer, unjoined,
    and the receiver sees one frame, read straight into one buffer when it is large."""
    c, s = await pair()
    assert isinstance(c, Channel) and isinstance(s, Channel)
    chunk = bytes(range(256)) * 4096  # 1 MiB
    for parts in ((b"head", b"", b"tail"), (b"Q" * 9, b"id" * 24, memoryview(chunk)),
                  (bytearray(b"x"), chunk[:70_000]), (chunk,)):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(c.send, *parts)
            assert await s.receive() == b"".join(parts)
    await c.aclose()
    assert await s.receive() is None


@pytest.mark.parametrize("wrong", ["client", "server"])
async def test_a_peer_without_the_key_is_refused(wrong: str) -> None:
    other = b"another-key-0123456789"
    c, s = await pair(*((other, KEY) if wrong == "client" else (KEY, other)))
    assert isinstance(s, ChannelError) or isinstance(c, ChannelError)
    assert not (isinstance(c, Channel) and isinstance(s, Channel))


async def connected(*, max_frame_bytes: int = DEFAULT_MAX_FRAME, version: int = VERSION
                    ) -> tuple[Channel, Channel, trio.abc.Stream]:
    """A client channel, its server channel, and the client's raw stream."""
    a, b = trio.testing.memory_stream_pair()
    out: dict[str, Channel] = {}
    async with trio.open_nursery() as nursery:
        async def server() -> None:
            out["s"] = await accept_channel(b, KEY, max_frame_bytes=max_frame_bytes)
        nursery.start_soon(server)
        out["c"] = await connect_channel(a, KEY, "n1", version=version)
    return out["c"], out["s"], a


async def recorded_pair() -> tuple[Channel, Channel, list[bytes], trio.testing.MemorySendStream]:
    """A connected pair whose client-side writes are recorded (an eavesdropper's view)."""
    c, s, raw = await connected()
    sent: list[bytes] = []
    real_send = raw.send_all

    async def recording_send(data: bytes | bytearray | memoryview) -> None:
        sent.append(bytes(data))
        await real_send(data)
    raw.send_all = recording_send  # type: ignore[method-assign]
    return c, s, sent, real_send  # type: ignore[return-value]


async def test_an_altered_frame_is_rejected() -> None:
    c, s, sent, raw_send = await recorded_pair()
    await c.send(b"hello")
    assert await s.receive() == b"hello"
    frame = bytearray(sent[-1])
    frame[9] ^= 1  # one bit of the body (after the length and the payload length)
    forged = bytes(frame)
    # The sequence number moved on, so even an unaltered copy would fail; alter the next one.
    await c.send(b"hello")
    assert await s.receive() == b"hello"
    await raw_send(forged)  # type: ignore[operator]
    with pytest.raises(ChannelError):
        await s.receive()


async def test_a_replayed_frame_is_rejected() -> None:
    c, s, sent, raw_send = await recorded_pair()
    await c.send(b"transfer 1")
    assert await s.receive() == b"transfer 1"
    await raw_send(sent[-1])  # type: ignore[operator]  # the attacker repeats it verbatim
    with pytest.raises(ChannelError):
        await s.receive()


async def test_a_frame_reflected_to_its_sender_is_rejected() -> None:
    c, s, _, _ = await recorded_pair()
    await s.send(b"from server")
    assert await c.receive() == b"from server"
    # What the client would send as its first frame is MAC'ed for the other direction.
    body = b"from server"
    assert _mac(s._session, b"s", (0).to_bytes(8, "big"), body) != \
        _mac(s._session, b"c", (0).to_bytes(8, "big"), body)


@pytest.mark.parametrize("body, payload", [(10**9, 0), (10, 1020)], ids=["body", "payload"])
async def test_a_frame_over_the_limit_is_refused_before_it_is_read(body: int,
                                                                   payload: int) -> None:
    _, s, raw = await connected(max_frame_bytes=1024)
    await raw.send_all(body.to_bytes(4, "big") + payload.to_bytes(4, "big"))
    with pytest.raises(ChannelError, match="exceeds"):
        await s.receive_frame()


# -- payloads outside the MAC (version 2) ------------------------------------------------

@pytest.mark.parametrize("size", [100, 1 << 20])
async def test_a_payload_arrives_after_its_body_in_one_buffer(size: int) -> None:
    c, s, _, _ = await recorded_pair()
    payload = bytes(range(256)) * (size // 256)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: c.send(b"Q", b"head", payload=memoryview(payload)))
        received = await s.receive_frame()
    assert received is not None
    frame, authenticated = received
    assert bytes(frame) == b"Qhead" + payload and authenticated == 5


async def test_receive_refuses_a_frame_with_a_payload() -> None:
    """Only a caller that checks the payload itself may take one."""
    c, s, _, _ = await recorded_pair()
    await c.send(b"head", payload=b"unchecked bytes")
    with pytest.raises(ChannelError, match="outside the MAC"):
        await s.receive()


async def test_the_payload_is_not_authenticated_but_its_length_is() -> None:
    c, s, _, raw_send = await recorded_pair()
    captured: list[bytes] = []

    async def capture(data: bytes | bytearray | memoryview) -> None:
        captured.append(bytes(data))  # the attacker holds the frame and sends it altered
    c.stream.send_all = capture  # type: ignore[method-assign]
    await c.send(b"chunk id", payload=b"chunk bytes")
    wire = bytearray(b"".join(captured))
    wire[-1] ^= 0x20  # the payload: the channel lets it through; the chunk's hash will not
    await raw_send(bytes(wire))  # type: ignore[operator]
    received = await s.receive_frame()
    assert received is not None and bytes(received[0]) == b"chunk idchunk byteS" and \
        received[1] == len(b"chunk id")
    captured.clear()
    await c.send(b"chunk id", payload=b"chunk bytes")
    wire = bytearray(b"".join(captured))
    wire[7] += 1  # the payload length: under the MAC
    await raw_send(bytes(wire))  # type: ignore[operator]
    with pytest.raises(ChannelError, match="authentication"):
        await s.receive_frame()


async def test_a_version_1_client_sends_its_payload_under_the_mac() -> None:
    """A node of an earlier version (or one talking to such a server) MACs everything; a
    server speaks both versions."""
    c, s, _ = await connected(version=1)
    assert c.version == s.version == 1
    await c.send(b"head", payload=b"bytes")
    assert await s.receive() == b"headbytes"
    await s.send(b"answer", payload=b"chunk")
    assert await c.receive_frame() == (b"answerchunk", len(b"answerchunk"))


async def test_a_server_of_version_1_refuses_a_version_2_client() -> None:
    """Why clients wait for a server to announce version 2 before using it."""
    a, b = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        async def client() -> None:
            with pytest.raises(ChannelError):
                await connect_channel(a, KEY, "n1")
        nursery.start_soon(client)
        with pytest.raises(ChannelError, match="version"):
            await accept_channel(b, KEY, versions=(1,))
        await b.aclose()


async def test_garbage_instead_of_a_handshake_is_refused() -> None:
    a, b = trio.testing.memory_stream_pair()
    await a.send_all(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(ChannelError):
        await accept_channel(b, KEY)


# -- rotating the cluster key ------------------------------------------------------------

NEW = b"the-next-cluster-key-0123456789"
THIRD = b"a-third-cluster-key-0123456789"


async def rotated_pair(client_key: bytes, server_key: bytes,
                       accepted: tuple[bytes, ...]) -> tuple[object, object]:
    a, b = trio.testing.memory_stream_pair()
    out: dict[str, object] = {}

    async def client() -> None:
        try:
            out["c"] = await connect_channel(a, client_key, "n1", peer="n2")
        except ChannelError as exc:
            out["c"] = exc
            await a.aclose()

    async def server() -> None:
        try:
            out["s"] = await accept_channel(b, server_key, accepted_keys=accepted)
        except ChannelError as exc:
            out["s"] = exc
            await b.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        nursery.start_soon(server)
    return out["c"], out["s"]


@pytest.mark.parametrize("client_key, server_key, accepted", [
    (KEY, KEY, (NEW,)),          # step 1: the new key accepted, the old one still used
    (NEW, KEY, (NEW,)),          # step 2: a rotated client, a server not yet rotated
    (KEY, NEW, (KEY,)),          # step 2: the other way round
    (NEW, NEW, (KEY,)),
    (THIRD, KEY, (NEW, THIRD)),  # any of several accepted keys
], ids=["old-old", "new-old", "old-new", "new-new", "third"])
async def test_a_server_finds_the_accepted_key_its_client_uses(
        client_key: bytes, server_key: bytes, accepted: tuple[bytes, ...]) -> None:
    c, s = await rotated_pair(client_key, server_key, accepted)
    assert isinstance(c, Channel) and isinstance(s, Channel), (c, s)
    assert c._session == s._session
    await c.send(b"across keys")
    assert await s.receive() == b"across keys"
    await s.send(b"and back")
    assert await c.receive() == b"and back"


async def test_a_key_the_server_does_not_accept_is_refused() -> None:
    c, s = await rotated_pair(THIRD, KEY, (NEW,))
    assert isinstance(s, ChannelError) and not isinstance(c, Channel)
    # The rotation is over: the old key is no longer accepted.
    c, s = await rotated_pair(KEY, NEW, ())
    assert isinstance(s, ChannelError) or isinstance(c, ChannelError)
    assert not (isinstance(c, Channel) and isinstance(s, Channel))


async def test_a_client_without_a_hint_gets_the_current_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A client of an earlier version sends a fully random nonce: a server with accepted
    keys still handshakes with it under its current key."""
    import secrets

    import node.rpc.channel as channel
    monkeypatch.setattr(channel, "_client_nonce",
                        lambda key: secrets.token_bytes(channel.NONCE_BYTES))
    c, s = await rotated_pair(KEY, KEY, (NEW, THIRD))
    assert isinstance(c, Channel) and isinstance(s, Channel)
    c, s = await rotated_pair(NEW, KEY, (NEW,))
    assert not (isinstance(c, Channel) and isinstance(s, Channel))


def test_the_hint_names_one_key_and_changes_with_every_nonce() -> None:
    from node.rpc.channel import _client_nonce, _key_for, _subkey
    keys = [_subkey(k) for k in (KEY, NEW, THIRD)]
    nonces = [_client_nonce(keys[1]) for _ in range(100)]
    assert all(_key_for(n, keys) == keys[1] for n in nonces)
    assert len({n[-4:] for n in nonces}) > 90  # unlinkable: a fresh hint every time
    assert _key_for(_client_nonce(_subkey(b"unknown-key-0123456789")), keys) == keys[0]
