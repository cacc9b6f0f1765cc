"""The one place exceptions become HTTP answers: ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import json
import logging
import math

from quart import Response

from node.errors import BlobstoreError, MethodNotAllowed, RangeNotSatisfiable, TooManyRequests

log = logging.getLogger(__name__)


def domain_error(exc: BaseException) -> BlobstoreError | None:
    """The BlobstoreError behind ``exc``, looking inside exception groups from nurseries."""
    if isinstance(exc, BlobstoreError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = domain_error(inner)
            if found is not None:
                return found
    return None


def error_response(exc: BlobstoreError, *, head: bool = False) -> Response:
    body = json.dumps({"error": {"code": exc.code, "message": exc.message}})
    response = Response("" if head else body, status=exc.status,
                        content_type="application/json")
    if isinstance(exc, TooManyRequests):
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    if isinstance(exc, RangeNotSatisfiable):
        response.headers["Content-Range"] = f"bytes */{exc.size}"
    if isinstance(exc, MethodNotAllowed) and exc.allowed:
        response.headers["Allow"] = ", ".join(exc.allowed)
    return response


def internal_error_response(exc: BaseException, *, head: bool = False) -> Response:
    log.error("unexpected error answering a request", exc_info=exc)
    return error_response(BlobstoreError("internal error; see the node's log"), head=head)


def json_response(value: object, status: int = 200) -> Response:
    return Response(json.dumps(value, ensure_ascii=False), status=status,
                    content_type="application/json")


def no_content() -> Response:
    return Response("", status=204)
