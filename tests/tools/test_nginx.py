"""nginx in front of a real cluster: tools/nginx.conf balancing, streaming, failing over.

A real nginx (Debian's package, installed if missing) runs as this module's child with
tools/nginx.conf, only its addresses changed (the nodes' ports, a free port to listen on)
and its prefix a temporary directory (pid file, access log, temp dirs; ``daemon off``).
Through it: requests reach every node and carry a request id; multi-MiB uploads (with a
Content-Length and chunked) reach the nodes while the client is still sending, so nginx
does not buffer them, and come back byte for byte through nginx and from every node
directly. Last, the coordinator is SIGKILLed while a client keeps writing and reading
through nginx, and traffic goes on (see ``test_traffic_continues_through_nginx_when_a_node_dies``
for exactly what is allowed to fail). nginx is stopped by its pid.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from node.testing.observe import coordinator_of, wait_for
from node.testing.process import DEFAULT_ADMIN_PASSWORD, NodeProcess

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tools" / "nginx.conf"
MIB = 1 << 20
#: Multi-MiB, several 1 MiB chunks (the cluster's chunk size), not too slow on 2 cores.
BLOB_BYTES = 16 * MIB
PIECE_BYTES = 64 * 1024
TIMEOUT = httpx.Timeout(60.0, connect=5.0)


@dataclass
class Nginx:
    url: str
    prefix: Path
    proc: subprocess.Popen[bytes]

    def access_log(self) -> list[str]:
        return (self.prefix / "access.log").read_text(errors="replace").splitlines()

    def log_tail(self) -> str:
        return (self.prefix / "nginx.stderr").read_text(errors="replace")[-3000:]


def local_config(nodes: dict[str, NodeProcess], port: int, directory: Path) -> Path:
    """tools/nginx.conf with nodeN's 127.0.0.1:800N replaced by the test node's address and
    the listen address by ``port``: nothing else changes."""
    text = CONFIG.read_text()
    for index, (_, node) in enumerate(sorted(nodes.items()), start=1):
        host, node_port = node.address
        text, count = re.subn(rf"(\bserver )127\.0\.0\.1:800{index}\b",
                              rf"\g<1>{host}:{node_port}", text)
        assert count == 1, f"{CONFIG} has no upstream server 127.0.0.1:800{index}"
    text, count = re.subn(r"\blisten 127\.0\.0\.1:8000;", f"listen 127.0.0.1:{port};", text)
    assert count == 1, f"{CONFIG} does not listen on 127.0.0.1:8000"
    path = directory / "nginx.conf"
    path.write_text(text)
    return path


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def nginx(cluster: dict[str, NodeProcess], debian_binary: Callable[[str, str], str],
          children: Any, free_port: Callable[[], int]) -> Iterator[Nginx]:
    binary = debian_binary("nginx", "nginx-light")
    # Its workers run as nobody when we are root: the prefix must be theirs to traverse
    # (pytest's temporary directories are private).
    prefix = Path(tempfile.mkdtemp(prefix="blobstore-nginx-"))
    prefix.chmod(0o755)
    try:
        for _ in range(3):  # another process may take the free port before nginx binds it
            port = free_port()
            config = local_config(cluster, port, prefix)
            proc = children.start([binary, "-p", f"{prefix}/", "-c", str(config)],
                                  prefix / "nginx.stderr")
            deadline = time.monotonic() + 15.0
            while proc.poll() is None and time.monotonic() < deadline and not listening(port):
                time.sleep(0.05)
            if proc.poll() is None and listening(port):
                break
            children.stop(proc)
        else:
            raise AssertionError("nginx did not start: "
                                 f"{(prefix / 'nginx.stderr').read_text()[-3000:]}")
        server = Nginx(f"http://127.0.0.1:{port}", prefix, proc)
        yield server
        assert children.stop(proc) == 0, f"nginx did not stop cleanly:\n{server.log_tail()}"
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


@pytest.fixture(scope="module")
def token(nginx: Nginx) -> str:
    answer = httpx.post(nginx.url + "/auth", json={"username": "admin",
                                                   "password": DEFAULT_ADMIN_PASSWORD},
                        timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["token"])


def api(base_url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"},
                        timeout=TIMEOUT)


def blob_params(container: str, blob: str) -> dict[str, str]:
    return {"container": container, "blob": blob}


def test_nginx_accepts_the_shipped_config(debian_binary: Callable[[str, str], str],
                                         tmp_path: Path) -> None:
    binary = debian_binary("nginx", "nginx-light")
    done = subprocess.run([binary, "-t", "-p", f"{tmp_path}/", "-c", str(CONFIG)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "test is successful" in done.stderr, done.stderr


def test_requests_reach_every_node_with_a_request_id(nginx: Nginx) -> None:
    with httpx.Client(base_url=nginx.url, timeout=TIMEOUT) as client:
        seen = {client.get("/health").json()["node_id"] for _ in range(9)}
        assert seen == {"node1", "node2", "node3"}
        sent = client.get("/health", headers={"X-Request-Id": "nginx-test-0001"})
        made = client.get("/health")
    assert sent.headers["X-Request-Id"] == "nginx-test-0001"
    # nginx's own $request_id (32 hex digits), not one the node made up (16).
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-Id"]), made.headers
    lines = [line for line in nginx.access_log() if "rid=nginx-test-0001 " in line]
    assert len(lines) == 1 and re.search(r"upstream=127\.0\.0\.1:\d+ upstream_status=200$",
                                         lines[0]), lines


def stored_chunks(nodes: dict[str, NodeProcess]) -> int:
    """Chunk files on all nodes (names only; cheap to poll)."""
    return sum(len(node.chunk_ids()) for node in nodes.values())


def body_held_at_half(data: bytes, nodes: dict[str, NodeProcess]) -> Iterator[bytes]:
    """The body in pieces, holding the second half back until the nodes have stored chunks
    of the first: with request buffering nginx would pass nothing on before the whole body
    arrived, and the wait would fail."""
    before = stored_chunks(nodes)
    half = len(data) // 2
    for at in range(0, half, PIECE_BYTES):
        yield data[at:at + PIECE_BYTES]
    took = wait_for("the nodes store chunks of an upload nginx is still receiving",
                    lambda: stored_chunks(nodes) >= before + 3, 20.0, interval_s=0.05)
    print(f"chunks stored {took:.2f} s after the first half was sent")
    for at in range(half, len(data), PIECE_BYTES):
        yield data[at:at + PIECE_BYTES]


def streamed_digest(client: httpx.Client, container: str, blob: str) -> tuple[int, str]:
    """(bytes, SHA-256) of a download, read piece by piece."""
    digest = hashlib.sha256()
    size = 0
    with client.stream("GET", "/get_data", params=blob_params(container, blob)) as answer:
        assert answer.status_code == 200, answer.read()
        for piece in answer.iter_bytes():
            digest.update(piece)
            size += len(piece)
    return size, digest.hexdigest()


def test_uploads_and_downloads_stream_through_nginx(nginx: Nginx, token: str,
                                                    cluster: dict[str, NodeProcess]) -> None:
    blobs = {"with-length.bin": os.urandom(BLOB_BYTES), "chunked.bin": os.urandom(BLOB_BYTES)}
    with api(nginx.url, token) as client:
        assert client.post("/create_container", json={"container": "streams"}
                           ).status_code == 201
        for name, data in blobs.items():
            headers = {"Content-Length": str(len(data))} if name == "with-length.bin" else {}
            started = time.monotonic()
            answer = client.post("/put_data", params=blob_params("streams", name),
                                 content=body_held_at_half(data, cluster), headers=headers)
            assert answer.status_code == 201, answer.text
            assert answer.json()["size"] == len(data)
            assert answer.json()["etag"] == hashlib.md5(data).hexdigest()
            print(f"PUT {name} through nginx: {time.monotonic() - started:.2f} s")
        for name, data in blobs.items():
            started = time.monotonic()
            assert streamed_digest(client, "streams", name) == (
                len(data), hashlib.sha256(data).hexdigest()), name
            print(f"GET {name} through nginx: {time.monotonic() - started:.2f} s")
        ranged = client.get("/get_data", params=blob_params("streams", "chunked.bin"),
                            headers={"Range": f"bytes={MIB - 10}-{MIB + 9}"})
        assert ranged.status_code == 206 and ranged.content == blobs["chunked.bin"][
            MIB - 10:MIB + 10]
    for node in cluster.values():
        with api(node.url, token) as direct:
            for name, data in blobs.items():
                assert streamed_digest(direct, "streams", name) == (
                    len(data), hashlib.sha256(data).hexdigest()), (node.node_id, name)


@dataclass
class Outcome:
    op: str
    started: float
    ended: float
    ok: bool
    detail: str
    retries: int = 0


class Traffic:
    """One client writing and reading through nginx, one request after another, until
    stopped or ``max_rounds``: PUT a fresh blob, GET it back, GET a blob from before."""

    def __init__(self, url: str, token: str, container: str, old: dict[str, bytes],
                 max_rounds: int = 400) -> None:
        self.client = api(url, token)
        self.container = container
        self.old = old
        self.max_rounds = max_rounds
        self.outcomes: list[Outcome] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def rounds_since(self, t: float) -> int:
        return sum(1 for o in self.outcomes if o.op.startswith("PUT") and o.started > t)

    def _request(self, op: str, call: Callable[[], httpx.Response], expect: int,
                 body: bytes | None = None, retry_503_s: float = 0.0) -> None:
        started = time.monotonic()
        retries = 0
        while True:
            try:
                answer = call()
            except httpx.HTTPError as exc:
                self.outcomes.append(Outcome(op, started, time.monotonic(), False, repr(exc),
                                             retries))
                return
            # 503 Unavailable is the API's "retry": see the test's docstring.
            if (answer.status_code == 503 and time.monotonic() - started < retry_503_s
                    and not self.stop.is_set()):
                retries += 1
                time.sleep(0.1)
                continue
            ok = answer.status_code == expect and (body is None or answer.content == body)
            self.outcomes.append(Outcome(op, started, time.monotonic(), ok,
                                         f"{answer.status_code} {answer.text[:200]!r}"
                                         if not ok else str(answer.status_code), retries))
            return

    def _run(self) -> None:
        old = sorted(self.old)
        for i in range(self.max_rounds):
            if self.stop.is_set():
                return
            data = os.urandom(256 * 1024)
            params = blob_params(self.container, f"new-{i}")
            self._request(f"PUT new-{i}", lambda: self.client.post(
                "/put_data", params=params, content=data), 201, retry_503_s=20.0)
            self._request(f"GET new-{i}", lambda: self.client.get(
                "/get_data", params=params), 200, data)
            name = old[i % len(old)]
            self._request(f"GET {name}", lambda: self.client.get(
                "/get_data", params=blob_params(self.container, name)), 200, self.old[name])

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        self.client.close()


def test_traffic_continues_through_nginx_when_a_node_dies(
        nginx: Nginx, token: str, cluster: dict[str, NodeProcess]) -> None:
    """The coordinator, the worst node to lose (metadata writes wait for a new one), is
    SIGKILLed while one client keeps writing and reading through nginx.

    What may fail: only a request in flight at the moment of the kill (at most one, the
    client being sequential), when the dead node was the one serving it: nginx does not
    replay a POST a node has received (tools/nginx.conf says why), nor a GET whose answer
    had started. Every request after the kill succeeds: nginx sends it to a live node, and
    retries a GET (and a POST it could not deliver) elsewhere when the dead node refuses the
    connection. Uploads may meet ``503 Unavailable`` until gossip declares the node dead
    (a chunk write needs every one of its R owners while they are all members), which the
    API documents as "retry": the client retries those, bounded, and the retries are
    counted and must stop within 15 s of the kill.
    """
    victim = coordinator_of(cluster["node1"])
    assert victim in cluster
    victim_address = "{}:{}".format(*cluster[victim].address)
    old = {f"old-{i}": os.urandom(300 * 1024) for i in range(6)}
    with api(nginx.url, token) as client:
        assert client.post("/create_container", json={"container": "failover"}
                           ).status_code == 201
        for name, data in old.items():
            answer = client.post("/put_data", params=blob_params("failover", name),
                                 content=data)
            assert answer.status_code == 201, answer.text
    log_lines_before = len(nginx.access_log())
    with Traffic(nginx.url, token, "failover", old) as traffic:
        wait_for("10 rounds of traffic before the kill", lambda: traffic.rounds_since(0) >= 10,
                 30.0)
        killed_at = time.monotonic()
        cluster[victim].kill()
        wait_for("40 rounds of traffic after the kill",
                 lambda: traffic.rounds_since(killed_at) >= 40 or not traffic.thread.is_alive(),
                 60.0)
    outcomes = list(traffic.outcomes)
    in_flight = [o for o in outcomes if o.started <= killed_at < o.ended]
    failed = [o for o in outcomes if not o.ok]
    retried = [o for o in outcomes if o.retries]
    after = [o for o in outcomes if o.started > killed_at]
    print(f"\nkilled the coordinator {victim}: {len(outcomes)} requests, "
          f"{len(after)} started after the kill; failed: {failed}; in flight at the kill: "
          f"{in_flight}; PUTs retried on 503: {[(o.op, o.retries) for o in retried]}")
    assert len(after) >= 120, "the traffic stopped early"
    assert all(o in in_flight for o in failed), failed
    assert len(failed) <= 1
    assert all(o.op.startswith("PUT") and o.started < killed_at + 15.0 for o in retried), \
        retried
    # nginx did fail over: a request tried the dead node, then another one.
    new_lines = nginx.access_log()[log_lines_before:]
    failed_over = [line for line in new_lines if f"upstream={victim_address}, " in line]
    assert failed_over, new_lines[-20:]
    print(f"nginx passed {len(failed_over)} requests on from {victim} to another node, "
          f"e.g. {failed_over[0]}")
    survivors = [node for name, node in cluster.items() if name != victim]
    last = max(int(o.op.split("-")[1]) for o in outcomes if o.op.startswith("PUT") and o.ok)
    for node in survivors:
        with api(node.url, token) as direct:
            answer = direct.get("/get_data", params=blob_params("failover", f"new-{last}"))
            assert answer.status_code == 200, (node.node_id, answer.text)
