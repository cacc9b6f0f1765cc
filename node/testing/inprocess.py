"""Nodes inside the test process: real storage and metadata, HTTP via Quart's test client.

``running_node`` starts a ``Node`` in a nursery (its HTTP server bound to an
ephemeral loopback port) and yields a ``NodeHandle`` with an authenticated
client helper. A crash is cancelling the node's scope; ``restart`` starts a new
``Node`` object on the same data dir. ``cluster`` runs several such nodes that
gossip and run Raft over real loopback sockets (every live node is a seed of
the next one started).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode
from typing import Any, cast

import trio
from quart_trio.testing import TrioClient

from node.clock import ManualClock, WallClock
from node.config import NodeConfig, config_for_tests, parse_host_port
from node.node import Node

ADMIN_PASSWORD = "admin-password"


@dataclass
class NodeHandle:
    node: Node
    client: TrioClient
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
        # quart-trio's app makes a TrioClient; test_client() is annotated with the looser
        # TestClientProtocol, whose open() wrongly requires json.
        handle = NodeHandle(node, cast(TrioClient, node.app.test_client()), scope)
        try:
            yield handle
        finally:
            node.stop()
            with trio.move_on_after(10):
                await node._served.wait()
            scope.cancel()


#: Several nodes share this process's event loop (and its stalls): 0.5 s rather than 0.3.
FAST = dict(gossip_preset="tests", election_timeout_s=0.5, meta_timeout_s=2.0,
            leave_timeout_s=0.5)


async def eventually(what: str, check: Callable[[], bool], within_s: float = 15.0) -> float:
    started = trio.current_time()
    with trio.move_on_after(within_s):
        while not check():
            await trio.sleep(0.05)
        return trio.current_time() - started
    raise AssertionError(f"not within {within_s} s: {what}")


def leader_of(h: NodeHandle) -> str | None:
    return h.services.log.status().leader  # type: ignore[no-any-return]


def status(h: NodeHandle) -> Any:
    return h.services.log.status()


class Cluster:
    def __init__(self, tmp: Path, stack: AsyncExitStack) -> None:
        self.tmp = tmp
        self.stack = stack
        self.nodes: dict[str, NodeHandle] = {}
        self.seed = ""

    async def start(self, node_id: str, **overrides: Any) -> NodeHandle:
        settings: dict[str, Any] = {**FAST, **overrides}
        if self.seed and "join" not in settings:  # every live node is a seed
            settings["join"] = tuple(parse_host_port(h.node.gossip.transport.address)
                                     for h in self.live() if h.node.gossip is not None)
        handle = await self.stack.enter_async_context(
            running_node(self.tmp / node_id, node_id=node_id, **settings))
        self.nodes[node_id] = handle
        if not self.seed:
            assert handle.node.gossip is not None
            self.seed = handle.node.gossip.transport.address
        return handle

    def crash(self, node_id: str) -> None:
        self.nodes.pop(node_id).scope.cancel()

    def live(self) -> list[NodeHandle]:
        return list(self.nodes.values())

    def agreed_leader(self) -> str | None:
        leaders = {leader_of(h) for h in self.live()}
        return leaders.pop() if len(leaders) == 1 else None

    async def leader(self, within_s: float = 15.0) -> NodeHandle:
        await eventually("one leader named by every node",
                         lambda: self.agreed_leader() in self.nodes, within_s)
        return self.nodes[self.agreed_leader()]  # type: ignore[index]


@asynccontextmanager
async def cluster(tmp: Path) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        yield Cluster(tmp, stack)


#: Small chunks, so small test blobs still have several.
CHUNK = 64 * 1024


def holders(nodes: dict[str, NodeHandle], digest: bytes) -> set[str]:
    """The nodes with a chunk file for ``digest`` on disk."""
    return {name for name, h in nodes.items() if h.services.chunks.path_for(digest).exists()}


async def get(h: NodeHandle, headers: dict[str, str], container: str, blob: str) -> bytes:
    """A blob's bytes through ``h``; anything but 200 fails the test."""
    answer = await h.client.get(f"/get_data?{urlencode({'container': container, 'blob': blob})}",
                                headers=headers)
    data = await answer.get_data(as_text=False)
    assert answer.status_code == 200, (h.node.config.node_id, data)
    return data


async def started(c: Cluster, n: int, container: str,
                  **overrides: Any) -> tuple[NodeHandle, dict[str, str]]:
    """``n`` nodes (64 KiB chunks, R=3), all voters and in every ring; n1, an admin's
    headers, and a new container."""
    for i in range(1, n + 1):
        await c.start(f"n{i}", **{"chunk_size": CHUNK, "replicas": 3, **overrides})
    first = c.nodes["n1"]
    await eventually(f"{n} voters, {n} in every ring", lambda: len(
        first.services.log.status().voters) == min(n, 5) and all(
        len(h.services.ring.node_ids) == n for h in c.live()), 30.0)
    headers = await first.admin_headers()
    answer = await first.client.post("/create_container", json={"container": container},
                                     headers=headers)
    assert answer.status_code == 201
    return first, headers


__all__ = ["ADMIN_PASSWORD", "CHUNK", "FAST", "Cluster", "ManualClock", "NodeHandle", "cluster",
           "eventually", "get", "holders", "leader_of", "running_node", "started", "status"]
