"""Messages and calls between nodes over authenticated channels, one connection per peer.

Frames on a channel are one of::

    'M' | topic | body                     a one-way message (Raft's messages)
    'Q' | call id u64 | topic | body       a call
    'A' | call id u64 | status u8 | body   its answer (status 0 ok, 1 error text,
                                           2 refused: the handler did nothing)

Outbound, each peer has one channel and one sender task fed by a bounded
queue: a slow or dead peer drops its own messages (Raft retries by design) and
never blocks anyone else. Calls wait for their answer with a deadline.
Inbound channels arrive from the stream router; their frames go to the
handlers registered per topic.

Payloads: a call's body may end in a payload (a chunk) that a version 2
channel sends outside its MAC (``node.rpc.channel``). Only a topic whose
handler checks its payload against its authenticated body (a chunk against
its id) is registered to take one (``checks_payload``), and only a caller that
checks the answer that way takes an answer sent as a payload (a topic
registered ``answers_payload``, a call made with ``checks_answer``); any other
frame with unauthenticated bytes ends the channel. Outbound channels use the
newest version the peer announces (``version_of``); one that the peer has since
outgrown takes no more frames and closes once no call waits on it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import trio

from node.net.transport import Transport, TransportError
from node.rpc.channel import (DEFAULT_MAX_FRAME, VERSION, Buffer, Channel, ChannelError,
                              accept_channel, connect_channel)

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]
CallHandler = Callable[[str, bytes], Awaitable[bytes]]

#: A queued frame: its parts (the first holds the kind, call id and topic), its payload.
Frame = tuple[tuple[Buffer, ...], Buffer]
#: A received frame and the length of its authenticated part.
Received = tuple[bytes, int]

QUEUE_FRAMES = 1024
CONNECT_TIMEOUT_S = 2.0
#: After a failed connection attempt, messages to that peer are dropped for this long.
RECONNECT_BACKOFF_S = 0.5


class CallFailed(Exception):
    """The call could not be made or the peer answered with an error. Whether the peer
    acted on it is unknown, unless it is one of the subclasses below."""


class CallNotSent(CallFailed):
    """The call never left this node (no address, or the peer is known to be down)."""


class CallRefused(CallFailed):
    """The peer's handler raised ``Refused``: it did nothing, so a retry is safe."""


class Refused(Exception):
    """Raised by a call handler that declines the call without acting on it."""


@dataclass
class _Peer:
    address: str
    send: trio.MemorySendChannel[Frame]
    receive: trio.MemoryReceiveChannel[Frame]
    channel: Channel | None = None
    down_until: float = 0.0
    calls: dict[int, tuple[trio.Event, list[Received | BaseException]]] = field(
        default_factory=dict)
    #: The channel each call went out on: if it breaks, the answer can never come.
    sent_on: dict[int, Channel] = field(default_factory=dict)
    #: Replaced channels (outgrown), closed once no call waits on them.
    retiring: set[Channel] = field(default_factory=set)
    #: The task reading each outbound channel's answers; cancelling it closes the channel.
    readers: dict[Channel, trio.CancelScope] = field(default_factory=dict)

    def waits_on(self, channel: Channel) -> bool:
        return any(ch is channel for ch in self.sent_on.values())

    def close_drained(self) -> None:
        """Close the replaced channels no call waits on any more (answered or given up)."""
        for channel in [ch for ch in self.retiring if not self.waits_on(ch)]:
            self.retiring.discard(channel)
            if (reader := self.readers.get(channel)) is not None:
                reader.cancel()

    def settle(self, call_id: int, outcome: Received | BaseException) -> None:
        waiting = self.calls.get(call_id)
        self.sent_on.pop(call_id, None)
        if waiting is not None and not waiting[1]:
            waiting[1].append(outcome)
            waiting[0].set()


def _topic(name: str) -> bytes:
    raw = name.encode()
    return bytes((len(raw),)) + raw


def _split_topic(data: bytes, pos: int) -> tuple[str, int]:
    size = data[pos]
    return data[pos + 1:pos + 1 + size].decode(), pos + 1 + size


def _outcome(answer: Received, checks_answer: bool) -> bytes | CallFailed:
    """An answer frame's result (one copy of the body) or its error; only an error's body
    is text, and only a caller that checks the answer takes one sent as a payload."""
    frame, authenticated = answer
    body = memoryview(frame)[10:]
    if authenticated < len(frame) and not (checks_answer and frame[9] == 0):
        return CallFailed("the answer came outside the channel's MAC; it is not checked")
    if frame[9] == 0:
        return bytes(body)
    text = str(body, errors="replace")
    return CallRefused(text) if frame[9] == 2 else CallFailed(text)


class PeerNet:
    def __init__(self, node_id: str, transport: Transport, cluster_key: bytes,
                 address_of: Callable[[str], str | None], *,
                 accepted_keys: tuple[bytes, ...] = (),
                 max_frame_bytes: int = DEFAULT_MAX_FRAME,
                 version_of: Callable[[str], int] | None = None) -> None:
        """Channels this node opens use ``cluster_key``; those it accepts may use it or
        one of ``accepted_keys`` (a cluster key rotation). ``version_of`` tells the
        channel version a peer announces (by default, this node's own)."""
        self.node_id = node_id
        self._transport = transport
        self._key = cluster_key
        self._accepted_keys = accepted_keys
        self._address_of = address_of
        self._max_frame = max_frame_bytes
        self._peers: dict[str, _Peer] = {}
        self._messages: dict[str, MessageHandler] = {}
        self._calls: dict[str, CallHandler] = {}
        self._raw: set[str] = set()
        self._checks_payload: set[str] = set()
        self._answers_payload: set[str] = set()
        self._version_of = version_of or (lambda peer_id: VERSION)
        self._ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self.counters = {"sent": 0, "dropped": 0, "received": 0, "rejected": 0}

    def on_message(self, topic: str, handler: MessageHandler) -> None:
        self._messages[topic] = handler

    def on_call(self, topic: str, handler: CallHandler, *, raw: bool = False,
                checks_payload: bool = False, answers_payload: bool = False) -> None:
        """``raw``: the handler gets a ``memoryview`` of the received frame (no chunk-sized
        copy; it must copy what it keeps); otherwise it gets ``bytes``.
        ``checks_payload``: the handler checks the end of its body against the start (a
        chunk against its id), so that end may come as a payload outside the MAC.
        ``answers_payload``: the answer goes as a payload; callers pass ``checks_answer``."""
        self._calls[topic] = handler
        for flag, topics in ((raw, self._raw), (checks_payload, self._checks_payload),
                             (answers_payload, self._answers_payload)):
            if flag:
                topics.add(topic)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None  # stopped: whatever is still sent is dropped

    # -- outbound --------------------------------------------------------------------------

    def send(self, peer_id: str, topic: str, body: bytes) -> bool:
        """Queue a one-way message; False if it was dropped (peer unknown, down or slow)."""
        return self._enqueue(peer_id, ((b"M" + _topic(topic), body), b""))

    async def call(self, peer_id: str, topic: str, body: Buffer, *, timeout_s: float,
                   payload: Buffer = b"", checks_answer: bool = False) -> bytes:
        """``payload`` (a chunk) follows ``body`` without being joined to it, outside the
        MAC if the topic's handler checks it (see the module docstring); ``checks_answer``:
        the caller checks the answer (a chunk against its id), so it may come that way."""
        call_id = next(self._ids)
        peer = self._peer(peer_id)
        if peer is None:
            raise CallNotSent(f"no address for {peer_id}")
        done = trio.Event()
        box: list[Received | BaseException] = []
        peer.calls[call_id] = (done, box)
        try:
            head = b"Q" + call_id.to_bytes(8, "big") + _topic(topic)
            if not self._enqueue(peer_id, ((head, body), payload)):
                raise CallNotSent(f"{peer_id} is unreachable")
            with trio.move_on_after(timeout_s):
                await done.wait()
            if not box:
                raise CallFailed(f"{peer_id} did not answer within {timeout_s} s")
            if isinstance(box[0], BaseException):
                raise box[0]
            outcome = _outcome(box[0], checks_answer)
            if isinstance(outcome, CallFailed):
                raise outcome
            return outcome
        finally:
            peer.calls.pop(call_id, None)
            peer.sent_on.pop(call_id, None)
            peer.close_drained()

    def _peer(self, peer_id: str) -> _Peer | None:
        peer = self._peers.get(peer_id)
        address = self._address_of(peer_id)
        if address is None:
            return peer
        if peer is None or peer.address != address:
            if self._nursery is None:
                return None
            if peer is not None:
                peer.send.close()
            send, receive = trio.open_memory_channel[Frame](QUEUE_FRAMES)
            peer = self._peers[peer_id] = _Peer(address, send, receive)
            self._nursery.start_soon(self._sender, peer_id, peer)
        return peer

    def _enqueue(self, peer_id: str, frame: Frame) -> bool:
        peer = self._peer(peer_id)
        if peer is None or trio.current_time() < peer.down_until:
            self.counters["dropped"] += 1
            return False
        try:
            peer.send.send_nowait(frame)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.counters["dropped"] += 1
            return False
        return True

    async def _sender(self, peer_id: str, peer: _Peer) -> None:
        try:
            async with peer.receive:
                async for parts, payload in peer.receive:
                    head = parts[0]
                    call_id = int.from_bytes(head[1:9], "big") if head[:1] == b"Q" else 0
                    if peer.channel is not None and self._outgrown(peer.channel):
                        self._retire(peer, peer.channel)
                    channel = peer.channel or await self._connect(peer_id, peer)
                    if channel is None:
                        self.counters["dropped"] += 1
                        peer.settle(call_id, CallNotSent(f"cannot connect to {peer_id}"))
                        continue
                    if call_id:
                        peer.sent_on[call_id] = channel
                    try:
                        await channel.send(*parts, payload=payload)
                        self.counters["sent"] += 1
                    except ChannelError:
                        peer.channel = None
                        self.counters["dropped"] += 1
                        await trio.aclose_forcefully(channel.stream)
                        self._fail_calls_on(peer, channel)
        finally:
            if peer.channel is not None:
                await trio.aclose_forcefully(peer.channel.stream)

    def _version_for(self, peer_id: str) -> int:
        """The channel version to use with ``peer_id``: the newest both ends speak."""
        return max(1, min(VERSION, self._version_of(peer_id)))

    def _outgrown(self, channel: Channel) -> bool:
        """The peer announces a newer version than the channel's (an upgrade; or at start,
        a channel opened before gossip brought the peer's tags)."""
        return channel.version < self._version_for(channel.peer)

    @staticmethod
    def _retire(peer: _Peer, channel: Channel) -> None:
        """No more frames go out on ``channel``; its answers still come back on it."""
        peer.channel = None
        peer.retiring.add(channel)
        peer.close_drained()

    async def _connect(self, peer_id: str, peer: _Peer) -> Channel | None:
        if trio.current_time() < peer.down_until:
            return None
        stream: trio.abc.Stream | None = None
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                stream = await self._transport.connect(peer.address,
                                                       timeout_s=CONNECT_TIMEOUT_S)
                channel = await connect_channel(
                    stream, self._key, self.node_id, peer=peer_id,
                    max_frame_bytes=self._max_frame,
                    version=self._version_for(peer_id))
        except BaseException as exc:  # noqa: BLE001 - cancellation too: never leak the socket
            if stream is not None:
                await trio.aclose_forcefully(stream)
            if not isinstance(exc, (TransportError, ChannelError, trio.TooSlowError,
                                    ValueError)):
                raise
            log.debug("cannot reach peer", extra={"peer": peer_id, "why": repr(exc)})
            peer.down_until = trio.current_time() + RECONNECT_BACKOFF_S
            return None
        peer.channel = channel
        peer.readers[channel] = trio.CancelScope()  # may be cancelled before it is entered
        assert self._nursery is not None
        self._nursery.start_soon(self._read_answers, peer, channel)
        return channel

    async def _read_answers(self, peer: _Peer, channel: Channel) -> None:
        """Our outbound channel carries the answers to our calls back."""
        try:
            with peer.readers[channel]:
                while (received := await channel.receive_frame()) is not None:
                    frame = received[0]
                    if frame[:1] == b"A" and len(frame) >= 10:
                        peer.settle(int.from_bytes(frame[1:9], "big"), received)
        except ChannelError:
            pass
        finally:
            del peer.readers[channel]
            peer.retiring.discard(channel)
            if peer.channel is channel:
                peer.channel = None
            self._fail_calls_on(peer, channel)
            await trio.aclose_forcefully(channel.stream)

    @staticmethod
    def _fail_calls_on(peer: _Peer, channel: Channel) -> None:
        """The connection is gone and the answers with it: fail those calls now rather than
        at their deadline (the peer may have acted on them: the outcome is unknown)."""
        for call_id in [c for c, ch in peer.sent_on.items() if ch is channel]:
            peer.settle(call_id, CallFailed("the connection was lost before the answer"))

    # -- inbound ---------------------------------------------------------------------------

    async def serve(self, stream: trio.abc.Stream, head: bytes) -> None:
        """Handle one inbound connection (the stream router's RPC handler)."""
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                channel = await accept_channel(stream, self._key,
                                               accepted_keys=self._accepted_keys,
                                               initial=head, max_frame_bytes=self._max_frame)
        except BaseException as exc:  # noqa: BLE001 - cancellation too: never leak the socket
            await trio.aclose_forcefully(stream)
            if not isinstance(exc, (ChannelError, trio.TooSlowError)):
                raise
            self.counters["rejected"] += 1
            return
        try:
            async with trio.open_nursery() as nursery:
                try:
                    while (received := await channel.receive_frame()) is not None:
                        self.counters["received"] += 1
                        self._dispatch(nursery, channel, *received)
                except (ChannelError, IndexError, UnicodeDecodeError):
                    self.counters["rejected"] += 1
                nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(channel.stream)

    def _dispatch(self, nursery: trio.Nursery, channel: Channel, frame: bytes,
                  authenticated: int) -> None:
        """A ChannelError for bytes outside the MAC that no handler checks (see the module
        docstring): the peer breaks the protocol, or someone on the path does."""
        kind = frame[:1]
        if kind == b"M":
            if authenticated < len(frame):
                raise ChannelError("a message carried bytes outside the MAC")
            topic, pos = _split_topic(frame, 1)
            handler = self._messages.get(topic)
            if handler is not None:
                handler(channel.peer, bytes(frame[pos:]))
        elif kind == b"Q":
            call_id = frame[1:9]
            topic, pos = _split_topic(frame, 9)
            if authenticated < len(frame) and (topic not in self._checks_payload or
                                                authenticated < pos):
                raise ChannelError(f"a {topic!r} call carried bytes outside the MAC")
            # A raw handler gets a view of the frame: the chunk is not copied again.
            body = memoryview(frame)[pos:] if topic in self._raw else bytes(frame[pos:])
            nursery.start_soon(self._answer, channel, call_id, topic, body)

    async def _answer(self, channel: Channel, call_id: bytes, topic: str,
                      body: bytes | memoryview) -> None:
        handler = self._calls.get(topic)
        try:
            if handler is None:
                raise Refused(f"no handler for {topic!r}")
            # Only handlers registered raw get the memoryview; they are written for it.
            result = await handler(channel.peer, cast(bytes, body))
            answer, payload = (((b"A" + call_id + b"\x00",), result)
                               if topic in self._answers_payload else
                               ((b"A" + call_id + b"\x00", result), b""))
        except Refused as exc:
            answer, payload = (b"A" + call_id + b"\x02", str(exc).encode()[:1000]), b""
        except Exception as exc:  # noqa: BLE001 - any failure goes back to the caller as text
            answer, payload = (b"A" + call_id + b"\x01", str(exc).encode()[:1000]), b""
        try:
            await channel.send(*answer, payload=payload)
        except ChannelError:
            pass
