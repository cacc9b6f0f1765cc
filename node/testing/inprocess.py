"""Nodes inside the test process: real storage and metadata, HTTP via Quart's test client.

``running_node`` starts a ``Node`` in a nursery (its HTTP server bound to an
ephemeral loopback port) and yields a ``NodeHandle`` with an authenticated
client helper. A crash is cancelling the node's scope; ``restart`` starts a new
``Node`` object on the same data dir.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from quart.typing import TestClientProtocol

from node.clock import ManualClock, WallClock
from node.config import NodeConfig, config_for_tests
from node.node import Node

ADMIN_PASSWORD = "admin-password"


@dataclass
class NodeHandle:
    node: Node
    client: TestClientProtocol
    scope: trio.CancelScope

    @property
    def services(self) -> Any:
        return self.node.services

    async def login(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
        response = await self.client.post("/auth", json={"username": username,
                                                         "password": password})
        assert response.status_code == 200, await response.get_data()
        return (await response.get_json())["token"]

    async def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.login()}"}

    async def put_blob(self, container: str, blob: str, data: bytes,
                       headers: dict[str, str], **extra: str) -> Any:
        """POST /put_data with a Content-Length, as every real HTTP client sends."""
        from urllib.parse import urlencode

        query = urlencode({"container": container, "blob": blob})
        return await self.client.post(f"/put_data?{query}", data=data,
                                      headers={**headers, "Content-Length": str(len(data)),
                                               **extra})


@asynccontextmanager
async def running_node(data_dir: Path, *, clock: WallClock | None = None,
                       **overrides: Any) -> AsyncIterator[NodeHandle]:
    config: NodeConfig = config_for_tests(data_dir, **overrides)
    node = Node(config, clock=clock)
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[Node]) -> None:
            with scope:
                await node.run(task_status=task_status)

        await nursery.start(run)
        assert node.app is not None
        handle = NodeHandle(node, node.app.test_client(), scope)
        try:
            yield handle
        finally:
            node.stop()
            with trio.move_on_after(10):
                await node._served.wait()
            scope.cancel()


__all__ = ["ADMIN_PASSWORD", "ManualClock", "NodeHandle", "running_node"]
