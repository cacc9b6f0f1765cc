"""HTTP details that only a real server and real sockets show.

One node (64 KiB chunks, 1 s body idle timeout) serves the whole module; every
test uses fresh random data, since chunks are content-addressed and shared.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from node.testing.process import NodeProcess, flip_byte
from tests.e2e.conftest import StartNode
from tests.e2e.helpers import (client, container_info, create_container, error_code, get,
                               health_ok, list_all_blobs, put, raw_connect, read_response,
                               read_until_closed)

pytestmark = pytest.mark.e2e

CHUNK = 64 * 1024
BOX = "box"


@pytest.fixture(scope="module")
def node(start_module_node: StartNode) -> NodeProcess:
    node = start_module_node("n1", "--chunk-size", "64KiB", "--body-idle-timeout-s", "1")
    with client(node, node.login()) as c:
        create_container(c, BOX)
    return node


@pytest.fixture(scope="module")
def token(node: NodeProcess) -> str:
    return node.login()


@pytest.fixture
def api(node: NodeProcess, token: str) -> Iterator[httpx.Client]:
    with client(node, token) as c:
        yield c
    assert health_ok(node), "the node stopped serving"


def raw_request(node: NodeProcess, head: str, body: bytes = b"", *, method_head: bool = False
                ) -> tuple[int, dict[str, str], bytes]:
    """Send one raw HTTP/1.1 request; the node's answer (read by its Content-Length)."""
    with raw_connect(node) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n" + body)
        return read_response(sock, 10.0, head=method_head)


def auth_line(node: NodeProcess) -> str:
    """The Authorization header line of the module's admin (a fresh login each time)."""
    return f"Authorization: Bearer {node.login()}\r\n"


def chunk_path(node: NodeProcess, piece: bytes) -> Path:
    """The chunk file of ``piece``, wherever the store's fan-out puts it."""
    name = hashlib.sha256(piece).hexdigest()
    found = list((node.data_dir / "store" / "chunks").rglob(name))
    assert len(found) == 1, f"expected one chunk file named {name}, found {found}"
    return found[0]


def query(blob: str) -> str:
    return urlencode({"container": BOX, "blob": blob})


# -- HEAD -------------------------------------------------------------------

@pytest.mark.parametrize("size", [100_000, 1000], ids=["chunks", "inline"])
def test_head_has_content_length_and_no_body(node: NodeProcess, api: httpx.Client,
                                             size: int) -> None:
    data = os.urandom(size)
    assert put(api, BOX, "head-me", data).status_code == 201
    r = api.head("/get_data", params={"container": BOX, "blob": "head-me"})
    assert r.status_code == 200
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert "Last-Modified" in r.headers

    # On the wire: headers only, though Content-Length announces the size. The
    # next request on the same connection must be answered right after the headers.
    with raw_connect(node) as sock:
        sock.sendall(f"HEAD /get_data?{query('head-me')} HTTP/1.1\r\nHost: x\r\n"
                     f"{auth_line(node)}\r\n".encode())
        status, headers, _ = read_response(sock, 10.0, head=True)
        assert (status, headers["content-length"]) == (200, str(len(data)))
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = read_response(sock, 10.0)
        assert status == 200, "bytes after the HEAD response: a body was sent"
        assert httpx.Response(200, content=body).json()["node_id"] == "n1"

    r = api.head("/get_data", params={"container": BOX, "blob": "head-me"},
                 headers={"Range": "bytes=10-19"})
    assert r.status_code == 206
    assert r.headers["Content-Length"] == "10"
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"

    r = api.head("/get_data", params={"container": BOX, "blob": "no-such-blob"})
    assert (r.status_code, r.content) == (404, b"")


def test_range_get_across_chunks(api: httpx.Client) -> None:
    data = os.urandom(3 * CHUNK + 5)
    assert put(api, BOX, "ranged", data).status_code == 201
    start, end = CHUNK - 7, 2 * CHUNK + 9            # spans three chunks
    r = get(api, BOX, "ranged", Range=f"bytes={start}-{end}")
    assert r.status_code == 206
    assert r.content == data[start:end + 1]
    assert r.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
    assert get(api, BOX, "ranged", Range="bytes=-5").content == data[-5:]
    assert get(api, BOX, "ranged", Range=f"bytes={len(data)}-").status_code == 416


# -- upload framing ---------------------------------------------------------

def test_chunked_upload(api: httpx.Client) -> None:
    data = os.urandom(3 * CHUNK + 4321)
    cuts = [0, 1, 17, 5000, CHUNK, CHUNK + 1, 2 * CHUNK + 99, len(data)]

    def pieces() -> Iterator[bytes]:
        for a, b in zip(cuts, cuts[1:]):
            yield data[a:b]

    r = put(api, BOX, "chunked", pieces())
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in r.request.headers
    assert r.status_code == 201, r.text
    assert (r.json()["size"], r.json()["etag"]) == (len(data), hashlib.md5(data).hexdigest())
    assert get(api, BOX, "chunked").content == data

    r = put(api, BOX, "chunked-empty", iter(()))
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 201, r.text
    assert r.json()["size"] == 0
    got = get(api, BOX, "chunked-empty")
    assert (got.status_code, got.content) == (200, b"")


def test_post_without_length_or_chunked_is_411(node: NodeProcess, api: httpx.Client) -> None:
    status, headers, body = raw_request(
        node, f"POST /put_data?{query('no-length')} HTTP/1.1\r\nHost: x\r\n{auth_line(node)}")
    assert status == 411, (status, body)
    assert headers["content-type"].startswith("application/json")
    assert httpx.Response(411, content=body).json()["error"]["code"] == "LengthRequired"
    assert get(api, BOX, "no-length").status_code == 404


def test_content_md5_mismatch_stores_nothing(api: httpx.Client) -> None:
    import base64
    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    r = put(api, BOX, "bad-digest", os.urandom(2 * CHUNK), **{"Content-MD5": wrong})
    assert r.status_code == 400 and error_code(r) == "BadDigest"
    assert get(api, BOX, "bad-digest").status_code == 404


# -- interrupted uploads ----------------------------------------------------

@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_disconnecting_mid_body_leaves_no_trace(node: NodeProcess, api: httpx.Client,
                                                        how: str) -> None:
    old = os.urandom(1000)
    assert put(api, BOX, f"keep-{how}", old).status_code == 201
    before = container_info(api, BOX)
    for blob in (f"torn-{how}", f"keep-{how}"):       # a new blob, and an overwrite
        declared = 5 * CHUNK
        sock = raw_connect(node)
        try:
            sock.sendall((f"POST /put_data?{query(blob)} HTTP/1.1\r\nHost: x\r\n"
                          f"{auth_line(node)}Content-Length: {declared}\r\n\r\n").encode())
            sock.sendall(os.urandom(declared // 2))   # two and a half chunks
            time.sleep(0.3)
            if how == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            sock.close()
    time.sleep(0.5)
    assert get(api, BOX, f"torn-{how}").status_code == 404
    r = get(api, BOX, f"keep-{how}")
    assert (r.status_code, r.content) == (200, old)
    names = {b["blob"] for b in list_all_blobs(api, BOX)}
    assert f"torn-{how}" not in names
    assert container_info(api, BOX) == before
    assert put(api, BOX, f"torn-{how}", b"fine").status_code == 201   # still serving


def test_stalled_body_is_cut_off_after_idle_timeout(node: NodeProcess,
                                                    api: httpx.Client) -> None:
    before = container_info(api, BOX)
    with raw_connect(node) as sock:
        sock.sendall((f"POST /put_data?{query('stalled')} HTTP/1.1\r\nHost: x\r\n"
                      f"{auth_line(node)}Content-Length: {4 * CHUNK}\r\n\r\n").encode())
        sock.sendall(os.urandom(CHUNK + 100))
        started = time.monotonic()
        status, _, body = read_response(sock, 10.0)     # the idle timeout is 1 s
        waited = time.monotonic() - started
        print(f"stalled upload answered after {waited:.2f} s")
        assert status == 408, body
        assert httpx.Response(408, content=body).json()["error"]["code"] == "RequestTimeout"
        assert 0.8 <= waited < 5.0, f"answered after {waited:.2f} s; the idle timeout is 1 s"
        assert get(api, BOX, "stalled").status_code == 404
        assert container_info(api, BOX) == before
        # Cut off means cut off: the unread rest of the body cannot be parsed as a
        # next request, so the node must close the connection after the 408.
        rest, closed = read_until_closed(sock, 5.0)
        assert closed, f"connection still open 5 s after the 408 (then got {rest[:100]!r})"


def test_connection_close_is_honoured(node: NodeProcess) -> None:
    with raw_connect(node) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers, _ = read_response(sock, 10.0)
        assert status == 200
        rest, closed = read_until_closed(sock, 5.0)
        assert closed and rest == b"", "the node kept a Connection: close connection open"


def test_refused_upload_with_a_late_small_body_keeps_the_connection(node: NodeProcess,
                                                                   token: str) -> None:
    """An upload refused before its body arrived: the node reads the small body first, so
    the keep-alive connection still serves the next request (hypercorn alone closed it
    without a word, and the client's next request found it dead)."""
    with raw_connect(node) as sock:
        sock.sendall(f"POST /put_data?container=nosuchbox&blob=a HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {token}\r\nContent-Length: 4\r\n\r\n"
                     .encode())
        time.sleep(0.3)  # the refusal is decided before the body is sent
        sock.sendall(b"nope")
        status, headers, _ = read_response(sock, 10.0)
        assert status == 404 and headers.get("connection") != "close"
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock, 10.0)[0] == 200


def test_refused_upload_with_a_large_body_says_connection_close(node: NodeProcess,
                                                                token: str) -> None:
    with raw_connect(node) as sock:
        sock.sendall(f"POST /put_data?container=nosuchbox&blob=a HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {token}\r\nContent-Length: {10 * CHUNK}\r\n"
                     f"\r\n".encode())
        status, headers, _ = read_response(sock, 10.0)
        assert status == 404 and headers.get("connection") == "close"
        _, closed = read_until_closed(sock, 5.0)
        assert closed


# -- corruption on disk -----------------------------------------------------

def test_corrupt_single_chunk_is_503_never_bad_bytes(node: NodeProcess,
                                                     api: httpx.Client) -> None:
    data = os.urandom(20_000)  # over inline_max (16 KiB): it has a chunk to damage
    assert put(api, BOX, "rotten", data).status_code == 201
    path = chunk_path(node, data)
    assert path.is_file(), f"expected the chunk file at {path}"
    flip_byte(path, 5000)
    corrupt = path.read_bytes()
    for headers in ({}, {"Range": "bytes=100-199"}, {}):  # again: now quarantined
        r = get(api, BOX, "rotten", **headers)
        assert r.status_code == 503, (r.status_code, r.content[:100])
        assert error_code(r) == "Unavailable"
        assert corrupt[4000:6000] not in r.content
    status, metrics = node.request("GET", "/metrics")
    assert status == 200
    line = [x for x in metrics.decode().splitlines()
            if x.startswith("blobstore_chunks_corrupt_found")]
    assert line and float(line[0].split()[-1]) >= 1, line


def test_corrupt_later_chunk_aborts_the_stream(node: NodeProcess, api: httpx.Client) -> None:
    data = os.urandom(5 * CHUNK + 1000)                 # six chunks
    assert put(api, BOX, "rotten-tail", data).status_code == 201
    bad = 3
    flip_byte(chunk_path(node, data[bad * CHUNK:(bad + 1) * CHUNK]), 123)

    received = b""
    error: Exception | None = None
    declared = None
    try:
        with api.stream("GET", "/get_data",
                        params={"container": BOX, "blob": "rotten-tail"}) as r:
            assert r.status_code == 200               # the first chunk was fine
            declared = int(r.headers["Content-Length"])
            for piece in r.iter_raw():
                received += piece
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        error = exc
    assert declared == len(data)
    print(f"stream cut after {len(received)} of {declared} bytes: {error!r}")
    assert len(received) < declared, "the client got a complete body despite a bad chunk"
    assert error is not None, "short body without a protocol error"
    assert len(received) <= bad * CHUNK
    assert received == data[:len(received)], "bytes that are not the blob were sent"


# -- reclaiming the chunks of failed uploads --------------------------------

def chunks_on_disk(c: httpx.Client) -> int:
    return int(c.get("/cluster").json()["chunks"]["on_disk"])


def test_chunks_of_interrupted_and_deleted_uploads_are_reclaimed(
        start_node: StartNode) -> None:
    node = start_node("gc", "--chunk-size", "64KiB", "--gc-grace-s", "0",
                      "--gc-interval-s", "0.2")
    with client(node, node.login()) as c:
        create_container(c, BOX)
        kept = os.urandom(2 * CHUNK)
        assert put(c, BOX, "kept", kept).status_code == 201
        baseline = chunks_on_disk(c)
        assert baseline == 2

        with raw_connect(node) as sock:
            sock.sendall((f"POST /put_data?{query('torn')} HTTP/1.1\r\nHost: x\r\n"
                          f"Authorization: Bearer {node.login()}\r\n"
                          f"Content-Length: {6 * CHUNK}\r\n\r\n").encode())
            sock.sendall(os.urandom(4 * CHUNK))
            time.sleep(0.5)
        doomed = os.urandom(3 * CHUNK)
        assert put(c, BOX, "doomed", doomed).status_code == 201
        assert c.delete("/delete_data", params={"container": BOX, "blob": "doomed"}
                        ).status_code == 204

        deadline = time.monotonic() + 10
        while chunks_on_disk(c) != baseline and time.monotonic() < deadline:
            time.sleep(0.2)
        assert chunks_on_disk(c) == baseline, "chunks of failed or deleted uploads remain"
        assert get(c, BOX, "kept").content == kept
