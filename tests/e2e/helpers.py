"""httpx helpers shared by the end-to-end tests."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx

from node.testing.process import NodeProcess

TIMEOUT = httpx.Timeout(30.0, connect=5.0)


def client(node: NodeProcess, token: str | None = None) -> httpx.Client:
    """An httpx client of ``node`` (over HTTPS, trusting only its CA, if it runs TLS)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=node.url, headers=headers, timeout=TIMEOUT,
                        verify=node.ssl_context() or True)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def create_container(c: httpx.Client, name: str) -> None:
    r = c.post("/create_container", json={"container": name})
    assert r.status_code == 201, r.text


def put(c: httpx.Client, container: str, blob: str, data: bytes | Iterator[bytes],
        **headers: str) -> httpx.Response:
    return c.post("/put_data", params={"container": container, "blob": blob},
                  content=data, headers=headers)


def get(c: httpx.Client, container: str, blob: str, **headers: str) -> httpx.Response:
    return c.get("/get_data", params={"container": container, "blob": blob},
                 headers=headers)


def list_all_blobs(c: httpx.Client, container: str, limit: int = 100) -> list[dict[str, Any]]:
    """Every blob of the container, following next_marker (bounded)."""
    blobs: list[dict[str, Any]] = []
    marker = ""
    for _ in range(1000):
        r = c.get("/list_blobs", params={"container": container, "marker": marker,
                                         "limit": limit})
        assert r.status_code == 200, r.text
        page = r.json()
        blobs.extend(page["blobs"])
        if not page["next_marker"]:
            return blobs
        marker = page["next_marker"]
    raise AssertionError("list_blobs did not finish within 1000 pages")


def container_info(c: httpx.Client, name: str) -> dict[str, Any]:
    r = c.get("/list_containers")
    assert r.status_code == 200, r.text
    found = [x for x in r.json()["containers"] if x["container"] == name]
    assert len(found) == 1, r.json()
    return found[0]


def error_code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


def raw_connect(node: NodeProcess, timeout_s: float = 10.0) -> socket.socket:
    sock = socket.create_connection(node.address, timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, deadline_s: float) -> tuple[bytes, bool]:
    """Everything the peer sends until it closes or resets (True) or the deadline (False)."""
    data = b""
    end = time.monotonic() + deadline_s
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(min(left, 1.0))
        try:
            piece = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data, True
        if not piece:
            return data, True
        data += piece
    return data, False


def parse_raw_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def health_ok(node: NodeProcess) -> bool:
    status, answer = node.request("GET", "/health")
    return status == 200 and isinstance(answer, dict) and answer.get("status") == "ok"


def read_response(sock: socket.socket, deadline_s: float, *, head: bool = False
                  ) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length (or none, for HEAD/1xx-less errors)."""
    end = time.monotonic() + deadline_s
    data = b""

    def more() -> None:
        nonlocal data
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete response within {deadline_s} s: {data[:300]!r}")
        sock.settimeout(left)
        piece = sock.recv(65536)
        if not piece:
            raise ConnectionError(f"closed mid-response: {data[:300]!r}")
        data += piece

    while b"\r\n\r\n" not in data:
        more()
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    status, headers, _ = parse_raw_response(head_bytes + b"\r\n\r\n")
    length = 0 if head or status in (204, 304) else int(headers.get("content-length", "0"))
    while len(rest) < length:
        more()
        rest = data.partition(b"\r\n\r\n")[2]
    return status, headers, rest


def rejoin_args(node: NodeProcess, seeds: Iterable[NodeProcess]) -> list[str]:
    """The node's own flags, joining through live ``seeds`` (ports are new on every start)."""
    args: list[str] = []
    skip = False
    for arg in node.args:
        if skip:
            skip = False
        elif arg == "--join":
            skip = True
        else:
            args.append(arg)
    return [*args, "--join", ",".join(s.gossip_address for s in seeds)]
