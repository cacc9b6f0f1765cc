"""Bearer tokens: issue/verify, tampering, keys, expiry, and malformed input."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random

import pytest

from node.auth.tokens import MAX_TOKEN_LENGTH, PREFIX, TokenClaims, issue, verify
from node.errors import Unauthorized

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NOW = 1_800_000_000.0
CLAIMS = TokenClaims(username="alice", uid=42, epoch=3, expires_at=NOW + 3600)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(key: bytes, payload: str) -> str:
    """A correctly signed token around an arbitrary payload string."""
    mac = b64(hmac.new(key, f"{PREFIX}.{payload}".encode(), hashlib.sha256).digest())
    return f"{PREFIX}.{payload}.{mac}"


def test_round_trip() -> None:
    token = issue(KEY, CLAIMS)
    assert token.startswith("bst1.") and token.count(".") == 2
    assert token.isascii()
    assert verify(KEY, token, NOW) == CLAIMS


@pytest.mark.parametrize("username", ["", "é\U0001F600", "a.b", "x" * 200, '"quoted"'])
def test_round_trip_odd_usernames(username: str) -> None:
    claims = TokenClaims(username, 1, 0, NOW + 1)
    assert verify(KEY, issue(KEY, claims), NOW) == claims


def test_expiry_is_exclusive() -> None:
    token = issue(KEY, CLAIMS)
    assert verify(KEY, token, CLAIMS.expires_at - 0.001) == CLAIMS
    with pytest.raises(Unauthorized):
        verify(KEY, token, CLAIMS.expires_at)
    with pytest.raises(Unauthorized):
        verify(KEY, token, CLAIMS.expires_at + 10)


def test_wrong_key() -> None:
    with pytest.raises(Unauthorized):
        verify(OTHER_KEY, issue(KEY, CLAIMS), NOW)


def test_every_single_character_change_is_rejected() -> None:
    token = issue(KEY, CLAIMS)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    for i, old in enumerate(token):
        for new in {alphabet[(alphabet.index(old) + 1) % len(alphabet)], "A", "."} - {old}:
            tampered = token[:i] + new + token[i + 1:]
            with pytest.raises(Unauthorized):
                verify(KEY, tampered, NOW)


def test_payload_swap_is_rejected() -> None:
    mine = issue(KEY, CLAIMS)
    theirs = issue(KEY, TokenClaims("admin", 1, 0, NOW + 3600))
    prefix, _, mac = mine.split(".")
    other_payload = theirs.split(".")[1]
    with pytest.raises(Unauthorized):
        verify(KEY, f"{prefix}.{other_payload}.{mac}", NOW)


def test_padding_and_truncation_rejected() -> None:
    token = issue(KEY, CLAIMS)
    for bad in (token + "=", token + "==", token[:-1], token + ".", "." + token, token + "A"):
        with pytest.raises(Unauthorized):
            verify(KEY, bad, NOW)


MALFORMED = [
    "", ".", "..", "...", "bst1", "bst1.", "bst1..", "bst1.x.y", "bst2.a.b", "BST1.a.b",
    "Bearer bst1.a.b", "bst1.a.b.c", "\x00", "é", "bst1.é.b", "bst1.\U0001F600.x",
    "x" * (MAX_TOKEN_LENGTH + 1), "bst1." + "A" * MAX_TOKEN_LENGTH + ".x", "\ud800",
    " bst1.a.b", "bst1.a.b\n",
]


@pytest.mark.parametrize("token", MALFORMED)
def test_malformed_strings_raise_unauthorized(token: str) -> None:
    with pytest.raises(Unauthorized):
        verify(KEY, token, NOW)


SIGNED_GARBAGE = [
    pytest.param("", id="empty-payload"),
    pytest.param("!!!!", id="not-base64"),
    pytest.param("A", id="impossible-base64-length"),
    pytest.param(b64(b"\xff\xfe"), id="not-utf8"),
    pytest.param(b64(b"not json"), id="not-json"),
    pytest.param(b64(b"[]"), id="json-list"),
    pytest.param(b64(b"1"), id="json-number"),
    pytest.param(b64(b'"s"'), id="json-string"),
    pytest.param(b64(b"null"), id="json-null"),
    pytest.param(b64(b"{}"), id="json-empty-object"),
    pytest.param(b64(json.dumps({"u": "a", "i": 1, "e": 0}).encode()), id="no-expiry"),
    pytest.param(b64(json.dumps({"u": "a", "i": "x", "e": 0, "x": NOW + 9}).encode()),
                 id="uid-not-a-number"),
    pytest.param(b64(json.dumps({"u": "a", "i": 1, "e": [], "x": NOW + 9}).encode()),
                 id="epoch-a-list"),
    pytest.param(b64(json.dumps({"u": "a", "i": 1, "e": 0, "x": "soon"}).encode()),
                 id="expiry-a-word"),
    pytest.param(b64(json.dumps({"u": "a", "i": 1, "e": 0, "x": None}).encode()),
                 id="expiry-null"),
    pytest.param(b64(b'{"u":"a","i":1e999,"e":0,"x":1e999}'), id="infinite-uid"),
    pytest.param(b64(b'{"u":"a","i":NaN,"e":0,"x":Infinity}'), id="nan-uid"),
    pytest.param(b64(b"[" * 1450 + b"]" * 1450), id="deeply-nested"),
]


@pytest.mark.parametrize("payload", SIGNED_GARBAGE)
def test_signed_garbage_raises_unauthorized(payload: str) -> None:
    """Even a payload carrying a valid MAC must fail as Unauthorized, never crash."""
    token = signed(KEY, payload)
    assert len(token) <= MAX_TOKEN_LENGTH
    with pytest.raises(Unauthorized):
        verify(KEY, token, NOW)


def test_random_strings_only_ever_raise_unauthorized() -> None:
    seed = 1234
    rng = random.Random(seed)
    token = issue(KEY, CLAIMS)
    alphabet = token + "=.+/é\x00 \U0001F600"
    for _ in range(3000):
        if rng.random() < 0.5:
            candidate = "".join(rng.choices(alphabet, k=rng.randint(0, 120)))
        else:
            chars = list(token)
            for _ in range(rng.randint(1, 4)):
                chars[rng.randrange(len(chars))] = rng.choice(alphabet)
            candidate = "".join(chars)
        if candidate == token:
            continue
        try:
            verify(KEY, candidate, NOW)
        except Unauthorized:
            pass
        except Exception as exc:  # pragma: no cover - a failure report
            pytest.fail(f"seed={seed}: {candidate!r} raised {exc!r}")
        else:  # pragma: no cover
            pytest.fail(f"seed={seed}: {candidate!r} verified")
