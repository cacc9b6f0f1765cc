"""The metadata log over Raft: writes from any node commit once, results come from each
node's own application, domain errors travel as results, and without a quorum calls
answer Unavailable instead of hanging."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

from node.errors import ContainerExists, Unavailable
from node.meta import commands as c
from node.meta.replicated import ReplicatedLog
from node.meta.state import MetaState
from node.net.memory import MemoryNetwork
from node.net.router import StreamRouter
from node.raft.core import RaftConfig, Role
from node.raft.driver import RaftDriver
from node.raft.messages import Membership
from node.rpc.peers import PeerNet
from node.store.db import Database

KEY = b"cluster-key-for-meta-tests"
CONFIG = RaftConfig(election_timeout_s=0.3, heartbeat_interval_s=0.05)
IDS = ("a", "b", "c")
ADDRESS = {n: f"10.0.0.{i + 1}:7946" for i, n in enumerate(IDS)}
NOW = "2026-11-24T00:00:00.000Z"


async def start(nursery: trio.Nursery, net: MemoryNetwork, node_id: str, tmp: Path,
                logs: dict[str, ReplicatedLog], scopes: dict[str, trio.CancelScope]) -> None:
    async def run(task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope() as scope:
            scopes[node_id] = scope
            transport = net.transport(ADDRESS[node_id])
            meta_db = Database(tmp / f"{node_id}-meta.sqlite3")
            raft_db = Database(tmp / f"{node_id}-raft.sqlite3")
            try:
                state = MetaState()
                meta_db.write_sync(state.load)
                peers = PeerNet(node_id, transport, KEY, ADDRESS.get)
                log = logs[node_id] = ReplicatedLog(state, meta_db, peers, timeout_s=2.0)
                driver = RaftDriver(node_id, CONFIG, raft_db, log.apply, peers,
                                    random.Random(node_id), applied=state.applied_index,
                                    bootstrap=Membership(frozenset(IDS)))
                log.attach(driver)
                async with trio.open_nursery() as inner:
                    await inner.start(peers.run)
                    await inner.start(StreamRouter(transport).run, peers.serve)
                    await inner.start(driver.run)
                    task_status.started()
            finally:
                meta_db.close()
                raft_db.close()
    await nursery.start(run)


async def test_writes_from_any_node_and_unavailable_without_quorum(tmp_path: Path) -> None:
    net = MemoryNetwork(random.Random(5), delay_s=(0.0005, 0.002))
    logs: dict[str, ReplicatedLog] = {}
    scopes: dict[str, trio.CancelScope] = {}
    async with net.running(), trio.open_nursery() as nursery:
        for node_id in IDS:
            await start(nursery, net, node_id, tmp_path, logs, scopes)
        await logs["a"].submit(c.Bootstrap("cid", "00" * 32, "hash", NOW))
        leader = next(n for n in IDS if logs[n].status().leader == n)
        follower = next(n for n in IDS if n != leader)
        record = await logs[follower].submit(c.CreateContainer("photos", "admin", 1, NOW))
        assert getattr(record, "name", None) == "photos"
        with pytest.raises(ContainerExists):
            await logs[leader].submit(c.CreateContainer("photos", "admin", 1, NOW))
        for n in IDS:
            await logs[n].read_barrier()
            assert logs[n].status().leader == leader
        # Kill two of three: no quorum, so writes and linearizable reads answer 503.
        for n in IDS:
            if n != follower:
                scopes[n].cancel()
                net.detach(ADDRESS[n])
        started = trio.current_time()
        with pytest.raises(Unavailable):
            await logs[follower].submit(c.CreateContainer("music", "admin", 1, NOW))
        with pytest.raises(Unavailable):
            await logs[follower].read_barrier()
        assert trio.current_time() - started < 6.0
        assert logs[follower].driver is not None and logs[follower].driver.raft is not None
        assert logs[follower].driver.raft.role is not Role.LEADER
        nursery.cancel_scope.cancel()
