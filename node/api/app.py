"""The Quart-Trio application of one node.

``create_app(services)`` builds a fresh app per node (never a module global), so
several nodes can run in one process. Every route goes through ``endpoint``,
which owns what all routes share: a request id, error mapping, metrics.

Direct dispatch: every route of the API is a plain path, so a request is looked
up in a dict and its view awaited directly (``_BackpressureConnection.
handle_request``), without Quart's request context, routing, signals, sessions
and response finalisation, which cost about as much CPU as a whole small GET's
own work. ``quart.request`` and ``current_app`` still work inside views: the
direct path sets the context variables they read. Anything else (an unknown
path, a wrong method) goes through Quart as before, for its 404 and 405.

Upload backpressure: Quart's ASGI loop moves body data from hypercorn's
bounded queue into an unbounded buffer as fast as the network delivers it, so a
fast client and a slow disk would pile a whole blob up in memory.
``_BackpressureConnection`` stops pulling from hypercorn while the buffer holds
more than ``BODY_HIGH_WATER`` bytes; hypercorn then stops reading the socket
and TCP slows the client down.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
import logging
import secrets
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, cast

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent
from quart import Response, current_app, request
from quart.globals import _cv_app, _cv_request
from quart.utils import encode_headers
from quart.wrappers.response import DataBody
from quart_trio import QuartTrio
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers.request import TrioBody, TrioRequest
from werkzeug.exceptions import HTTPException

from node.api.errors import domain_error, error_response, internal_error_response
from node.config import NodeConfig
from node.errors import (BlobstoreError, HeadersTooLarge, InvalidRequest, MethodNotAllowed,
                         NotFound, URITooLong)
from node.services import Services

BODY_HIGH_WATER = 1024 * 1024
#: An answer given before the request's body arrived (a refused upload) first reads and
#: drops a remainder up to this size, so the connection can be kept; a larger one closes it.
DRAIN_MAX_BYTES = 64 * 1024
DRAIN_TIMEOUT_S = 1.0

request_id: ContextVar[str] = ContextVar("request_id", default="-")
log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Response]]


class _BackpressureBody(TrioBody):
    def __init__(self, expected_content_length: int | None,
                 max_content_length: int | None) -> None:
        super().__init__(expected_content_length, max_content_length)
        self._drained = trio.Event()

    async def __anext__(self) -> bytes:
        data = await super().__anext__()
        self._drained.set()
        return data

    async def wait_below_high_water(self) -> None:
        while len(self._data) > BODY_HIGH_WATER and self._must_raise is None:
            self._drained = trio.Event()
            await self._drained.wait()


class _BackpressureRequest(TrioRequest):
    body_class = _BackpressureBody


def _over_limits(config: NodeConfig, request: Any) -> BlobstoreError | None:
    """What is wrong with a request before any route sees it: a head too large, too many
    header fields, or a query string too long."""
    if len(request.headers) > config.max_headers + 1:  # + Quart's own Remote-Addr
        return HeadersTooLarge(f"more than {config.max_headers} header fields")
    # Hypercorn bounds a head that arrives in pieces; one that arrives whole is counted here.
    size = sum(len(name) + len(value) + 4 for name, value in request.scope["headers"])
    if size + len(request.scope.get("raw_path", b"")) > config.max_header_bytes:
        return HeadersTooLarge(f"the request head is larger than {config.max_header_bytes} "
                               "bytes")
    if len(request.query_string) > config.max_query_bytes:
        return URITooLong(f"the query string is longer than {config.max_query_bytes} bytes")
    return None


@dataclass(slots=True)
class _DirectContext:
    """What ``quart.request`` and ``current_app`` read on the direct path."""

    request: Any
    app: Any


async def _send_response(send: ASGISendCallable, response: Response, head: bool) -> None:
    """Quart's ``_send_response`` without the empty closing message for a body that is one
    piece (one send fewer per small answer)."""
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": encode_headers(response.headers)})
    body = response.response
    if head or isinstance(body, DataBody):
        data = b"" if head else body.data  # type: ignore[attr-defined]
        await send({"type": "http.response.body", "body": data, "more_body": False})
        return
    async with body as pieces:
        async for data in pieces:
            await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class _BackpressureConnection(TrioASGIHTTPConnection):
    async def __call__(self, receive: ASGIReceiveCallable,  # type: ignore[override]
                       send: ASGISendCallable) -> None:
        """Shield each send: hypercorn closes or recycles the connection inside ``send``,
        and Quart-Trio cancels the request's nursery as soon as the response is out,
        which killed that work (``Connection: close`` ignored, idle keep-alive
        connections never reaped, SIGTERM waiting out the whole graceful timeout).
        The shield has its own deadline, so a client that never reads cannot hold
        a send, or the node's shutdown, forever.
        """
        timeout_s = self.app.services.config.send_timeout_s  # type: ignore[attr-defined]

        async def shielded_send(message: ASGISendEvent) -> None:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + timeout_s
                await send(message)
            if scope.cancelled_caught:
                raise trio.BrokenResourceError("client too slow to receive the response")

        await super().__call__(receive, shielded_send)

    async def handle_request(self, nursery: trio.Nursery, request: Any,  # type: ignore[override]
                             send: ASGISendCallable) -> None:
        refused = _over_limits(self.app.services.config, request)  # type: ignore[attr-defined]
        if refused is not None:
            head = request.method == "HEAD"
            await _send_response(send, error_response(refused, head=head), head=head)
            nursery.cancel_scope.cancel()
            return
        view = self.app.direct_views.get((request.method, request.path))  # type: ignore[attr-defined]
        if view is None:
            await super().handle_request(nursery, request, send)
            return
        context = _DirectContext(request, self.app)
        request_token, app_token = _cv_request.set(context), _cv_app.set(context)  # type: ignore[arg-type]
        try:
            response = await view()
        finally:
            _cv_request.reset(request_token)
            _cv_app.reset(app_token)
        await _send_response(send, response, head=request.method == "HEAD")
        nursery.cancel_scope.cancel()

    async def handle_messages(self, nursery: trio.Nursery, request: Any,  # type: ignore[override]
                              receive: ASGIReceiveCallable) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.request":
                request.body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    request.body.set_complete()
                await request.body.wait_below_high_water()
            elif message["type"] == "http.disconnect":
                break
        nursery.cancel_scope.cancel()


class BlobApp(QuartTrio):
    asgi_http_class = _BackpressureConnection  # type: ignore[assignment]
    request_class = _BackpressureRequest

    def __init__(self, services: Services) -> None:
        super().__init__("blobstore", static_folder=None)  # no unauthenticated file route
        self.services = services
        #: (method, path) -> view, for the direct path (see the module docstring).
        self.direct_views: dict[tuple[str, str], Handler] = {}
        self.config.update(MAX_CONTENT_LENGTH=None, BODY_TIMEOUT=None, RESPONSE_TIMEOUT=None,
                           PROVIDE_AUTOMATIC_OPTIONS=False)


def endpoint(name: str) -> Callable[[Handler], Handler]:
    """Wrap a route: request id, JSON errors, metrics by route, method and status."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(*args: Any, **kwargs: Any) -> Response:
            svc: Services = current_app.services  # type: ignore[attr-defined]
            rid = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)
            token = request_id.set(rid)
            started = trio.current_time()
            head = request.method == "HEAD"
            try:
                response = await handler(svc, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the one place errors become answers
                found = domain_error(exc)
                response = (error_response(found, head=head) if found is not None
                            else internal_error_response(exc, head=head))
            finally:
                request_id.reset(token)
            if not await _body_consumed():
                response.headers["Connection"] = "close"
            response.headers["X-Request-Id"] = rid
            svc.metrics.requests.labels(name, request.method, str(response.status_code)).inc()
            svc.metrics.latency.labels(name, request.method).observe(
                trio.current_time() - started)
            return response

        return wrapper

    return decorate


async def _body_consumed() -> bool:
    """Whether the request's body has been received whole, draining a small remainder.

    Hypercorn closes a connection whose request body was not received by the time the
    response ended, without saying so in the response, so a client reusing it would
    find it dead. A refused upload's small body is read and dropped instead; a large
    one is not worth reading, and the answer says ``Connection: close``.
    """
    body = request.body
    if body._complete.is_set() and not body._data:  # type: ignore[attr-defined]
        return True
    left = request.content_length
    if left is not None and left > DRAIN_MAX_BYTES:
        return False
    drained = 0
    with trio.move_on_after(DRAIN_TIMEOUT_S):
        try:
            async for piece in body:
                drained += len(piece)
                if drained > DRAIN_MAX_BYTES:
                    return False
        except Exception:  # noqa: BLE001 - a broken body cannot be kept alive either
            return False
        return True
    return False


def create_app(services: Services) -> BlobApp:
    from node.api import blobs, containers, openapi, ops, users

    app = BlobApp(services)
    for module in (users, containers, blobs, ops, openapi):
        module.register(app)

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        mapped: BlobstoreError
        if exc.code == 404:
            mapped = NotFound(f"no such endpoint: {request.path}")
        elif exc.code == 405:
            mapped = MethodNotAllowed(f"{request.method} is not allowed on {request.path}",
                                      allowed=getattr(exc, "valid_methods", None) or ())
        elif exc.code is not None and exc.code < 500:
            mapped = InvalidRequest(exc.description or "bad request")
            mapped.status = exc.code
        else:
            mapped = BlobstoreError("internal error; see the node's log")
        return error_response(mapped, head=request.method == "HEAD")

    for rule in app.url_map.iter_rules():
        if not rule.arguments:
            for method in rule.methods or ():
                if method != "OPTIONS":
                    app.direct_views[(method, rule.rule)] = cast(
                        Handler, app.view_functions[rule.endpoint])
    return app
