"""Parsing and validating what clients send: query strings, JSON bodies, names.

Werkzeug's query parsing replaces bad UTF-8 with U+FFFD and keeps repeated
keys quietly, which would let a malformed blob name through as a different
name. So the raw query string is parsed here, strictly: bad percent-encoding,
bad UTF-8 or a repeated parameter is a 400.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from node.errors import InvalidName, InvalidRequest, TooLarge

MAX_QUERY_BYTES = 16 * 1024
MAX_JSON_BYTES = 64 * 1024
MAX_BLOB_NAME_BYTES = 1024

_CONTAINER_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_PERCENT_RE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def parse_query(raw: bytes) -> dict[str, str]:
    """The query's parameters; InvalidRequest on repetition or bad encoding."""
    if len(raw) > MAX_QUERY_BYTES:
        raise InvalidRequest("query string too long")
    params: dict[str, str] = {}
    for part in raw.split(b"&"):
        if not part:
            continue
        key_raw, _, value_raw = part.partition(b"=")
        key = _decode_component(key_raw, "parameter name")
        if key in params:
            raise InvalidRequest(f"query parameter {key!r} given more than once")
        params[key] = _decode_component(value_raw, f"parameter {key!r}")
    return params


def _decode_component(raw: bytes, what: str) -> str:
    if _PERCENT_RE.search(raw):
        raise InvalidRequest(f"bad percent-encoding in {what}")
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidName(f"{what} is not valid UTF-8") from None


def require(params: Mapping[str, str], key: str) -> str:
    if key not in params:
        raise InvalidRequest(f"missing query parameter {key!r}")
    return params[key]


def container_name(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidRequest("container must be a string")
    if not _CONTAINER_RE.fullmatch(value):
        raise InvalidName("container names are 3-63 characters of a-z, 0-9 and '-', "
                          "starting and ending with a letter or digit")
    return value


def blob_name(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidRequest("blob must be a string")
    encoded = value.encode("utf-8", errors="surrogatepass")
    if not 1 <= len(encoded) <= MAX_BLOB_NAME_BYTES:
        raise InvalidName(f"blob names are 1 to {MAX_BLOB_NAME_BYTES} bytes of UTF-8")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise InvalidName("blob names may not contain NUL or control characters")
    return value


def username(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidRequest("username must be a string")
    if not _USERNAME_RE.fullmatch(value):
        raise InvalidName("user names are 1-64 characters of letters, digits, '.', '_', "
                          "'@' and '-', starting with a letter or digit")
    return value


def password(value: Any, field: str, min_length: int) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a string")
    if not min_length <= len(value) <= 1024 or "\x00" in value:
        raise InvalidRequest(f"{field} must be {min_length} to 1024 characters, without NUL")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{field} is not valid Unicode text") from None
    return value


def limit(value: str | None, default: int, maximum: int) -> int:
    if value is None:
        return default
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise InvalidRequest(f"limit must be an integer from 1 to {maximum}")
    number = int(value)
    if not 1 <= number <= maximum:
        raise InvalidRequest(f"limit must be an integer from 1 to {maximum}")
    return number


def text_param(value: str, what: str, max_bytes: int = MAX_BLOB_NAME_BYTES) -> str:
    """A free-text parameter such as prefix, delimiter or marker."""
    if len(value.encode("utf-8", errors="surrogatepass")) > max_bytes:
        raise InvalidRequest(f"{what} is longer than {max_bytes} bytes")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise InvalidRequest(f"{what} may not contain NUL or control characters")
    return value


def json_object(body: bytes, allowed: set[str], required: set[str]) -> dict[str, Any]:
    """A JSON object with only ``allowed`` keys and all ``required`` ones."""
    if len(body) > MAX_JSON_BYTES:
        raise TooLarge(f"JSON bodies are limited to {MAX_JSON_BYTES} bytes")
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("the body is not valid JSON") from None
    except RecursionError:
        raise InvalidRequest("the JSON body is nested too deeply") from None
    if not isinstance(document, dict):
        raise InvalidRequest("the body must be a JSON object")
    unknown = set(document) - allowed
    if unknown:
        raise InvalidRequest(f"unknown fields: {', '.join(sorted(unknown))}")
    missing = required - set(document)
    if missing:
        raise InvalidRequest(f"missing fields: {', '.join(sorted(missing))}")
    return document
