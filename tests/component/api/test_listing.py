"""GET /list_blobs (API.md, "Blobs"): prefix, delimiter, marker, limit and UTF-8 byte order."""

from __future__ import annotations


import pytest
import trio

from node.clock import rfc3339
from node.meta import commands as c
from node.testing.inprocess import NodeHandle

from api_support import (Problems, assert_error, create_container, create_user, list_names,
                         md5_hex, parse_rfc3339, put, q)

Headers = dict[str, str]


def utf8_sorted(names: list[str]) -> list[str]:
    return sorted(names, key=lambda s: s.encode("utf-8"))


async def put_names(node: NodeHandle, headers: Headers, container: str,
                    names: list[str]) -> None:
    for name in names:
        await put(node, headers, container, name, name.encode())


async def page_through(node: NodeHandle, headers: Headers, container: str, limit: int,
                       **params: str) -> tuple[list[str], int]:
    """Every name and prefix of a listing, following next_marker; and the pages taken."""
    seen: list[str] = []
    marker: str | None = None
    pages = 0
    while True:
        extra = dict(params, limit=str(limit))
        if marker is not None:
            extra["marker"] = marker
        body = await list_names(node, headers, container, **extra)
        pages += 1
        items = [b["blob"] for b in body["blobs"]] + body["prefixes"]
        assert len(items) <= limit
        seen += items
        marker = body["next_marker"]
        if marker is None:
            return seen, pages
        assert items, "a page with a next_marker must not be empty"
        assert pages <= 1000, "paging does not end"


# -- the answer's shape -------------------------------------------------------------


async def test_an_empty_container_lists_nothing(node: NodeHandle, admin: Headers,
                                                box: str) -> None:
    r = await node.client.get("/list_blobs?container=box", headers=admin)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert await r.get_json() == {"blobs": [], "prefixes": [], "next_marker": None}


async def test_entries_have_blob_size_etag_last_modified_and_content_type(
        node: NodeHandle, admin: Headers, box: str) -> None:
    stored = await put(node, admin, box, "dir/a.txt", b"hello", **{"Content-Type": "text/plain"})
    await put(node, admin, box, "b.bin", b"")
    body = await list_names(node, admin, box)
    assert set(body) == {"blobs", "prefixes", "next_marker"}
    assert body["prefixes"] == [] and body["next_marker"] is None
    first, second = body["blobs"]
    assert set(first) == {"blob", "size", "etag", "last_modified", "content_type"}
    assert first == {"blob": "b.bin", "size": 0, "etag": md5_hex(b""),
                     "last_modified": first["last_modified"],
                     "content_type": "application/octet-stream"}
    assert second == {"blob": "dir/a.txt", "size": 5, "etag": md5_hex(b"hello"),
                      "last_modified": stored["last_modified"], "content_type": "text/plain"}
    parse_rfc3339(first["last_modified"])


async def test_listing_follows_overwrites_and_deletes(node: NodeHandle, admin: Headers,
                                                      box: str) -> None:
    await put_names(node, admin, box, ["a", "b", "c"])
    await put(node, admin, box, "b", b"new and longer")
    r = await node.client.delete(f"/delete_data?{q(container=box, blob='a')}", headers=admin)
    assert r.status_code == 204
    body = await list_names(node, admin, box)
    assert [(b["blob"], b["size"], b["etag"]) for b in body["blobs"]] == [
        ("b", 14, md5_hex(b"new and longer")), ("c", 1, md5_hex(b"c"))]


# -- order --------------------------------------------------------------------------


ORDER_NAMES = ["a", "b", "é", "\uffff", "\U0001F600", "Z", "~", "A", "0", " ", "aa", "a/b",
               "a-b", "\ue000", "\u00ff", "\u0100", "z\u00e9", "ze", "\u7000", "\U00010000"]


async def test_names_are_listed_in_utf8_byte_order(node: NodeHandle, admin: Headers,
                                                   box: str) -> None:
    await put_names(node, admin, box, ORDER_NAMES)
    body = await list_names(node, admin, box)
    assert [b["blob"] for b in body["blobs"]] == utf8_sorted(ORDER_NAMES)


async def test_paging_keeps_utf8_byte_order(node: NodeHandle, admin: Headers, box: str) -> None:
    await put_names(node, admin, box, ORDER_NAMES)
    seen, _ = await page_through(node, admin, box, 3)
    assert seen == utf8_sorted(ORDER_NAMES)


# -- prefix and delimiter -----------------------------------------------------------


TREE = ["a/1", "a/2", "a/b/1", "a/b/2", "a-x", "ab", "b/1", "c", "d/e/f", "é/1", "é/2", "z"]


async def test_prefix_selects_names_that_start_with_it(node: NodeHandle, admin: Headers,
                                                       box: str) -> None:
    await put_names(node, admin, box, TREE)
    problems = Problems()
    for prefix in ["a/", "a", "a/b/", "é/", "d/e/f", "nothing", "a/b/1x", "\U0010ffff"]:
        body = await list_names(node, admin, box, prefix=prefix)
        got = [b["blob"] for b in body["blobs"]]
        want = utf8_sorted([n for n in TREE if n.startswith(prefix)])
        problems.check(prefix, got == want, f"got {got}")
        problems.check(prefix, body["prefixes"] == [] and body["next_marker"] is None, body)
    problems.assert_none()


async def test_delimiter_rolls_names_up_into_prefixes(node: NodeHandle, admin: Headers,
                                                      box: str) -> None:
    await put_names(node, admin, box, TREE)
    body = await list_names(node, admin, box, delimiter="/")
    assert [b["blob"] for b in body["blobs"]] == ["a-x", "ab", "c", "z"]
    assert body["prefixes"] == ["a/", "b/", "d/", "é/"]
    assert body["next_marker"] is None


async def test_prefix_and_delimiter_list_one_level(node: NodeHandle, admin: Headers,
                                                   box: str) -> None:
    await put_names(node, admin, box, TREE)
    body = await list_names(node, admin, box, prefix="a/", delimiter="/")
    assert [b["blob"] for b in body["blobs"]] == ["a/1", "a/2"]
    assert body["prefixes"] == ["a/b/"]
    body = await list_names(node, admin, box, prefix="d/", delimiter="/")
    assert body["blobs"] == [] and body["prefixes"] == ["d/e/"]
    body = await list_names(node, admin, box, prefix="a", delimiter="/")
    assert [b["blob"] for b in body["blobs"]] == ["a-x", "ab"]
    assert body["prefixes"] == ["a/"]


async def test_a_multi_character_delimiter(node: NodeHandle, admin: Headers, box: str) -> None:
    await put_names(node, admin, box, ["x--1", "x--2--3", "x-y", "y--"])
    body = await list_names(node, admin, box, delimiter="--")
    assert [b["blob"] for b in body["blobs"]] == ["x-y"]
    assert body["prefixes"] == ["x--", "y--"]


async def test_a_name_equal_to_a_rolled_up_prefix_is_rolled_up_too(node: NodeHandle,
                                                                   admin: Headers,
                                                                   box: str) -> None:
    await put_names(node, admin, box, ["dir/", "dir/x", "dira"])
    body = await list_names(node, admin, box, delimiter="/")
    assert [b["blob"] for b in body["blobs"]] == ["dira"]
    assert body["prefixes"] == ["dir/"]


# -- marker and limit ---------------------------------------------------------------


async def test_marker_starts_after_the_marker(node: NodeHandle, admin: Headers,
                                              box: str) -> None:
    names = ["a", "b", "c", "d", "é"]
    await put_names(node, admin, box, names)
    problems = Problems()
    for marker, want in [("a", ["b", "c", "d", "é"]), ("bb", ["c", "d", "é"]),
                         ("", names), ("d", ["é"]), ("é", []), ("\U0010ffff", []),
                         (" ", names)]:
        body = await list_names(node, admin, box, marker=marker)
        got = [b["blob"] for b in body["blobs"]]
        problems.check(marker, got == want and body["next_marker"] is None, body)
    problems.assert_none()


async def test_limit_truncates_and_next_marker_is_the_last_name_returned(
        node: NodeHandle, admin: Headers, box: str) -> None:
    await put_names(node, admin, box, ["a", "b", "c", "d", "e"])
    body = await list_names(node, admin, box, limit="2")
    assert [b["blob"] for b in body["blobs"]] == ["a", "b"]
    assert body["next_marker"] == "b"
    body = await list_names(node, admin, box, limit="2", marker="b")
    assert [b["blob"] for b in body["blobs"]] == ["c", "d"]
    assert body["next_marker"] == "d"
    body = await list_names(node, admin, box, limit="2", marker="d")
    assert [b["blob"] for b in body["blobs"]] == ["e"]
    assert body["next_marker"] is None


async def test_next_marker_is_null_when_the_page_ends_exactly_at_the_last_name(
        node: NodeHandle, admin: Headers, box: str) -> None:
    await put_names(node, admin, box, ["a", "b", "c", "d"])
    body = await list_names(node, admin, box, limit="4")
    assert len(body["blobs"]) == 4 and body["next_marker"] is None
    body = await list_names(node, admin, box, limit="2", marker="b")
    assert [b["blob"] for b in body["blobs"]] == ["c", "d"]
    assert body["next_marker"] is None


async def test_limit_counts_prefixes_too(node: NodeHandle, admin: Headers, box: str) -> None:
    await put_names(node, admin, box, ["a/1", "a/2", "b", "c/1", "d"])
    body = await list_names(node, admin, box, delimiter="/", limit="2")
    assert [b["blob"] for b in body["blobs"]] == ["b"]
    assert body["prefixes"] == ["a/"]
    assert body["next_marker"] == "b"
    body = await list_names(node, admin, box, delimiter="/", limit="2", marker="b")
    assert [b["blob"] for b in body["blobs"]] == ["d"]
    assert body["prefixes"] == ["c/"]
    assert body["next_marker"] is None


PAGING_NAMES = (["a/1", "a/2", "a/3", "a/b/1", "a-1", "b", "b/1/2", "b/2", "c/", "c//",
                 "d", "é/x", "é/y", "é", "z/z/z"] + [f"m/{i:02d}" for i in range(10)]
                + [f"n{i}" for i in range(7)])


@pytest.mark.parametrize("params", [{}, {"delimiter": "/"}, {"prefix": "a"},
                                    {"prefix": "a/", "delimiter": "/"},
                                    {"prefix": "m/", "delimiter": "/"}],
                         ids=["plain", "delimiter", "prefix", "prefix-delimiter",
                              "prefix-delimiter-m"])
async def test_paging_with_next_marker_visits_every_item_exactly_once(
        node: NodeHandle, admin: Headers, box: str, params: dict[str, str]) -> None:
    await put_names(node, admin, box, PAGING_NAMES)
    whole = await list_names(node, admin, box, limit="10000", **params)
    assert whole["next_marker"] is None
    everything = [b["blob"] for b in whole["blobs"]] + whole["prefixes"]
    problems = Problems()
    for limit in [1, 2, 3, 7]:
        seen, pages = await page_through(node, admin, box, limit, **params)
        problems.check(limit, len(seen) == len(set(seen)), f"repeated items: {seen}")
        problems.check(limit, sorted(seen) == sorted(everything), f"got {seen}")
        problems.check(limit, pages == -(-len(everything) // limit) or
                       pages == -(-len(everything) // limit) + 1, f"{pages} pages")
    problems.assert_none()


async def _fill_with_empty_blobs(node: NodeHandle, container: str, count: int) -> list[str]:
    """Commit ``count`` empty blobs straight through the metadata log (fast setup)."""
    names = [f"blob-{i:05d}" for i in range(count)]
    now = rfc3339(node.services.clock.now())
    chunk_size = node.services.config.chunk_size

    async def one(name: str) -> None:
        await node.services.log.submit(c.PutBlob(container, name, 0, md5_hex(b""),
                                                 "application/octet-stream", now,
                                                 chunk_size, ()))

    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(one, name)
    return names


async def test_the_default_limit_is_1000(node: NodeHandle, admin: Headers, box: str) -> None:
    names = await _fill_with_empty_blobs(node, box, 1001)
    body = await list_names(node, admin, box)
    assert [b["blob"] for b in body["blobs"]] == names[:1000]
    assert body["next_marker"] == names[999]
    body = await list_names(node, admin, box, marker=body["next_marker"])
    assert [b["blob"] for b in body["blobs"]] == names[1000:]
    assert body["next_marker"] is None


async def test_limit_may_be_as_large_as_10000(node: NodeHandle, admin: Headers,
                                              box: str) -> None:
    names = await _fill_with_empty_blobs(node, box, 1500)
    body = await list_names(node, admin, box, limit="10000")
    assert [b["blob"] for b in body["blobs"]] == names
    assert body["next_marker"] is None
    body = await list_names(node, admin, box, limit="1")
    assert [b["blob"] for b in body["blobs"]] == names[:1]


async def test_bad_limits_are_400(node: NodeHandle, admin: Headers, box: str) -> None:
    await put_names(node, admin, box, ["a"])
    problems = Problems()
    for limit in ["0", "-1", "abc", "10001", "", "1.5", " 5", "+5", "1e3", "99999999999",
                  "0x10", "５"]:
        r = await node.client.get(f"/list_blobs?{q(container=box, limit=limit)}",
                                  headers=admin)
        await problems.expect_error(limit, r, 400, "InvalidRequest")
    problems.assert_none()


# -- bad requests -------------------------------------------------------------------


async def test_bad_list_queries_are_400(node: NodeHandle, admin: Headers, box: str) -> None:
    problems = Problems()
    for query, code in [
        ("", "InvalidRequest"),
        ("prefix=a", "InvalidRequest"),
        ("container=Box", "InvalidName"),
        ("container=box&container=box", "InvalidRequest"),
        ("container=box&prefix=a&prefix=b", "InvalidRequest"),
        ("container=box&limit=1&limit=2", "InvalidRequest"),
        ("container=box&marker=a&marker=b", "InvalidRequest"),
        ("container=box&delimiter=%2F&delimiter=%2F", "InvalidRequest"),
        ("container=box&prefix=%00", None),
        ("container=box&prefix=a%0Ab", None),
        ("container=box&marker=%01", None),
        ("container=box&delimiter=%7F", None),
        ("container=box&prefix=%FF", None),
        ("container=box&marker=%C3", None),
        ("container=box&prefix=%G1", "InvalidRequest"),
        ("container=box&prefix=" + "x" * 1025, None),
    ]:
        r = await node.client.get(f"/list_blobs?{query}", headers=admin)
        await problems.expect_error(query[:60], r, 400, code)
    problems.assert_none()


async def test_listing_an_unknown_container_is_404(node: NodeHandle, admin: Headers) -> None:
    r = await node.client.get("/list_blobs?container=nothere", headers=admin)
    await assert_error(r, 404, "ContainerNotFound")


async def test_listing_needs_read_access(node: NodeHandle, admin: Headers, box: str) -> None:
    alice = await create_user(node, admin, "alice")
    r = await node.client.get("/list_blobs?container=box", headers=alice)
    await assert_error(r, 403, "Forbidden")


async def test_listing_is_per_container(node: NodeHandle, admin: Headers, box: str) -> None:
    await create_container(node, admin, "other")
    await put_names(node, admin, "other", ["x", "y"])
    await put_names(node, admin, box, ["a"])
    assert [b["blob"] for b in (await list_names(node, admin, box))["blobs"]] == ["a"]
    assert [b["blob"] for b in (await list_names(node, admin, "other"))["blobs"]] == ["x", "y"]


async def test_unicode_prefix_marker_and_delimiter(node: NodeHandle, admin: Headers,
                                                   box: str) -> None:
    names = ["日本/a", "日本/b", "日本語", "日本😀x", "日本😀y", "日"]
    await put_names(node, admin, box, names)
    body = await list_names(node, admin, box, prefix="日本", delimiter="😀")
    assert [b["blob"] for b in body["blobs"]] == utf8_sorted(["日本/a", "日本/b", "日本語"])
    assert body["prefixes"] == ["日本😀"]
    body = await list_names(node, admin, box, prefix="日本", marker="日本/a")
    assert [b["blob"] for b in body["blobs"]] == utf8_sorted(
        ["日本/b", "日本語", "日本😀x", "日本😀y"])
