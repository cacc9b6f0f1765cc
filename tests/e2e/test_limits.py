"""Limits on every resource a client can take (issue: hardening), on a real node.

One node with small limits serves the module; each test takes one limit to its
edge and checks the answer (status, error code, Retry-After) and that the node
keeps serving everyone else. ``test_a_node_nearly_out_of_disk_refuses_new_chunks``
runs its own node whose disk reserve is the whole disk.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from node.testing.observe import wait_for
from node.testing.process import NodeProcess
from tests.e2e.conftest import StartNode
from tests.e2e.helpers import (client, create_container, error_code, get, health_ok, put,
                               raw_connect, read_response, read_until_closed)

pytestmark = pytest.mark.e2e

BOX = "box"
LIMITS = ("--max-header-bytes", "4KiB", "--max-headers", "20", "--max-query-bytes", "2KiB",
          "--max-connections", "40", "--max-connections-per-client", "12",
          "--keep-alive-timeout-s", "1s", "--body-idle-timeout-s", "1s",
          "--body-min-bytes-per-s", "64KiB", "--max-uploads-per-user", "3",
          "--user-requests-per-s", "50", "--max-blob-size", "1MiB", "--chunk-size", "64KiB")


@pytest.fixture(scope="module")
def node(start_module_node: StartNode) -> NodeProcess:
    node = start_module_node("n1", *LIMITS)
    with client(node, node.login()) as c:
        create_container(c, BOX)
    return node


@pytest.fixture
def api(node: NodeProcess) -> Iterator[httpx.Client]:
    time.sleep(1.0)  # a full bucket for every test (50 a second, bursts of 100)
    with client(node, node.login()) as c:
        yield c
    assert health_ok(node), "the node stopped serving"


def auth_line(token: str) -> str:
    return f"Authorization: Bearer {token}\r\n"


def test_a_request_head_larger_than_the_limit_is_refused(node: NodeProcess) -> None:
    with raw_connect(node) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
        data, _ = read_until_closed(sock, 5.0)
    assert data.startswith(b"HTTP/1.1 431"), data[:100]
    with raw_connect(node) as sock:  # in pieces: Hypercorn's own limit
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(10):
                sock.sendall(b"X-Big: " + b"a" * 1000 + b"\r\n")
                time.sleep(0.02)
        except OSError:
            pass  # it was refused, and closed, before the rest was sent
        data, closed = read_until_closed(sock, 5.0)
    assert closed and (data == b"" or data.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400"))), \
        data[:100]


def test_too_many_header_fields_is_431(node: NodeProcess) -> None:
    head = "".join(f"X-H{i}: v\r\n" for i in range(25))
    with raw_connect(node) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
        status, _, body = read_response(sock, 5.0)
    assert status == 431 and b"RequestHeaderFieldsTooLarge" in body


def test_a_query_string_over_the_limit_is_414(api: httpx.Client) -> None:
    r = api.get("/list_blobs", params={"container": BOX, "prefix": "p" * 3000})
    assert r.status_code == 414 and error_code(r) == "URITooLong"


def test_connections_per_client_and_per_node_are_limited(node: NodeProcess) -> None:
    held: list[socket.socket] = []
    try:
        for _ in range(12):
            held.append(raw_connect(node))
        for sock in held[:1]:  # the ones in the limit are served
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock, 5.0)[0] == 200
        with raw_connect(node) as extra:
            data, closed = read_until_closed(extra, 5.0)
        assert data.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in data and closed
    finally:
        for sock in held:
            sock.close()
    wait_for("the closed connections to be let go", lambda: health_ok(node), 5.0)


def test_a_closed_connection_ends_at_once(start_node: StartNode) -> None:
    """Hypercorn kept a connection's task and socket until its keep-alive timer ran out
    (75 s), after the client had closed it: a client opening a connection per request
    was refused after max_connections_per_client of them, and a busy node piled up
    thousands of dead connections (found by the fault campaign)."""
    node = start_node("closer", "--max-connections-per-client", "8",
                      "--keep-alive-timeout-s", "60s")
    for _ in range(30):  # one after the other, each closed by the client
        with raw_connect(node) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock, 5.0)[0] == 200
    wait_for("the closed connections to end", lambda: open_connections(node) <= 1, 5.0,
             detail=lambda: open_connections(node))


def open_connections(node: NodeProcess) -> float:
    """The node's own count, read over a connection that is the only one left open."""
    metrics = httpx.get(f"{node.url}/metrics", timeout=5.0).text
    found = re.search(r"^blobstore_http_connections_open (\S+)$", metrics, re.M)
    assert found is not None, metrics
    return float(found[1])


def test_an_idle_keep_alive_connection_and_a_trickled_head_are_closed(
        node: NodeProcess) -> None:
    with raw_connect(node) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock, 5.0)[0] == 200
        started = time.monotonic()
        _, closed = read_until_closed(sock, 5.0)  # idle: nothing more is sent
        assert closed and time.monotonic() - started < 4.0
    with raw_connect(node) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        closed = False
        for _ in range(40):  # a header line every 0.1 s, never the end of the head
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                closed = True
                break
            time.sleep(0.1)
        data, gone = read_until_closed(sock, 3.0)
        assert closed or gone, "a trickled request head held the connection"
        assert time.monotonic() - started < 6.0


def test_a_body_trickled_slower_than_the_minimum_rate_is_cut_off(node: NodeProcess) -> None:
    token = node.login()
    with raw_connect(node) as sock:
        sock.sendall(f"POST /put_data?container={BOX}&blob=slow HTTP/1.1\r\nHost: x\r\n"
                     f"{auth_line(token)}Content-Length: 100000\r\n\r\n".encode())
        started = time.monotonic()
        answer = b""
        for _ in range(60):  # 1 KiB every 0.1 s: 10 KiB/s, under the 64 KiB/s minimum
            try:
                sock.sendall(b"x" * 1024)
            except OSError:
                break
            sock.settimeout(0.1)
            try:
                answer += sock.recv(65536)
            except TimeoutError:
                pass
            if answer:
                break
        answer += read_until_closed(sock, 3.0)[0]
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - started < 5.0
    with client(node, token) as c:
        assert get(c, BOX, "slow").status_code == 404  # nothing of it is visible


def test_uploads_in_flight_per_user_are_limited(node: NodeProcess) -> None:
    token = node.login()
    stalled = []
    try:
        for i in range(3):
            sock = raw_connect(node)
            sock.sendall(f"POST /put_data?container={BOX}&blob=held{i} HTTP/1.1\r\nHost: x\r\n"
                         f"{auth_line(token)}Content-Length: 200000\r\n\r\n".encode())
            sock.sendall(b"x" * 70_000)  # more than a chunk: the upload is under way
            stalled.append(sock)
        time.sleep(0.3)
        with client(node, token) as c:
            r = put(c, BOX, "one-more", b"y" * 1000)
            assert r.status_code == 429 and error_code(r) == "TooManyRequests"
            assert int(r.headers["Retry-After"]) >= 1
    finally:
        for sock in stalled:
            sock.close()
    time.sleep(1.5)  # the abandoned uploads end (the client left)
    with client(node, token) as c:
        assert put(c, BOX, "one-more", b"y" * 1000).status_code == 201


def test_a_user_over_the_request_rate_gets_429_with_retry_after(node: NodeProcess,
                                                                api: httpx.Client) -> None:
    answers = [api.get("/list_blobs", params={"container": BOX}) for _ in range(160)]
    refused = [r for r in answers if r.status_code == 429]
    assert refused, "150+ requests within a burst of 100 were all served"
    assert error_code(refused[0]) == "TooManyRequests"
    assert 0 < float(refused[0].headers["Retry-After"]) <= 1
    assert all(r.status_code in (200, 429) for r in answers)
    time.sleep(1.0)
    with client(node, node.login()) as fresh:  # (the old connection timed out meanwhile)
        assert fresh.get("/list_blobs", params={"container": BOX}).status_code == 200


def test_a_declared_length_over_the_maximum_is_413_before_the_body(node: NodeProcess) -> None:
    token = node.login()
    with raw_connect(node) as sock:
        sock.sendall(f"POST /put_data?container={BOX}&blob=huge HTTP/1.1\r\nHost: x\r\n"
                     f"{auth_line(token)}Content-Length: {2 * 1024 * 1024}\r\n\r\n".encode())
        status, headers, body = read_response(sock, 5.0)  # no body byte was sent
    assert status == 413 and b"TooLarge" in body
    assert headers.get("connection") == "close"


def test_a_chunked_body_over_the_maximum_is_413_and_stores_nothing(api: httpx.Client) -> None:
    def pieces() -> Iterator[bytes]:
        for _ in range(40):
            yield os.urandom(64 * 1024)  # 2.5 MiB in all
    r = put(api, BOX, "too-big", pieces())
    assert r.status_code == 413 and error_code(r) == "TooLarge"
    assert get(api, BOX, "too-big").status_code == 404


def test_a_node_nearly_out_of_disk_refuses_new_chunks(start_node: StartNode) -> None:
    """With its reserve the whole disk, no chunk fits: a PUT is 507 and stores nothing,
    while small blobs (in the metadata) and reads go on."""
    node = start_node("full", "--disk-reserve", "100%", "--chunk-size", "64KiB")
    with client(node, node.login()) as c:
        create_container(c, "full")
        assert put(c, "full", "small", b"fits in the manifest").status_code == 201
        r = put(c, "full", "big", os.urandom(100_000))
        assert r.status_code == 507 and error_code(r) == "InsufficientStorage"
        assert get(c, "full", "big").status_code == 404
        assert get(c, "full", "small").content == b"fits in the manifest"
    assert health_ok(node)
