"""Serving the API: Hypercorn's trio worker, with a limit on connections.

Hypercorn takes every connection it is offered; a client that opens thousands
(or a slowloris that keeps each one alive) would run the node out of file
descriptors and memory. ``serve`` is Hypercorn's own ``worker_serve`` (same
listeners, same per-connection ``TCPServer``, same graceful shutdown) with one
step added in front of each connection: ``ConnectionLimits.admit`` counts the
node's open connections and each client address's, and a connection over
either limit is answered ``503`` with ``Connection: close`` (plain HTTP) or
simply closed (TLS, before the handshake) instead of being served.

The other limits on a connection are Hypercorn's own settings, set by the node
(``node.node``): the largest request head (``h11_max_incomplete_size``, which
also bounds the number of headers and the request line), and the idle timeout
that cuts a keep-alive connection, or a client trickling its request head.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial

import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ASGIFramework, ConnectionState
from hypercorn.utils import raise_shutdown, repr_socket_addr, ShutdownError, wrap_app

log = logging.getLogger(__name__)

_BODY = json.dumps({"error": {"code": "Unavailable", "message":
                              "too many connections; retry later"}}).encode()
#: What a connection over a limit gets before it is closed (no request is read).
REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
           b"Retry-After: 1\r\nConnection: close\r\nContent-Length: " +
           str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY)


class ConnectionLimits:
    """Open connections of the node and of each client address, against their limits."""

    def __init__(self, *, total: int, per_client: int) -> None:
        self.total_limit = total
        self.per_client_limit = per_client
        self.open = 0
        self._by_client: Counter[str] = Counter()
        self.refused = 0

    def admit(self, client: str) -> bool:
        if self.open >= self.total_limit or self._by_client[client] >= self.per_client_limit:
            self.refused += 1
            return False
        self.open += 1
        self._by_client[client] += 1
        return True

    def release(self, client: str) -> None:
        self.open -= 1
        self._by_client[client] -= 1
        if self._by_client[client] <= 0:
            del self._by_client[client]


class _Connection(TCPServer):
    """Hypercorn's connection, ended when the client is.

    Hypercorn leaves its keep-alive timer running after the client closes, so the task,
    its socket and its file descriptor lived on for ``keep_alive_timeout_s`` (75 s) after
    every closed connection: a client opening a connection per request piled up thousands
    of them. Once the connection is closed there is nothing left to time out; a request
    still in flight keeps the task (and the connection's slot) until it returns."""

    async def _read_data(self) -> None:
        await super()._read_data()
        await self.idle_task.stop()


def _client_of(stream: trio.abc.Stream) -> str:
    inner = getattr(stream, "transport_stream", stream)
    try:
        return str(inner.socket.getpeername()[0])  # type: ignore[attr-defined,union-attr]
    except (OSError, AttributeError):
        return "unknown"


async def serve(app: ASGIFramework, config: Config, limits: ConnectionLimits, *,
                shutdown_trigger: Callable[[], Awaitable[None]],
                task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Hypercorn's ``worker_serve`` with ``limits`` in front of every connection."""
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    state: dict[str, object] = {}
    lifespan = Lifespan(wrapped, config, state)  # type: ignore[arg-type]
    context = WorkerContext(None)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            listeners, binds = _listeners(config)
            for bind in binds:
                log.info("serving the API on %s", bind)

            async def connection(stream: trio.abc.Stream) -> None:
                client = _client_of(stream)
                if not limits.admit(client):
                    await _refuse(stream)
                    return
                try:
                    await _Connection(wrapped, config, context,
                                      ConnectionState(state.copy()),  # type: ignore[arg-type]
                                      stream)  # type: ignore[arg-type]
                finally:
                    limits.release(client)

            task_status.started(binds)
            try:
                async with trio.open_nursery(strict_exception_groups=True) as nursery:
                    nursery.start_soon(raise_shutdown, shutdown_trigger)
                    nursery.start_soon(raise_shutdown, context.terminate.wait)
                    nursery.start_soon(partial(trio.serve_listeners, connection, listeners,
                                               handler_nursery=server_nursery))
                    await trio.sleep_forever()
            except BaseExceptionGroup as error:
                _, other = error.split((ShutdownError, KeyboardInterrupt))
                if other is not None:
                    raise other
            finally:
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + \
                    config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


def _listeners(config: Config) -> tuple[list[trio.abc.Listener[trio.abc.Stream]], list[str]]:
    sockets = config.create_sockets()
    ssl_context = config.create_ssl_context()
    listeners: list[trio.abc.Listener[trio.abc.Stream]] = []
    binds = []
    for sock in sockets.secure_sockets:
        assert ssl_context is not None  # secure sockets exist only with a certificate
        sock.listen(config.backlog)
        listeners.append(trio.SSLListener(  # type: ignore[arg-type]
            trio.SocketListener(trio.socket.from_stdlib_socket(sock)), ssl_context,
            https_compatible=True))
        binds.append(f"https://{repr_socket_addr(sock.family, sock.getsockname())}")
    for sock in sockets.insecure_sockets:
        sock.listen(config.backlog)
        listeners.append(trio.SocketListener(  # type: ignore[arg-type]
            trio.socket.from_stdlib_socket(sock)))
        binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
    return listeners, binds


async def _refuse(stream: trio.abc.Stream) -> None:
    """A plain connection gets a 503 (nothing of its request is read); a TLS one is closed
    before its handshake, which would cost the node more than the refusal is worth."""
    with trio.move_on_after(1.0):
        if not isinstance(stream, trio.SSLStream):
            try:
                await stream.send_all(REFUSED)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
    await trio.aclose_forcefully(stream)
