"""Blobs (API.md, "Blobs"): put_data, get_data (and HEAD), delete_data.

Listing is in test_listing.py; permissions in test_containers.py.
"""

from __future__ import annotations

import base64
import hashlib
import os
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import trio

from node.testing.inprocess import NodeHandle, running_node

from api_support import (HEX_MD5, Problems, assert_error, assert_recent, blob_url, create_container,
                         get_body, list_names, md5_hex, parse_rfc3339, put, q)

Headers = dict[str, str]
CHUNK = 64 * 1024
DATA = bytes(range(256)) * 4 + b"tail"  # 1028 bytes


def content_md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


async def get(node: NodeHandle, headers: Headers, blob: str = "b", container: str = "box",
              **extra: str) -> Any:
    return await node.client.get(blob_url(container, blob), headers={**headers, **extra})


async def head(node: NodeHandle, headers: Headers, blob: str = "b", container: str = "box",
               **extra: str) -> Any:
    return await node.client.head(blob_url(container, blob), headers={**headers, **extra})


async def delete(node: NodeHandle, headers: Headers, blob: str = "b",
                 container: str = "box") -> Any:
    return await node.client.delete(blob_url(container, blob, "/delete_data"), headers=headers)


# -- POST /put_data -----------------------------------------------------------------


async def test_put_is_201_with_container_blob_size_etag_and_last_modified(
        node: NodeHandle, admin: Headers, box: str) -> None:
    r = await node.put_blob(box, "dir/file.txt", DATA, admin)
    assert r.status_code == 201
    assert r.headers["Content-Type"].startswith("application/json")
    body = await r.get_json()
    assert set(body) == {"container", "blob", "size", "etag", "last_modified"}
    assert body["container"] == "box"
    assert body["blob"] == "dir/file.txt"
    assert body["size"] == len(DATA) and type(body["size"]) is int
    assert body["etag"] == md5_hex(DATA)
    assert HEX_MD5.match(body["etag"])
    assert_recent(body["last_modified"])


async def test_put_answers_the_quoted_etag_header(node: NodeHandle, admin: Headers,
                                                  box: str) -> None:
    r = await node.put_blob(box, "b", DATA, admin)
    assert r.headers["ETag"] == f'"{md5_hex(DATA)}"'


async def test_put_into_an_unknown_container_is_404(node: NodeHandle, admin: Headers) -> None:
    await assert_error(await node.put_blob("nothere", "b", DATA, admin), 404,
                       "ContainerNotFound")


async def test_put_without_content_length_is_411(node: NodeHandle, admin: Headers,
                                                 box: str) -> None:
    r = await node.client.post(f"/put_data?{q(container=box, blob='b')}", data=DATA,
                               headers=admin)
    await assert_error(r, 411, "LengthRequired")
    await assert_error(await get(node, admin), 404, "BlobNotFound")


async def test_a_body_that_differs_from_content_length_is_400_and_not_stored(
        node: NodeHandle, admin: Headers, box: str) -> None:
    problems = Problems()
    for declared in [str(len(DATA) - 1), str(len(DATA) + 1), "0", "99999"]:
        r = await node.client.post(f"/put_data?{q(container=box, blob='b')}", data=DATA,
                                   headers={**admin, "Content-Length": declared})
        await problems.expect_error(declared, r, 400)
    problems.assert_none()
    await assert_error(await get(node, admin), 404, "BlobNotFound")


async def test_a_malformed_content_length_is_400(node: NodeHandle, admin: Headers,
                                                 box: str) -> None:
    problems = Problems()
    for declared in ["abc", "-1", "1.5", "0x10", " ", "+1", "１"]:
        r = await node.client.post(f"/put_data?{q(container=box, blob='b')}", data=b"x",
                                   headers={**admin, "Content-Length": declared})
        await problems.expect_error(declared, r, 400)
    problems.assert_none()
    await assert_error(await get(node, admin), 404, "BlobNotFound")


async def test_put_with_the_right_content_md5_is_201(node: NodeHandle, admin: Headers,
                                                     box: str) -> None:
    r = await node.put_blob(box, "b", DATA, admin, **{"Content-MD5": content_md5(DATA)})
    assert r.status_code == 201
    assert await get_body(node, admin, box, "b") == DATA


async def test_put_with_a_wrong_content_md5_is_400_bad_digest_and_stores_nothing(
        node: NodeHandle, admin: Headers, box: str) -> None:
    r = await node.put_blob(box, "b", DATA, admin, **{"Content-MD5": content_md5(b"other")})
    await assert_error(r, 400, "BadDigest")
    await assert_error(await get(node, admin), 404, "BlobNotFound")
    assert (await list_names(node, admin, box))["blobs"] == []


async def test_a_wrong_content_md5_on_overwrite_keeps_the_old_blob(node: NodeHandle,
                                                                   admin: Headers,
                                                                   box: str) -> None:
    old = await put(node, admin, box, "b", b"old content")
    r = await node.put_blob(box, "b", DATA, admin, **{"Content-MD5": content_md5(b"other")})
    await assert_error(r, 400, "BadDigest")
    r = await get(node, admin)
    assert await r.get_data() == b"old content"
    assert r.headers["ETag"] == f'"{old["etag"]}"'


async def test_a_malformed_content_md5_is_400_and_stores_nothing(node: NodeHandle,
                                                                 admin: Headers,
                                                                 box: str) -> None:
    problems = Problems()
    for value in ["not base64!", base64.b64encode(b"x" * 15).decode(),
                  base64.b64encode(b"x" * 17).decode(), md5_hex(DATA), ""]:
        r = await node.put_blob(box, "b", DATA, admin, **{"Content-MD5": value})
        await problems.expect_error(value, r, 400)
    problems.assert_none()
    await assert_error(await get(node, admin), 404, "BlobNotFound")


async def test_put_if_none_match_star_creates_a_new_blob(node: NodeHandle, admin: Headers,
                                                         box: str) -> None:
    r = await node.put_blob(box, "b", DATA, admin, **{"If-None-Match": "*"})
    assert r.status_code == 201
    assert await get_body(node, admin, box, "b") == DATA


async def test_put_if_none_match_star_on_an_existing_blob_is_412_and_keeps_it(
        node: NodeHandle, admin: Headers, box: str) -> None:
    await put(node, admin, box, "b", b"old content")
    r = await node.put_blob(box, "b", DATA, admin, **{"If-None-Match": "*"})
    await assert_error(r, 412)
    assert await get_body(node, admin, box, "b") == b"old content"


@pytest.mark.parametrize("quoted", [True, False])
async def test_put_if_match_with_the_current_etag_replaces_the_blob(
        node: NodeHandle, admin: Headers, box: str, quoted: bool) -> None:
    old = await put(node, admin, box, "b", b"old content")
    tag = f'"{old["etag"]}"' if quoted else old["etag"]
    r = await node.put_blob(box, "b", DATA, admin, **{"If-Match": tag})
    assert r.status_code == 201
    assert await get_body(node, admin, box, "b") == DATA


async def test_concurrent_create_only_puts_let_exactly_one_win(node: NodeHandle,
                                                                admin: Headers,
                                                                box: str) -> None:
    results: dict[bytes, int] = {}

    async def attempt(i: int) -> None:
        data = f"writer {i}".encode() * 100
        r = await node.put_blob(box, "b", data, admin, **{"If-None-Match": "*"})
        results[data] = r.status_code

    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(attempt, i)
    winners = [data for data, status in results.items() if status == 201]
    assert len(winners) == 1, sorted(results.values())
    assert sorted(results.values()) == [201] + [412] * 7
    assert await get_body(node, admin, box, "b") == winners[0]


async def test_put_if_match_with_another_etag_is_412_and_keeps_the_blob(
        node: NodeHandle, admin: Headers, box: str) -> None:
    await put(node, admin, box, "b", b"old content")
    r = await node.put_blob(box, "b", DATA, admin, **{"If-Match": f'"{md5_hex(b"other")}"'})
    await assert_error(r, 412)
    assert await get_body(node, admin, box, "b") == b"old content"


async def test_put_if_match_on_a_missing_blob_is_412_and_creates_nothing(
        node: NodeHandle, admin: Headers, box: str) -> None:
    r = await node.put_blob(box, "b", DATA, admin, **{"If-Match": f'"{md5_hex(DATA)}"'})
    await assert_error(r, 412)
    await assert_error(await get(node, admin), 404, "BlobNotFound")


async def test_put_echoes_the_content_type_on_get(node: NodeHandle, admin: Headers,
                                                  box: str) -> None:
    await put(node, admin, box, "b", b"<p>hi</p>", **{"Content-Type": "text/html; charset=utf-8"})
    r = await get(node, admin)
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"


async def test_the_default_content_type_is_application_octet_stream(node: NodeHandle,
                                                                    admin: Headers,
                                                                    box: str) -> None:
    await put(node, admin, box, "b", DATA)
    r = await get(node, admin)
    assert r.headers["Content-Type"] == "application/octet-stream"


async def test_an_overwrite_replaces_content_etag_and_content_type(node: NodeHandle,
                                                                   admin: Headers,
                                                                   box: str) -> None:
    await put(node, admin, box, "b", b"old content" * 100, **{"Content-Type": "text/plain"})
    new = await put(node, admin, box, "b", DATA)
    assert new["size"] == len(DATA) and new["etag"] == md5_hex(DATA)
    r = await get(node, admin)
    assert await r.get_data() == DATA
    assert r.headers["ETag"] == f'"{md5_hex(DATA)}"'
    assert r.headers["Content-Type"] == "application/octet-stream"
    listing = await list_names(node, admin, box)
    assert [(b["blob"], b["size"], b["etag"]) for b in listing["blobs"]] == [
        ("b", len(DATA), md5_hex(DATA))]


async def test_an_empty_blob(node: NodeHandle, admin: Headers, box: str) -> None:
    body = await put(node, admin, box, "empty", b"")
    assert body["size"] == 0
    assert body["etag"] == md5_hex(b"") == "d41d8cd98f00b204e9800998ecf8427e"
    r = await get(node, admin, "empty")
    assert r.status_code == 200
    assert await r.get_data() == b""
    assert r.headers["Content-Length"] == "0"
    assert r.headers["ETag"] == f'"{md5_hex(b"")}"'


async def test_an_overwrite_is_atomic_for_concurrent_readers(tmp_path: Path) -> None:
    async with running_node(tmp_path / "n", chunk_size=CHUNK) as node:
        admin = await node.admin_headers()
        await create_container(node, admin, "box")
        versions = [os.urandom(3 * CHUNK + 7), os.urandom(CHUNK - 3), os.urandom(2 * CHUNK)]
        await put(node, admin, "box", "b", versions[0])
        seen: list[bytes] = []

        async def writer() -> None:
            for i in range(12):
                await put(node, admin, "box", "b", versions[i % len(versions)])

        async def reader() -> None:
            for _ in range(12):
                r = await get(node, admin)
                assert r.status_code == 200
                data = await r.get_data()
                assert r.headers["ETag"] == f'"{md5_hex(data)}"'
                seen.append(data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            nursery.start_soon(reader)
            nursery.start_soon(reader)
        assert all(data in versions for data in seen), "a reader saw a mixed or partial blob"


# -- multi-chunk blobs --------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5])
async def test_blobs_of_any_size_roundtrip_byte_exact(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    async with running_node(tmp_path / "n", chunk_size=CHUNK) as node:
        admin = await node.admin_headers()
        await create_container(node, admin, "box")
        body = await put(node, admin, "box", "b", data)
        assert body["size"] == size and body["etag"] == md5_hex(data)
        inline = size <= node.services.config.inline_max
        assert node.services.chunks.count == (0 if inline else -(-size // CHUNK))
        r = await get(node, admin)
        assert r.status_code == 200
        assert r.headers["Content-Length"] == str(size)
        got = await r.get_data()
        assert len(got) == size and got == data


RANGES_ACROSS_CHUNKS = [
    (CHUNK - 1, CHUNK),          # the last byte of one chunk and the first of the next
    (CHUNK, CHUNK),              # exactly the first byte of a chunk
    (CHUNK - 10, 2 * CHUNK + 9),  # three chunks
    (0, 3 * CHUNK + 4),          # everything, explicitly
    (2 * CHUNK + 100, 3 * CHUNK + 2),
]


async def test_ranges_across_chunk_boundaries(tmp_path: Path) -> None:
    data = os.urandom(3 * CHUNK + 5)
    async with running_node(tmp_path / "n", chunk_size=CHUNK) as node:
        admin = await node.admin_headers()
        await create_container(node, admin, "box")
        await put(node, admin, "box", "b", data)
        for first, last in RANGES_ACROSS_CHUNKS:
            r = await get(node, admin, Range=f"bytes={first}-{last}")
            assert r.status_code == 206, (first, last)
            assert r.headers["Content-Range"] == f"bytes {first}-{last}/{len(data)}"
            assert await r.get_data() == data[first:last + 1], (first, last)
        r = await get(node, admin, Range=f"bytes=-{CHUNK + 1}")
        assert await r.get_data() == data[-(CHUNK + 1):]
        r = await get(node, admin, Range=f"bytes={CHUNK}-")
        assert await r.get_data() == data[CHUNK:]


# -- GET /get_data and HEAD ---------------------------------------------------------


async def test_get_answers_body_and_headers(node: NodeHandle, admin: Headers, box: str) -> None:
    await put(node, admin, box, "b", DATA, **{"Content-Type": "image/png"})
    r = await get(node, admin)
    assert r.status_code == 200
    assert await r.get_data() == DATA
    assert r.headers["Content-Length"] == str(len(DATA))
    assert r.headers["ETag"] == f'"{md5_hex(DATA)}"'
    assert r.headers["Content-Type"] == "image/png"
    assert "Content-Range" not in r.headers


async def test_last_modified_is_an_http_date_of_the_put(node: NodeHandle, admin: Headers,
                                                        box: str) -> None:
    stored = await put(node, admin, box, "b", DATA)
    header = (await get(node, admin)).headers["Last-Modified"]
    assert header.endswith(" GMT")
    moment = parsedate_to_datetime(header)
    assert moment == parse_rfc3339(stored["last_modified"]).replace(microsecond=0)


async def test_head_answers_the_headers_of_get_without_a_body(node: NodeHandle, admin: Headers,
                                                              box: str) -> None:
    await put(node, admin, box, "b", DATA, **{"Content-Type": "text/plain"})
    got, headed = await get(node, admin), await head(node, admin)
    assert headed.status_code == 200
    assert await headed.get_data() == b""
    for name in ("ETag", "Last-Modified", "Content-Type"):
        assert headed.headers[name] == got.headers[name], name


async def test_get_of_a_missing_blob_is_404(node: NodeHandle, admin: Headers, box: str) -> None:
    await assert_error(await get(node, admin, "nothere"), 404, "BlobNotFound")
    r = await head(node, admin, "nothere")
    assert r.status_code == 404
    assert await r.get_data() == b""


async def test_get_in_an_unknown_container_is_404(node: NodeHandle, admin: Headers) -> None:
    await assert_error(await get(node, admin, container="nothere"), 404, "ContainerNotFound")
    assert (await head(node, admin, container="nothere")).status_code == 404


async def test_blob_names_are_case_sensitive(node: NodeHandle, admin: Headers, box: str) -> None:
    await put(node, admin, box, "File", b"upper")
    await put(node, admin, box, "file", b"lower")
    assert await get_body(node, admin, box, "File") == b"upper"
    assert await get_body(node, admin, box, "file") == b"lower"


# -- ranges -------------------------------------------------------------------------


SATISFIABLE_RANGES = [
    ("bytes=0-0", 0, 0),
    ("bytes=0-9", 0, 9),
    ("bytes=10-19", 10, 19),
    ("bytes=1000-", 1000, len(DATA) - 1),
    ("bytes=0-", 0, len(DATA) - 1),
    ("bytes=-10", len(DATA) - 10, len(DATA) - 1),
    ("bytes=-1", len(DATA) - 1, len(DATA) - 1),
    ("bytes=1020-5000", 1020, len(DATA) - 1),
    ("bytes=-5000", 0, len(DATA) - 1),
    (f"bytes={len(DATA) - 1}-{len(DATA) - 1}", len(DATA) - 1, len(DATA) - 1),
    ("bytes=0-99999999999999999999", 0, len(DATA) - 1),
    (" bytes=1-2 ", 1, 2),
]


async def test_satisfiable_ranges_are_206(node: NodeHandle, admin: Headers, box: str) -> None:
    await put(node, admin, box, "b", DATA)
    problems = Problems()
    for header, first, last in SATISFIABLE_RANGES:
        r = await get(node, admin, Range=header)
        body = await r.get_data()
        problems.check(header, r.status_code == 206, f"status {r.status_code}")
        problems.check(header, body == DATA[first:last + 1], f"{len(body)} bytes, wrong ones")
        problems.check(header, r.headers.get("Content-Range")
                       == f"bytes {first}-{last}/{len(DATA)}", r.headers.get("Content-Range"))
        problems.check(header, r.headers.get("Content-Length") == str(last - first + 1),
                       r.headers.get("Content-Length"))
        problems.check(header, r.headers.get("ETag") == f'"{md5_hex(DATA)}"',
                       r.headers.get("ETag"))
    problems.assert_none()


async def test_head_with_a_range_is_206(node: NodeHandle, admin: Headers, box: str) -> None:
    await put(node, admin, box, "b", DATA)
    r = await head(node, admin, Range="bytes=10-19")
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(DATA)}"


async def test_unsatisfiable_ranges_are_416(node: NodeHandle, admin: Headers,
                                            box: str) -> None:
    await put(node, admin, box, "b", DATA)
    problems = Problems()
    for header in [f"bytes={len(DATA)}-", f"bytes={len(DATA)}-{len(DATA) + 10}",
                   "bytes=5000-6000", "bytes=-0", "bytes=99999999999999999999999-"]:
        r = await get(node, admin, Range=header)
        await problems.expect_error(header, r, 416, "InvalidRange")
        problems.check(header, r.headers.get("Content-Range") == f"bytes */{len(DATA)}",
                       f"Content-Range {r.headers.get('Content-Range')}")
    problems.assert_none()


async def test_any_range_of_an_empty_blob_is_416(node: NodeHandle, admin: Headers,
                                                 box: str) -> None:
    await put(node, admin, box, "b", b"")
    problems = Problems()
    for header in ["bytes=0-", "bytes=0-0", "bytes=-1"]:
        r = await get(node, admin, Range=header)
        await problems.expect_error(header, r, 416, "InvalidRange")
        problems.check(header, r.headers.get("Content-Range") == "bytes */0",
                       f"Content-Range {r.headers.get('Content-Range')}")
    problems.assert_none()


async def test_malformed_ranges_are_400(node: NodeHandle, admin: Headers, box: str) -> None:
    await put(node, admin, box, "b", DATA)
    problems = Problems()
    for header in ["bytes=abc", "bytes=", "bytes=-", "items=0-1", "0-1", "bytes=5-2",
                   "bytes=1-2-3", "bytes=0x10-", "bytes=a-b", "bytes=-1-2", "bytes=１-2"]:
        await problems.expect_error(header, await get(node, admin, Range=header), 400,
                                    "InvalidRequest")
    problems.assert_none()


# -- conditional GET ----------------------------------------------------------------


async def test_if_none_match_with_the_etag_is_304(node: NodeHandle, admin: Headers,
                                                  box: str) -> None:
    stored = await put(node, admin, box, "b", DATA)
    etag = stored["etag"]
    problems = Problems()
    for tag in [f'"{etag}"', "*", f'W/"{etag}"', f'"0123", "{etag}"']:
        r = await get(node, admin, **{"If-None-Match": tag})
        problems.check(tag, r.status_code == 304, f"status {r.status_code}")
        problems.check(tag, await r.get_data() == b"", "a 304 has no body")
        problems.check(tag, r.headers.get("ETag") == f'"{etag}"', r.headers.get("ETag"))
    problems.assert_none()


async def test_head_if_none_match_with_the_etag_is_304(node: NodeHandle, admin: Headers,
                                                       box: str) -> None:
    stored = await put(node, admin, box, "b", DATA)
    r = await head(node, admin, **{"If-None-Match": f'"{stored["etag"]}"'})
    assert r.status_code == 304
    assert r.headers["ETag"] == f'"{stored["etag"]}"'


async def test_if_none_match_with_another_etag_is_200(node: NodeHandle, admin: Headers,
                                                      box: str) -> None:
    await put(node, admin, box, "b", DATA)
    r = await get(node, admin, **{"If-None-Match": f'"{md5_hex(b"other")}"'})
    assert r.status_code == 200
    assert await r.get_data() == DATA


async def test_if_none_match_after_an_overwrite_is_200(node: NodeHandle, admin: Headers,
                                                       box: str) -> None:
    old = await put(node, admin, box, "b", b"old content")
    await put(node, admin, box, "b", DATA)
    r = await get(node, admin, **{"If-None-Match": f'"{old["etag"]}"'})
    assert r.status_code == 200
    assert await r.get_data() == DATA


async def test_if_match_with_the_etag_is_200(node: NodeHandle, admin: Headers,
                                             box: str) -> None:
    stored = await put(node, admin, box, "b", DATA)
    etag = stored["etag"]
    problems = Problems()
    for tag in [f'"{etag}"', "*", f'"0123", "{etag}"']:
        r = await get(node, admin, **{"If-Match": tag})
        problems.check(tag, r.status_code == 200, f"status {r.status_code}")
        problems.check(tag, await r.get_data() == DATA, "wrong body")
    problems.assert_none()


async def test_if_match_with_another_etag_is_412(node: NodeHandle, admin: Headers,
                                                 box: str) -> None:
    await put(node, admin, box, "b", DATA)
    await assert_error(await get(node, admin, **{"If-Match": f'"{md5_hex(b"other")}"'}), 412)
    assert (await head(node, admin, **{"If-Match": f'"{md5_hex(b"other")}"'})).status_code == 412


async def test_if_match_mismatch_wins_over_a_range(node: NodeHandle, admin: Headers,
                                                   box: str) -> None:
    await put(node, admin, box, "b", DATA)
    r = await get(node, admin, Range="bytes=0-1", **{"If-Match": f'"{md5_hex(b"x")}"'})
    await assert_error(r, 412)


async def test_a_range_with_a_matching_if_match_is_206(node: NodeHandle, admin: Headers,
                                                       box: str) -> None:
    stored = await put(node, admin, box, "b", DATA)
    r = await get(node, admin, Range="bytes=0-1", **{"If-Match": f'"{stored["etag"]}"'})
    assert r.status_code == 206
    assert await r.get_data() == DATA[:2]


# -- DELETE /delete_data ------------------------------------------------------------


async def test_delete_is_204_then_get_is_404(node: NodeHandle, admin: Headers, box: str) -> None:
    await put(node, admin, box, "b", DATA)
    r = await delete(node, admin)
    assert r.status_code == 204
    assert await r.get_data() == b""
    await assert_error(await get(node, admin), 404, "BlobNotFound")
    assert (await list_names(node, admin, box))["blobs"] == []


async def test_deleting_a_missing_blob_is_404(node: NodeHandle, admin: Headers, box: str) -> None:
    await assert_error(await delete(node, admin, "nothere"), 404, "BlobNotFound")


async def test_deleting_a_blob_twice_is_404_the_second_time(node: NodeHandle, admin: Headers,
                                                            box: str) -> None:
    await put(node, admin, box, "b", DATA)
    assert (await delete(node, admin)).status_code == 204
    await assert_error(await delete(node, admin), 404, "BlobNotFound")


async def test_deleting_in_an_unknown_container_is_404(node: NodeHandle,
                                                       admin: Headers) -> None:
    await assert_error(await delete(node, admin, container="nothere"), 404, "ContainerNotFound")


async def test_a_deleted_blob_can_be_put_again(node: NodeHandle, admin: Headers,
                                               box: str) -> None:
    await put(node, admin, box, "b", DATA)
    assert (await delete(node, admin)).status_code == 204
    await put(node, admin, box, "b", b"again")
    assert await get_body(node, admin, box, "b") == b"again"


async def test_deleting_one_blob_keeps_the_others(node: NodeHandle, admin: Headers,
                                                  box: str) -> None:
    await put(node, admin, box, "a", b"same")
    await put(node, admin, box, "b", b"same")
    assert (await delete(node, admin, "a")).status_code == 204
    assert await get_body(node, admin, box, "b") == b"same"


# -- blob names ---------------------------------------------------------------------


VALID_NAMES = [
    "é", "日本語/ファイル.txt", "a/b/c", "with space", " leading-space", "a+b", "a&b=c",
    "?#%", "100%", "x" * 1024, "é" * 512, "😀" * 256, "/leading", "trailing/", "//", ".", "..",
    "\ufeffbom", "\uffff", "quote\"'", "back\\slash", "a;b,c", "%00",
]


async def test_valid_blob_names_roundtrip(node: NodeHandle, admin: Headers, box: str) -> None:
    for i, name in enumerate(VALID_NAMES):
        assert len(name.encode()) <= 1024
        data = f"content {i}".encode()
        body = await put(node, admin, box, name, data)
        assert body["blob"] == name, name
        assert await get_body(node, admin, box, name) == data, name
    listing = await list_names(node, admin, box, limit="10000")
    assert [b["blob"] for b in listing["blobs"]] == sorted(VALID_NAMES, key=lambda s: s.encode())
    for name in VALID_NAMES:
        assert (await delete(node, admin, name)).status_code == 204, name
    assert (await list_names(node, admin, box))["blobs"] == []


# Raw, already percent-encoded values of the blob parameter.
INVALID_BLOB_NAMES = {
    "empty": "",
    "1025-bytes": "x" * 1025,
    "1025-utf8-bytes": "%C3%A9" * 512 + "x",
    "nul": "a%00b",
    "soh": "%01",
    "unit-separator": "a%1Fb",
    "tab": "a%09b",
    "newline": "a%0Ab",
    "trailing-newline": "name%0A",
    "del": "%7F",
    "c1-control": "a%C2%85b",
    "invalid-utf8": "%FF",
    "truncated-utf8": "a%C3",
    "overlong-utf8": "%C0%AF",
    "encoded-surrogate": "%ED%A0%80",
}


async def _blob_request(node: NodeHandle, headers: Headers, method: str, query: str) -> Any:
    if method == "PUT":
        return await node.client.post(f"/put_data?{query}", data=b"data",
                                      headers={**headers, "Content-Length": "4"})
    path = "/delete_data" if method == "DELETE" else "/get_data"
    return await node.client.open(f"{path}?{query}", method=method, headers=headers)


@pytest.mark.parametrize("method", ["PUT", "GET", "HEAD", "DELETE"])
async def test_invalid_blob_names_are_400_invalid_name(node: NodeHandle, admin: Headers,
                                                       box: str, method: str) -> None:
    problems = Problems()
    for label, raw in INVALID_BLOB_NAMES.items():
        r = await _blob_request(node, admin, method, f"container=box&blob={raw}")
        await problems.expect_error(label, r, 400, None if method == "HEAD" else "InvalidName")
    problems.assert_none()
    assert (await list_names(node, admin, box))["blobs"] == []


BAD_BLOB_QUERIES = {
    "no-blob": ("container=box", "InvalidRequest"),
    "no-container": ("blob=b", "InvalidRequest"),
    "nothing": ("", "InvalidRequest"),
    "repeated-container": ("container=box&container=other&blob=b", "InvalidRequest"),
    "repeated-same-container": ("container=box&container=box&blob=b", "InvalidRequest"),
    "repeated-blob": ("container=box&blob=a&blob=b", "InvalidRequest"),
    "repeated-differently-encoded": ("container=box&%63ontainer=box&blob=b", "InvalidRequest"),
    "bad-percent": ("container=box&blob=a%G0", "InvalidRequest"),
    "lone-percent": ("container=box&blob=a%", "InvalidRequest"),
    "bad-container-name": ("container=Box&blob=b", "InvalidName"),
    "short-container-name": ("container=bo&blob=b", "InvalidName"),
    "container-invalid-utf8": ("container=b%FFx&blob=b", "InvalidName"),
}


@pytest.mark.parametrize("method", ["PUT", "GET", "DELETE"])
async def test_bad_blob_queries_are_400(node: NodeHandle, admin: Headers, box: str,
                                        method: str) -> None:
    await put(node, admin, box, "b", b"keep")
    problems = Problems()
    for label, (query, code) in BAD_BLOB_QUERIES.items():
        await problems.expect_error(label, await _blob_request(node, admin, method, query),
                                    400, code)
    problems.assert_none()
    assert await get_body(node, admin, box, "b") == b"keep"


async def test_a_container_parameter_with_a_trailing_newline_is_400_invalid_name(
        node: NodeHandle, admin: Headers, box: str) -> None:
    """``box%0A`` is not ``box`` and not a valid name: 400, never a 404 for "box\\n"."""
    problems = Problems()
    for method in ["PUT", "GET", "HEAD", "DELETE"]:
        r = await _blob_request(node, admin, method, "container=box%0A&blob=b")
        await problems.expect_error(method, r, 400, None if method == "HEAD" else "InvalidName")
    r = await node.client.get("/list_blobs?container=box%0A", headers=admin)
    await problems.expect_error("list_blobs", r, 400, "InvalidName")
    problems.assert_none()


# -- small blobs live in their manifest --------------------------------------------------------


async def test_a_small_blob_is_stored_in_its_manifest_and_a_larger_one_in_chunks(
        node: NodeHandle, admin: Headers, box: str) -> None:
    inline_max = node.services.config.inline_max
    small, large = os.urandom(inline_max), os.urandom(inline_max + 1)
    chunks_before = node.services.chunks.count
    assert (await node.put_blob(box, "small", small, admin)).status_code == 201
    assert node.services.chunks.count == chunks_before  # no chunk file for it
    assert (await node.put_blob(box, "large", large, admin)).status_code == 201
    assert node.services.chunks.count == chunks_before + 1
    for name, data in (("small", small), ("large", large)):
        r = await get(node, admin, name)
        assert r.status_code == 200 and await r.get_data() == data
        assert r.headers["ETag"] == f'"{md5_hex(data)}"'
        r = await get(node, admin, name, Range="bytes=10-19")
        assert r.status_code == 206 and await r.get_data() == data[10:20]
        assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
        r = await head(node, admin, name)  # (its Content-Length: tests/e2e/test_http.py)
        assert r.status_code == 200 and r.headers["ETag"] == f'"{md5_hex(data)}"'


async def test_overwriting_a_small_blob_with_a_large_one_and_back(
        node: NodeHandle, admin: Headers, box: str) -> None:
    inline_max = node.services.config.inline_max
    for size in (10, inline_max + 5, 3, 0, 7):
        data = os.urandom(size)
        assert (await node.put_blob(box, "b", data, admin)).status_code == 201
        r = await get(node, admin, "b")
        assert r.status_code == 200 and await r.get_data() == data
    assert (await delete(node, admin, "b")).status_code == 204
    assert (await get(node, admin, "b")).status_code == 404


async def test_with_inline_max_zero_every_blob_has_chunks(tmp_path: Path) -> None:
    async with running_node(tmp_path / "n", inline_max=0) as node:
        admin = await node.admin_headers()
        await create_container(node, admin, "box")
        assert (await node.put_blob("box", "tiny", b"abc", admin)).status_code == 201
        assert node.services.chunks.count == 1
        r = await get(node, admin, "tiny")
        assert await r.get_data() == b"abc"
