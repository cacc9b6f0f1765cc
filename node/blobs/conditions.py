"""Conditional requests (RFC 9110 section 13): If-Match and If-None-Match with ETags."""

from __future__ import annotations

from node.errors import InvalidRequest

MAX_ETAGS = 100


def parse_etag_list(header: str) -> tuple[str, ...]:
    """ETags of a header without quotes; weak ones keep a ``W/`` mark; ``("*",)`` for ``*``.

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
        weak = item.startswith("W/")
        if weak:
            item = item[2:]
        if len(item) >= 2 and item[0] == item[-1] == '"':
            item = item[1:-1]
        if not item or '"' in item or len(item) > 200:
            raise InvalidRequest("malformed ETag")
        tags.append("W/" + item if weak else item)
    return tuple(tags)


def matches(tags: tuple[str, ...], etag: str, *, strong: bool) -> bool:
    """RFC 9110 comparison: If-Match is strong (a weak tag never matches), If-None-Match weak."""
    if "*" in tags or etag in tags:
        return True
    return not strong and f"W/{etag}" in tags


def read_condition(etag: str, if_match: str | None, if_none_match: str | None) -> int | None:
    """The status a GET or HEAD must answer instead of the blob (412 or 304), or None."""
    if if_match is not None and not matches(parse_etag_list(if_match), etag, strong=True):
        return 412
    if if_none_match is not None and matches(parse_etag_list(if_none_match), etag,
                                             strong=False):
        return 304
    return None
