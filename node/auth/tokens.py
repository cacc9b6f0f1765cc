"""Bearer tokens: signed, self-contained, checked locally on any node.

A token is ``bst1.<payload>.<mac>`` where the payload (base64url JSON) names the
user, the user's id (so a recreated namesake gets no old token), the user's
token epoch when it was issued, and the expiry. The MAC is HMAC-SHA256 under
the signing key kept in the replicated metadata, so every node can check a
token without a round trip. Logout and password changes bump the user's epoch,
which revokes every older token at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

from node.errors import Unauthorized

PREFIX = "bst1"
MAX_TOKEN_LENGTH = 4096


@dataclass(frozen=True, slots=True)
class TokenClaims:
    username: str
    uid: int
    epoch: int
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, signed: str) -> str:
    return _b64(hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest())


def issue(key: bytes, claims: TokenClaims) -> str:
    payload = _b64(json.dumps(
        {"u": claims.username, "i": claims.uid, "e": claims.epoch, "x": claims.expires_at},
        separators=(",", ":")).encode())
    signed = f"{PREFIX}.{payload}"
    return f"{signed}.{_mac(key, signed)}"


def verify(key: bytes, token: str, now: float) -> TokenClaims:
    """The claims of a well-signed, unexpired token; Unauthorized otherwise.

    Does not check the epoch or that the user still exists: the caller compares
    the claims with the current metadata.
    """
    if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise Unauthorized("malformed token")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise Unauthorized("malformed token")
    if not hmac.compare_digest(_mac(key, f"{parts[0]}.{parts[1]}"), parts[2]):
        raise Unauthorized("bad token signature")
    try:
        body = json.loads(_unb64(parts[1]))
        claims = TokenClaims(str(body["u"]), int(body["i"]), int(body["e"]), float(body["x"]))
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
        raise Unauthorized("malformed token") from None
    if claims.expires_at <= now:
        raise Unauthorized("token expired")
    return claims
