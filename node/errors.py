"""The node's exceptions, each carrying the HTTP status and API error code it maps to.

The tree::

    BlobstoreError                      500 InternalError (never raised for bad input)
    ├── InvalidRequest                  400 InvalidRequest
    │   ├── InvalidName                 400 InvalidName
    │   └── BadDigest                   400 BadDigest
    ├── Unauthorized                    401 Unauthorized
    ├── Forbidden                       403 Forbidden
    ├── NotFound                        404 (abstract)
    │   ├── ContainerNotFound           404 ContainerNotFound
    │   ├── BlobNotFound                404 BlobNotFound
    │   └── UserNotFound                404 UserNotFound
    ├── MethodNotAllowed                405 MethodNotAllowed (carries Allow)
    ├── RequestTimeout                  408 RequestTimeout
    ├── Conflict                        409 (abstract)
    │   ├── ContainerExists             409 ContainerExists
    │   ├── ContainerNotEmpty           409 ContainerNotEmpty
    │   └── UserExists                  409 UserExists
    ├── LengthRequired                  411 LengthRequired
    ├── PreconditionFailed              412 PreconditionFailed
    ├── TooLarge                        413 TooLarge
    ├── RangeNotSatisfiable             416 InvalidRange
    ├── TooManyRequests                 429 TooManyRequests (carries Retry-After)
    ├── Unavailable                     503 Unavailable (no quorum, no intact copy: retry)
    │   └── ChunkUnavailable            503 Unavailable (missing or corrupt chunk)
    │       └── ChunkCorrupt            503 Unavailable (hash mismatch on read)
    └── InsufficientStorage             507 InsufficientStorage

The API layer maps any ``BlobstoreError`` to ``{"error": {"code", "message"}}``
in one place (``node.api.errors``). Domain errors raised while applying a
metadata command are part of that command's deterministic result, so they are
also what the coordinator will replicate.
"""

from __future__ import annotations

from collections.abc import Iterable


class BlobstoreError(Exception):
    status: int = 500
    code: str = "InternalError"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code)
        self.message = message or self.code


class InvalidRequest(BlobstoreError):
    status = 400
    code = "InvalidRequest"


class InvalidName(InvalidRequest):
    code = "InvalidName"


class BadDigest(InvalidRequest):
    code = "BadDigest"


class Unauthorized(BlobstoreError):
    status = 401
    code = "Unauthorized"


class Forbidden(BlobstoreError):
    status = 403
    code = "Forbidden"


class NotFound(BlobstoreError):
    status = 404
    code = "NotFound"


class ContainerNotFound(NotFound):
    code = "ContainerNotFound"


class BlobNotFound(NotFound):
    code = "BlobNotFound"


class UserNotFound(NotFound):
    code = "UserNotFound"


class MethodNotAllowed(BlobstoreError):
    """Carries the methods the path does allow: RFC 9110 requires them in ``Allow``."""

    status = 405
    code = "MethodNotAllowed"

    def __init__(self, message: str = "", *, allowed: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.allowed = tuple(sorted(set(allowed)))


class RequestTimeout(BlobstoreError):
    status = 408
    code = "RequestTimeout"


class Conflict(BlobstoreError):
    status = 409
    code = "Conflict"


class ContainerExists(Conflict):
    code = "ContainerExists"


class ContainerNotEmpty(Conflict):
    code = "ContainerNotEmpty"


class UserExists(Conflict):
    code = "UserExists"


class LengthRequired(BlobstoreError):
    status = 411
    code = "LengthRequired"


class PreconditionFailed(BlobstoreError):
    status = 412
    code = "PreconditionFailed"


class TooLarge(BlobstoreError):
    status = 413
    code = "TooLarge"


class URITooLong(BlobstoreError):
    status = 414
    code = "URITooLong"


class RangeNotSatisfiable(BlobstoreError):
    status = 416
    code = "InvalidRange"

    def __init__(self, message: str = "", *, size: int = 0) -> None:
        super().__init__(message)
        self.size = size


class TooManyRequests(BlobstoreError):
    status = 429
    code = "TooManyRequests"

    def __init__(self, message: str = "", *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(BlobstoreError):
    status = 503
    code = "Unavailable"


class ChunkUnavailable(Unavailable):
    """No intact copy of a chunk could be read."""


class ChunkCorrupt(ChunkUnavailable):
    """A chunk's bytes do not hash to its name; the copy has been quarantined."""


class HeadersTooLarge(BlobstoreError):
    status = 431
    code = "RequestHeaderFieldsTooLarge"


class InsufficientStorage(BlobstoreError):
    status = 507
    code = "InsufficientStorage"


class ConfigError(Exception):
    """A setting is unknown or malformed; the node refuses to start."""


#: Domain errors that a metadata command may return as its result, by code.
#: The state machine returns them instead of raising across the worker thread,
#: and the replicated log will carry them by this name.
COMMAND_ERRORS: dict[str, type[BlobstoreError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        Forbidden,
        ContainerNotFound,
        BlobNotFound,
        UserNotFound,
        ContainerExists,
        ContainerNotEmpty,
        UserExists,
        PreconditionFailed,
    )
}
