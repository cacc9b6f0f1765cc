"""Lifecycle of a real node process: graceful stop, restart, identity and state.

SIGTERM is a graceful leave: the node stops taking requests, finishes those in
flight, removes ``node.ready`` and exits 0. A restart on the same data dir
brings back the node id, blobs, users, grants and the token signing key, so
tokens issued before it still work, and revocations (logout) stay revoked.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from node.testing.process import DEV_ADMIN_PASSWORD, READY_FILE
from tests.e2e.conftest import StartNode
from tests.e2e.helpers import (client, container_info, create_container, get, health_ok,
                               list_all_blobs, put)

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"


def test_sigterm_exits_0_and_removes_ready_file(start_node: StartNode) -> None:
    node = start_node("n1")
    ready = node.data_dir / READY_FILE
    assert ready.exists()
    with client(node, node.login()) as c:
        assert c.get("/list_containers").status_code == 200   # leaves an idle keep-alive
        started = time.monotonic()
        code = node.terminate(timeout_s=30)
        took = time.monotonic() - started
    assert code == 0, node.log_tail()
    assert not ready.exists()
    assert "Traceback" not in node.log_text()
    # An idle keep-alive connection is not a request in flight: no waiting it out.
    assert took < 5.0, f"graceful stop with an idle connection took {took:.1f} s"
    print(f"graceful stop took {took:.2f} s")


def test_dev_mode_uses_the_documented_default_loudly(start_node: StartNode) -> None:
    node = start_node("n1", "--dev", admin_password=None)
    node.login("admin", DEV_ADMIN_PASSWORD)
    warnings = [line for line in node.log_text().splitlines()
                if '"level": "warning"' in line and DEV_ADMIN_PASSWORD in line]
    assert warnings, node.log_text()


def test_upload_in_flight_at_sigterm_completes(start_node: StartNode) -> None:
    node = start_node("n1")
    token = node.login()
    with client(node, token) as c:
        create_container(c, "box")
    data = os.urandom(3 * 1024 * 1024 + 123)
    half = len(data) // 2
    half_sent, go_on = threading.Event(), threading.Event()

    def body() -> Iterator[bytes]:
        yield data[:half]
        half_sent.set()
        if not go_on.wait(20):
            raise RuntimeError("the test never let the upload finish")
        for i in range(half, len(data), 256 * 1024):
            yield data[i:i + 256 * 1024]

    def upload() -> httpx.Response:
        with client(node, token) as c:
            return put(c, "box", "in-flight", body(), **{"Content-Length": str(len(data))})

    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(upload)
        try:
            assert half_sent.wait(20), "the upload never started"
            time.sleep(0.3)                   # let the node take in the first half
            node.signal(signal.SIGTERM)
            time.sleep(0.7)                   # the node is now draining
            assert node.running, "the node exited with an upload in flight"
            # Draining: no new requests are taken (refused, or answered 503).
            try:
                status, answer = node.request("GET", "/health", timeout_s=2)
                print(f"while draining, GET /health answered {status} {answer!r}")
                assert status != 200 or answer["status"] != "ok", answer
            except OSError as exc:
                print(f"while draining, a new connection failed: {exc!r}")
        finally:
            go_on.set()
        response = future.result(timeout=30)
    assert response.status_code == 201, response.text
    assert response.json()["etag"] == hashlib.md5(data).hexdigest()
    assert node.wait(30) == 0
    assert not (node.data_dir / READY_FILE).exists()

    node.start()
    with client(node, token) as c:
        r = get(c, "box", "in-flight")
        assert r.status_code == 200
        assert r.content == data


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_restart_keeps_identity_data_users_grants_and_tokens(start_node: StartNode,
                                                              stop: str) -> None:
    node = start_node("n1")
    identity = (node.data_dir / "node.json").read_text()
    admin = node.login()
    blobs = {"a": b"hello", "dir/b": os.urandom(300 * 1024), "empty": b""}
    with client(node, admin) as c:
        for user in ("alice", "bob"):
            r = c.post("/users", json={"username": user, "password": PASSWORD,
                                       "role": "user"})
            assert r.status_code == 201, r.text
        create_container(c, "box")
        create_container(c, "private")
        for name, data in blobs.items():
            assert put(c, "box", name, data).status_code == 201
        r = c.post("/grant_access", json={"container": "box", "username": "alice",
                                          "permission": "read"})
        assert r.status_code == 204, r.text
    alice = node.login("alice", PASSWORD)
    bob = node.login("bob", PASSWORD)
    with client(node, bob) as c:
        assert c.post("/logout").status_code == 204
        assert c.get("/list_containers").status_code == 401

    if stop == "sigterm":
        assert node.terminate() == 0
    else:
        assert node.kill() == -signal.SIGKILL
    # An existing cluster needs no admin password to start again.
    node.start(env={"BLOBSTORE_ADMIN_PASSWORD": None})

    assert (node.data_dir / "node.json").read_text() == identity
    assert node.request("GET", "/health")[1]["node_id"] == "n1"
    with client(node, admin) as c:                       # token from before the restart
        r = c.get("/users")
        assert r.status_code == 200, r.text
        roles = {u["username"]: u["role"] for u in r.json()["users"]}
        assert roles == {"admin": "admin", "alice": "user", "bob": "user"}
        listed = {b["blob"]: b for b in list_all_blobs(c, "box")}
        assert sorted(listed) == sorted(blobs)
        for name, data in blobs.items():
            r = get(c, "box", name)
            assert r.status_code == 200 and r.content == data, name
            assert listed[name]["size"] == len(data)
            assert listed[name]["etag"] == hashlib.md5(data).hexdigest()
        info = container_info(c, "box")
        assert (info["blob_count"], info["bytes"]) == (3, sum(map(len, blobs.values())))
    with client(node, alice) as c:                       # alice's grant survived
        assert [x["container"] for x in c.get("/list_containers").json()["containers"]] \
            == ["box"]
        assert get(c, "box", "a").content == b"hello"
        assert put(c, "box", "a", b"nope").status_code == 403
        assert get(c, "private", "x").status_code == 403
    with client(node, bob) as c:                         # the logout survived
        assert c.get("/list_containers").status_code == 401
    with client(node, node.login("bob", PASSWORD)) as c:
        assert c.get("/list_containers").status_code == 200
    assert health_ok(node)
