"""Conditional requests (RFC 9110 section 13): If-Match and If-None-Match with ETags."""

from __future__ import annotations

from node.errors import InvalidRequest

MAX_ETAGS = 100


def parse_etag_list(header: str) -> tuple[str, ...]:
    """ETags of a header as bare hex strings; ``("*",)`` for ``*``.

    Accepts quoted tags (the standard), weak ``W/`` tags and, leniently, bare
    tags, since many clients forget the quotes.
    """
    items = [item.strip() for item in header.split(",") if item.strip()]
    if not items or len(items) > MAX_ETAGS:
        raise InvalidRequest("malformed ETag list")
    tags = []
    for item in items:
        if item == "*":
            tags.append("*")
            continue
        if item.startswith("W/"):
            item = item[2:]
        if len(item) >= 2 and item[0] == item[-1] == '"':
            item = item[1:-1]
        if not item or '"' in item or len(item) > 200:
            raise InvalidRequest("malformed ETag")
        tags.append(item)
    return tuple(tags)


def matches(tags: tuple[str, ...], etag: str) -> bool:
    return "*" in tags or etag in tags


def read_condition(etag: str, if_match: str | None, if_none_match: str | None) -> int | None:
    """The status a GET or HEAD must answer instead of the blob (412 or 304), or None."""
    if if_match is not None and not matches(parse_etag_list(if_match), etag):
        return 412
    if if_none_match is not None and matches(parse_etag_list(if_none_match), etag):
        return 304
    return None
