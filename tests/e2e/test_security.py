"""Claims of the threat model (README, "Threat model") that no other test already makes.

- A user's token reaches only the public API: the internal calls (chunk transfer,
  coordinator RPC) live on the gossip port behind the cluster-key handshake, and an
  HTTP request carrying a valid token gets nothing there.
- Names from users never become file paths: blobs named like paths are stored and
  read back, and the node's disk holds only files named by digests.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from node.testing.process import NodeProcess
from tests.e2e.conftest import StartNode
from tests.e2e.helpers import client, create_container, get, health_ok, put, read_until_closed

pytestmark = pytest.mark.e2e

HEX64 = re.compile(r"[0-9a-f]{64}")
PATHLIKE = ["../../../../etc/passwd", "/etc/hostname", "a/../../b", "..", ".", "~root/x",
            "C:\\Windows\\win.ini", "store/chunks/00/" + "0" * 64, "%2e%2e/x", "evil.sqlite3"]


def test_a_token_opens_nothing_on_the_internal_port(start_node: StartNode) -> None:
    node = start_node("n1")
    token = node.login()
    host, port = node.gossip_address.rsplit(":", 1)
    for request in (f"POST /chunk.get HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}"
                    "\r\nContent-Length: 32\r\n\r\n" + "0" * 32,
                    f"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"):
        with socket.create_connection((host, int(port)), timeout=5.0) as sock:
            sock.sendall(request.encode())
            data, closed = read_until_closed(sock, 5.0)
        assert data == b"" and closed, data[:200]
    assert health_ok(node)


def test_names_from_users_never_become_file_paths(start_node: StartNode,
                                                  tmp_path: Path) -> None:
    node: NodeProcess = start_node("n1", "--chunk-size", "64KiB", "--inline-max", "0")
    before = sorted(p.name for p in node.data_dir.parent.iterdir())
    with client(node, node.login()) as c:
        create_container(c, "box")
        for i, name in enumerate(PATHLIKE):
            data = f"{i}:{name}".encode() + os.urandom(100)
            assert put(c, "box", name, data).status_code == 201, name
            r = get(c, "box", name)
            assert r.status_code == 200 and r.content == data, name
    # Nothing appeared beside the data dir, and inside it chunk files are named by their
    # digests only; no user-chosen name is anywhere on disk.
    assert sorted(p.name for p in node.data_dir.parent.iterdir()) == before
    planted = {Path(name.replace("\\", "/")).name for name in PATHLIKE} - {"", ".", ".."}
    for path in node.data_dir.rglob("*"):
        if path.is_file() and (node.data_dir / "store" / "chunks") in path.parents:
            assert HEX64.fullmatch(path.name), path
        assert path.name not in planted - {"0" * 64}, path
    assert not (tmp_path / "etc").exists()
