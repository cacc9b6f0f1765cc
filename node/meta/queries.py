"""Reads of the metadata: manifests, listings, container statistics, chunk references.

Each function takes a reader connection and runs inside one read transaction
(``Database.read``), so a listing page is a consistent snapshot.

Ordering: sqlite compares TEXT with memcmp on its UTF-8 encoding, which is
exactly the UTF-8 byte order the API promises. Code point order is the same
order, which ``prefix_successor`` relies on.
"""

from __future__ import annotations

from node.meta.records import ContainerStats, ListPage, Manifest
from node.meta.state import MANIFEST_COLUMNS, is_inline, manifest_from_row
from node.store.db import Connection

_MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


def prefix_successor(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix``.

    None when no such string exists (the prefix is all U+10FFFF), meaning
    "to the end".
    """
    chars = list(prefix)
    while chars:
        point = ord(chars.pop()) + 1
        if point in _SURROGATES:
            point = _SURROGATES.stop
        if point <= _MAX_CODE_POINT:
            return "".join(chars) + chr(point)
    return None


def get_manifest(conn: Connection, container: str, blob: str) -> Manifest | None:
    row = conn.execute(f"SELECT {MANIFEST_COLUMNS} FROM blobs WHERE container = ? AND name = ?",
                       (container, blob)).fetchone()
    return manifest_from_row(row) if row else None


def get_blob(conn: Connection, container: str,
             blob: str) -> tuple[Manifest | None, bytes | None]:
    """The manifest and, for a blob stored inline, its bytes (read in the same snapshot)."""
    manifest = get_manifest(conn, container, blob)
    if manifest is None or not is_inline(manifest):
        return manifest, None
    row = conn.execute("SELECT data FROM inline_data WHERE version = ?",
                       (manifest.version,)).fetchone()
    return manifest, bytes(row[0]) if row else None


def _names_from(conn: Connection, container: str, after: str | None, inclusive: bool,
                upper: str | None, limit: int) -> list[tuple]:
    sql = f"SELECT {MANIFEST_COLUMNS} FROM blobs WHERE container = ?"
    args: list[object] = [container]
    if after is not None:
        sql += " AND name >= ?" if inclusive else " AND name > ?"
        args.append(after)
    if upper is not None:
        sql += " AND name < ?"
        args.append(upper)
    sql += " ORDER BY name LIMIT ?"
    args.append(limit)
    return conn.execute(sql, args).fetchall()


def list_blobs(conn: Connection, container: str, prefix: str, delimiter: str,
               marker: str, limit: int) -> ListPage:
    """One page of a listing, with S3 ListObjects (v1) semantics.

    Names and rolled-up prefixes share the ``limit``. ``next_marker`` is the last
    item returned when more remain. A common prefix at or before the marker was
    returned on an earlier page, so it is skipped: paging never repeats one.
    """
    upper = prefix_successor(prefix) if prefix else None
    cursor: str | None = prefix if prefix else None
    inclusive = True
    if marker and (cursor is None or marker >= cursor):
        cursor, inclusive = marker, False
    items: list[tuple[str, Manifest | None]] = []
    while len(items) <= limit:
        rows = _names_from(conn, container, cursor, inclusive, upper, limit + 1 - len(items))
        if not rows:
            break
        for row in rows:
            name = row[1]
            cut = name.find(delimiter, len(prefix)) if delimiter else -1
            if cut < 0:
                items.append((name, manifest_from_row(row)))
                cursor, inclusive = name, False
                continue
            rolled = name[:cut + len(delimiter)]
            if not (marker and rolled <= marker):
                items.append((rolled, None))
            cursor, inclusive = prefix_successor(rolled), True
            break
        if cursor is None:
            break
    truncated = len(items) > limit
    page = items[:limit]
    return ListPage(blobs=tuple(m for _, m in page if m is not None),
                    prefixes=tuple(name for name, m in page if m is None),
                    next_marker=page[-1][0] if truncated and page else None)


def container_stats(conn: Connection, names: list[str] | None) -> list[ContainerStats]:
    """Containers sorted by name; all of them when ``names`` is None."""
    sql = "SELECT name, owner, created_at, blob_count, bytes FROM containers"
    if names is None:
        rows = conn.execute(sql + " ORDER BY name").fetchall()
    else:
        rows = []
        for name in sorted(names):
            row = conn.execute(sql + " WHERE name = ?", (name,)).fetchone()
            if row:
                rows.append(row)
    return [ContainerStats(*row) for row in rows]


def unreferenced(conn: Connection, chunks: list[bytes]) -> list[bytes]:
    """The chunks no committed manifest refers to."""
    return [chunk for chunk in chunks
            if conn.execute("SELECT 1 FROM chunk_refs WHERE chunk = ?", (chunk,)).fetchone()
            is None]
