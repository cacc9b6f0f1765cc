"""Three Raft drivers on the in-memory network with real sqlite disks: they elect a
leader, commit, fail over when the leader dies, and a restarted node catches up."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest
import trio
from prometheus_client import CollectorRegistry

from node.net.memory import MemoryNetwork
from node.net.router import StreamRouter
from node.raft.core import NotLeader, RaftConfig, Role
from node.raft.driver import RaftDriver
from node.raft.metrics import RaftCollector
from node.raft.messages import Entry, EntryKind, Membership
from node.rpc.peers import PeerNet
from node.store.db import Database

KEY = b"cluster-key-for-raft-tests"
#: (entries, seconds) of every persisted batch, from the drivers' commit observer.
batches: list[tuple[int, float]] = []


class Observer:
    def observe_batch(self, size: int, seconds: float) -> None:
        batches.append((size, seconds))
CONFIG = RaftConfig(election_timeout_s=0.3, heartbeat_interval_s=0.05)
IDS = ("a", "b", "c")
ADDRESS = {n: f"10.0.0.{i + 1}:7946" for i, n in enumerate(IDS)}


class Member:
    def __init__(self, node_id: str, tmp: Path) -> None:
        self.id = node_id
        self.path = tmp / f"{node_id}.sqlite3"
        self.applied: list[bytes] = []
        #: Like the real state machine, the applied index survives a crash with the state.
        self.applied_index = 0
        self.driver: RaftDriver | None = None
        self.scope: trio.CancelScope | None = None
        self.db: Database | None = None

    async def apply(self, entries: list[Entry]) -> list[object]:
        results: list[object] = []
        for e in entries:
            assert e.index == self.applied_index + 1, (self.id, e.index, self.applied_index)
            if e.kind is EntryKind.COMMAND:
                self.applied.append(e.data)
            self.applied_index = e.index
            results.append(len(self.applied))
        return results


async def start(nursery: trio.Nursery, net: MemoryNetwork, m: Member, seed: int) -> None:
    async def run(task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope() as scope:
            m.scope = scope
            transport = net.transport(ADDRESS[m.id])
            db = m.db = Database(m.path)
            try:
                router = StreamRouter(transport)
                peers = PeerNet(m.id, transport, KEY, ADDRESS.get)
                m.driver = RaftDriver(m.id, CONFIG, db, m.apply, peers, random.Random(seed),
                                      applied=m.applied_index,
                                      bootstrap=Membership(frozenset(IDS)),
                                      observer=Observer())
                async with trio.open_nursery() as inner:
                    await inner.start(peers.run)
                    await inner.start(router.run, peers.serve)
                    await inner.start(m.driver.run)
                    task_status.started()
            finally:
                db.close()
    await nursery.start(run)


def leader(members: dict[str, Member]) -> Member | None:
    found = [m for m in members.values() if m.driver and m.driver.raft and m.scope
             and not m.scope.cancel_called and m.driver.raft.role is Role.LEADER]
    return max(found, key=lambda m: m.driver.raft.term) if found else None  # type: ignore


async def wait_leader(members: dict[str, Member], within_s: float = 5.0) -> Member:
    with trio.fail_after(within_s):
        while (found := leader(members)) is None:
            await trio.sleep(0.02)
    return found


async def test_elect_commit_fail_over_and_catch_up(tmp_path: Path) -> None:
    net = MemoryNetwork(random.Random(7), delay_s=(0.0005, 0.002))
    members = {n: Member(n, tmp_path) for n in IDS}
    async with net.running(), trio.open_nursery() as nursery:
        for i, m in enumerate(members.values()):
            await start(nursery, net, m, seed=i)
        first = await wait_leader(members)
        assert first.driver is not None
        results = [await first.driver.propose(f"x{i}".encode()) for i in range(20)]
        assert results == list(range(1, 21))
        with pytest.raises(NotLeader):
            other = next(m for m in members.values() if m is not first)
            assert other.driver is not None
            await other.driver.propose(b"nope")

        # Crash the leader: another takes over within a few election timeouts.
        assert first.scope is not None
        first.scope.cancel()
        net.detach(ADDRESS[first.id])
        crashed_at = trio.current_time()
        second = await wait_leader({k: v for k, v in members.items() if v is not first})
        failover = trio.current_time() - crashed_at
        assert failover < 6 * CONFIG.election_timeout_s, failover
        assert second.driver is not None
        for i in range(20, 40):
            await second.driver.propose(f"x{i}".encode())
        index = await second.driver.read_index()
        assert index >= 40

        # The crashed node restarts on its own disk and catches up.
        await start(nursery, net, first, seed=9)
        with trio.fail_after(5):
            while len(first.applied) < 40:
                await trio.sleep(0.05)
        expected = [f"x{i}".encode() for i in range(40)]
        for m in members.values():
            with trio.fail_after(5):
                while len(m.applied) < 40:
                    await trio.sleep(0.05)
            assert m.applied == expected, m.id
        print(f"\nfail-over took {failover:.2f} s (election timeout {CONFIG.election_timeout_s} s)")
        # The coordinator's series, as /metrics will show them (whoever leads by now).
        current = await wait_leader(members)
        assert current.driver is not None and current.driver.raft is not None
        registry = CollectorRegistry()
        registry.register(RaftCollector(lambda: current.driver))
        sample = registry.get_sample_value
        assert sample("blobstore_raft_is_leader") == 1
        assert sample("blobstore_raft_term") == current.driver.raft.term
        assert (sample("blobstore_raft_commit_index") or 0) >= 40
        assert sample("blobstore_raft_voters") == 3
        assert (sample("blobstore_raft_leader_changes_total") or 0) >= 1
        assert (sample("blobstore_raft_entries_persisted_total") or 0) >= 20
        assert batches and all(size >= 0 and seconds >= 0 for size, seconds in batches)
        nursery.cancel_scope.cancel()


async def test_a_member_whose_disk_fills_up_stalls_and_then_catches_up(tmp_path: Path) -> None:
    """Found by the fault campaign: a full disk failed the Raft log write and the node
    died. Now the member stops acknowledging (it cannot persist), the others go on, and
    it catches up, entry for entry, once there is room again."""
    net = MemoryNetwork(random.Random(11), delay_s=(0.0005, 0.002))
    members = {n: Member(n, tmp_path) for n in IDS}
    async with net.running(), trio.open_nursery() as nursery:
        for i, m in enumerate(members.values()):
            await start(nursery, net, m, seed=i)
        chief = await wait_leader(members)
        assert chief.driver is not None
        victim = next(m for m in members.values() if m is not chief)
        assert victim.db is not None
        tries = 0

        async def full(fn: Callable[[sqlite3.Connection], object]) -> NoReturn:
            nonlocal tries
            tries += 1
            raise sqlite3.OperationalError("database or disk is full")

        victim.db.write = full  # type: ignore[method-assign]
        for i in range(10):
            await chief.driver.propose(f"f{i}".encode())
        await trio.sleep(1.0)
        assert tries >= 2 and len(victim.applied) < 10  # it kept trying, and alive
        del victim.db.write  # room again
        expected = [f"f{i}".encode() for i in range(10)]
        with trio.fail_after(10):
            while victim.applied != expected:
                await trio.sleep(0.05)
        assert all(m.applied == expected for m in members.values())
        nursery.cancel_scope.cancel()
