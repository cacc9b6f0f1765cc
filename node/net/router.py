"""One port, two stream protocols: gossip push-pulls and RPC channels.

API.md gives a node two addresses, HTTP and gossip; inter-node RPC shares the
gossip port's TCP listener. The two are told apart by their first four bytes:
an RPC channel starts with ``b"BRPC"`` (as a push-pull length that would be
over a gigabyte, far above the push-pull limit), anything else is gossip.

``StreamRouter`` takes over a Transport's ``accept()``. Gossip keeps using the
Transport interface through ``router.gossip`` (its ``accept()`` yields only
gossip streams, with the peeked bytes put back); RPC streams go to the handler
given to ``run``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from node.net.transport import Transport
from node.rpc.channel import PREFACE

#: A connection that sends nothing within this long is closed.
PEEK_TIMEOUT_S = 10.0

RpcHandler = Callable[[trio.abc.Stream, bytes], Awaitable[None]]


class PrefixedStream(trio.abc.Stream):
    """A stream whose first bytes were already read: they are served again first."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            out, self._prefix = self._prefix[:size], self._prefix[size:]
            await trio.lowlevel.checkpoint()
            return out
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


class _GossipView:
    """The Transport gossip sees: everything of the real one, accept() only its streams."""

    def __init__(self, transport: Transport, streams: trio.MemoryReceiveChannel[
            tuple[trio.abc.Stream, str]]) -> None:
        self._transport = transport
        self._streams = streams

    def __getattr__(self, name: str) -> object:
        return getattr(self._transport, name)

    async def accept(self) -> tuple[trio.abc.Stream, str]:
        try:
            return await self._streams.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise trio.ClosedResourceError("the router stopped") from None


class StreamRouter:
    def __init__(self, transport: Transport, *, max_pending: int = 64) -> None:
        self.transport = transport
        self._send, self._queued = trio.open_memory_channel[
            tuple[trio.abc.Stream, str]](max_pending)
        self.gossip: Transport = _GossipView(transport, self._queued)  # type: ignore[assignment]
        self.dropped = 0

    async def run(self, rpc: RpcHandler, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            try:
                while True:
                    try:
                        stream, peer = await self.transport.accept()
                    except trio.ClosedResourceError:
                        return  # the transport closed: nothing more will arrive
                    nursery.start_soon(self._route, stream, peer, rpc)
            finally:
                self._send.close()
                await self._close_queued()

    async def _close_queued(self) -> None:
        """Streams handed to gossip that it never took: close them, even while cancelled."""
        while True:
            try:
                stream, _ = self._queued.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)

    async def _route(self, stream: trio.abc.Stream, peer: str,
                     rpc: RpcHandler) -> None:
        head = b""
        try:
            with trio.move_on_after(PEEK_TIMEOUT_S):
                try:
                    while len(head) < len(PREFACE):
                        data = await stream.receive_some(len(PREFACE) - len(head))
                        if not data:
                            break
                        head += data
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    head = b""
        except BaseException:
            await trio.aclose_forcefully(stream)  # the node is stopping
            raise
        if len(head) < len(PREFACE):
            self.dropped += 1
            await trio.aclose_forcefully(stream)
            return
        if head == PREFACE:
            await rpc(stream, head)
            return
        try:
            self._send.send_nowait((PrefixedStream(stream, head), peer))
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.dropped += 1
            await stream.aclose()
