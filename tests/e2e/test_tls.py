"""TLS on real processes: the contract over HTTPS, chunks replicated over TLS, outsiders out.

Three nodes, each with its own certificate from one cluster CA (made by the
tooling's own functions, tools.certs), run the basics of API.md over HTTPS
(login, containers, PUT/GET/range/LIST/DELETE, a user and a grant, blobctl),
and a blob of several chunks reaches every node over the TLS RPC channels. A
fourth node with the cluster key but a certificate from another CA never
becomes a member, its handshakes are refused and counted, and the cluster
keeps working. Plain HTTP and a plain RPC channel get nothing from a TLS node,
and a node whose TLS files do not fit refuses to start (exit code 2).
"""

from __future__ import annotations

import hashlib
import http.client
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.testing.observe import wait_for
from node.testing.process import NodeProcess, node_env, run_node_cli, start_joined
from tests.e2e.conftest import StartNode
from tests.e2e.helpers import client, create_container, get, list_all_blobs, put
from tests.tls_files import Authority, NodeFiles

pytestmark = pytest.mark.e2e

KEY = {"BLOBSTORE_CLUSTER_KEY": "e2e-tls-cluster-key-0123456789"}
CHUNK = 64 * 1024
ARGS = ("--gossip-preset", "tests", "--chunk-size", "64KiB", "--replicas", "3")
NAMES = ("n1", "n2", "n3")


def metric(node: NodeProcess, name: str) -> float:
    status, text = node.request("GET", "/metrics")
    assert status == 200
    values = [float(line.split()[-1]) for line in text.decode().splitlines()
              if line.startswith(name + " ") or line.startswith(name + "{")]
    return sum(values)


def members(node: NodeProcess, token: str) -> set[str]:
    status, body = node.request("GET", "/cluster", token=token)
    assert status == 200, body
    return {m["node_id"] for m in body["members"] if m["state"] in ("alive", "suspect")}


def blobctl(*args: str, stdin: bytes | None = None) -> bytes:
    done = subprocess.run([sys.executable, "-m", "tools.blobctl.cli", *args], input=stdin,
                          capture_output=True, timeout=60,
                          env=node_env({"BLOBCTL_URL": None, "BLOBCTL_TOKEN": None,
                                        "BLOBCTL_CACERT": None}))
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def test_a_tls_cluster_serves_the_contract_and_keeps_outsiders_out(
        start_node: StartNode, tmp_path: Path) -> None:
    ca = Authority(tmp_path / "ca")
    files = {name: ca.node(name) for name in NAMES}
    started = time.monotonic()
    nodes = start_joined(lambda name, args: start_node(name, *args,
                                                       env={**KEY, **files[name].env()}),
                         NAMES, ARGS)
    print(f"\n3 TLS nodes serving with one coordinator in {time.monotonic() - started:.1f} s")
    assert all(node.url.startswith("https://") for node in nodes.values())
    n1, n2, n3 = nodes.values()
    token = n1.login()
    assert members(n1, token) == set(NAMES)

    # The contract's basics, spread over the nodes, over HTTPS.
    big = random.Random(1).randbytes(5 * CHUNK + 4)  # 6 different chunks
    with client(n1, token) as c1, client(n2, token) as c2, client(n3, token) as c3:
        create_container(c1, "secure")
        r = put(c2, "secure", "big.bin", big)
        assert r.status_code == 201, r.text
        assert r.json()["etag"] == hashlib.md5(big).hexdigest()
        assert put(c3, "secure", "small.txt", b"hello over TLS").status_code == 201
        for c in (c1, c2, c3):
            r = get(c, "secure", "big.bin")
            assert r.status_code == 200 and r.content == big
        r = get(c3, "secure", "big.bin", Range=f"bytes={CHUNK - 10}-{CHUNK + 9}")
        assert r.status_code == 206 and r.content == big[CHUNK - 10:CHUNK + 10]
        assert [b["blob"] for b in list_all_blobs(c1, "secure")] == ["big.bin", "small.txt"]
        r = c2.request("DELETE", "/delete_data", params={"container": "secure",
                                                         "blob": "small.txt"})
        assert r.status_code == 204
        assert get(c1, "secure", "small.txt").status_code == 404
        r = c1.post("/users", json={"username": "alice", "password": "alice-password-1",
                                    "role": "user"})
        assert r.status_code == 201, r.text
        r = c3.post("/grant_access", json={"container": "secure", "username": "alice",
                                           "permission": "read"})
        assert r.status_code == 204, r.text
    alice = n2.login("alice", "alice-password-1")
    with client(n3, alice) as c:
        assert get(c, "secure", "big.bin").content == big
        assert put(c, "secure", "nope", b"x").status_code == 403

    # Every chunk of the big blob was written to all three nodes: RPC over TLS.
    digests = {hashlib.sha256(big[i:i + CHUNK]).hexdigest() for i in range(0, len(big), CHUNK)}
    assert len(digests) == 6
    for node in nodes.values():
        assert digests <= node.chunk_ids(), node.node_id

    # blobctl against an HTTPS node, trusting the cluster CA only.
    config = tmp_path / "blobctl"
    common = ("--url", n2.url, "--cacert", str(ca.ca_file), "--config-dir", str(config))
    blobctl(*common, "login", "--username", "admin", "--password-stdin",
            stdin=n1.admin_password.encode() if n1.admin_password else None)
    assert blobctl(*common, "get", "secure/big.bin", "-") == big

    # A node with the cluster key but a certificate from another CA never joins.
    other = Authority(tmp_path / "other", "another CA")
    intruder = start_node("n4", *ARGS, "--join", n1.gossip_address,
                          env={**KEY, **other.node("n4").env()})
    time.sleep(3.0)  # 15 protocol periods, and several join attempts
    assert intruder.request("GET", "/health")[1]["members"] == 1
    for node in nodes.values():
        assert members(node, token) == set(NAMES)
    refused = metric(n1, 'blobstore_tls_handshakes_failed_total{direction="in"}')
    print(f"handshakes refused by n1 while the intruder tried to join: {refused:.0f}")
    assert refused >= 1
    with client(n3, token) as c:
        assert put(c, "secure", "after.txt", b"still working").status_code == 201
        assert get(c, "secure", "after.txt").content == b"still working"


def test_plain_http_and_plain_rpc_get_nothing_from_a_tls_node(start_node: StartNode,
                                                              tmp_path: Path) -> None:
    files = Authority(tmp_path / "ca").node("n1")
    node = start_node("n1", *ARGS, env={**KEY, **files.env()})
    host, port = node.address
    plain = http.client.HTTPConnection(host, port, timeout=5)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        plain.request("GET", "/health")
        plain.getresponse()
    plain.close()
    gossip_host, gossip_port = node.gossip_address.rsplit(":", 1)
    with socket.create_connection((gossip_host, int(gossip_port)), timeout=5) as sock:
        sock.sendall(b"BRPC\x01\x02n9" + bytes(16) + b"n9")
        data = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                piece = sock.recv(4096)
            except ConnectionResetError:
                break
            if not piece:
                break
            data += piece
    assert b"BRPC" not in data and len(data) < 100, data  # at most a TLS alert
    wait_for("the refused handshake counted",
             lambda: metric(node, 'blobstore_tls_handshakes_failed_total{direction="in"}') >= 1,
             5.0)
    assert node.request("GET", "/health")[0] == 200  # over HTTPS, all is well


def test_tls_files_that_do_not_fit_stop_the_node_at_start_up(tmp_path: Path) -> None:
    ca = Authority(tmp_path / "ca")
    good = ca.node("n1")
    stranger = Authority(tmp_path / "other", "another CA").node("n1")
    base = ["--node-id", "n1", "--data-dir", str(tmp_path / "d"), "--http", "127.0.0.1:0",
            "--gossip", "127.0.0.1:0"]
    cases = {
        "tls_key": {"BLOBSTORE_TLS_CERT": str(good.cert), "BLOBSTORE_TLS_CA": str(good.ca)},
        "does not verify against tls_ca": NodeFiles(stranger.cert, stranger.key, good.ca).env(),
        "does not name its gossip address 127.0.0.1": ca.node("elsewhere",
                                                              ips=("10.1.2.3",)).env(),
        "no such file": NodeFiles(good.cert, good.key, tmp_path / "missing.crt").env(),
    }
    for expected, env in cases.items():
        done = run_node_cli(base, env)
        assert done.returncode == 2, (expected, done.stderr)
        assert expected in done.stderr, done.stderr
