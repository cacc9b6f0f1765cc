"""Snapshot files between two nodes: streamed in chunks, verified, and refused when a chunk
arrives out of order or the digest does not match."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from node.net.memory import MemoryNetwork
from node.net.router import StreamRouter
from node.raft.messages import Membership, SnapshotMeta
from node.raft.snapshots import CHUNK_BYTES, SnapshotFiles, file_name
from node.rpc.peers import CallFailed, PeerNet

ADDRESS = {"a": "10.0.0.1:7946", "b": "10.0.0.2:7946"}
META = SnapshotMeta(40, 3, Membership(frozenset({"a", "b"})))


@asynccontextmanager
async def two_nodes(tmp: Path) -> AsyncIterator[tuple[dict[str, SnapshotFiles],
                                                      dict[str, PeerNet], trio.Nursery]]:
    net = MemoryNetwork(random.Random(1))
    files: dict[str, SnapshotFiles] = {}
    nets: dict[str, PeerNet] = {}
    async with trio.open_nursery() as nursery:
        for name in ADDRESS:
            transport = net.transport(ADDRESS[name])
            nets[name] = PeerNet(name, transport, b"k" * 20, ADDRESS.get)
            files[name] = SnapshotFiles(tmp / name, nets[name])
            await nursery.start(nets[name].run)
            await nursery.start(StreamRouter(transport).run, nets[name].serve)
        yield files, nets, nursery
        nursery.cancel_scope.cancel()


async def test_a_snapshot_file_arrives_whole_and_then_the_message_goes(tmp_path: Path) -> None:
    async with two_nodes(tmp_path) as (files, _, nursery):
        content = os.urandom(2 * CHUNK_BYTES + 12345)  # three chunks, the last one short
        files["a"].path_for(META).write_bytes(content)
        done = trio.Event()
        assert files["a"].send(nursery, "b", META, done.set)
        assert not files["a"].send(nursery, "b", META, done.set)  # one transfer at a time
        with trio.fail_after(10):
            await done.wait()
        received = files["b"].received(META)
        assert received is not None and received.read_bytes() == content
        assert files["a"].counters["sent"] == 1 and files["b"].counters["received"] == 1
        # Installing it makes it b's own snapshot; other snapshot files go.
        (tmp_path / "b" / file_name(SnapshotMeta(10, 1, META.membership))).write_bytes(b"old")
        files["b"].adopt(META, received)
        assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [file_name(META)]
        # A file that does not exist is not sent.
        missing = SnapshotMeta(99, 9, META.membership)
        assert not files["a"].send(nursery, "b", missing, done.set)


async def test_chunks_out_of_order_and_a_wrong_digest_are_refused(tmp_path: Path) -> None:
    async with two_nodes(tmp_path) as (files, nets, _):
        with pytest.raises(CallFailed, match="out of order"):
            await nets["a"].call("b", "raft.snapshot", b"40 3 5\nxyz", timeout_s=5)
        await nets["a"].call("b", "raft.snapshot", b"40 3 0\nhello", timeout_s=5)
        with pytest.raises(CallFailed, match="out of order"):
            await nets["a"].call("b", "raft.snapshot", b"40 3 99\nworld", timeout_s=5)
        await nets["a"].call("b", "raft.snapshot", b"40 3 0\nhello", timeout_s=5)  # restart
        with pytest.raises(CallFailed, match="digest"):
            await nets["a"].call("b", "raft.snapshot_done", b"40 3 5 " + b"0" * 64,
                                 timeout_s=5)
        assert files["b"].received(META) is None
        assert list((tmp_path / "b").iterdir()) == []  # the bad part is gone
        assert files["b"].counters["rejected"] == 3


def test_clean_keeps_only_the_recorded_snapshot(tmp_path: Path) -> None:
    net = MemoryNetwork(random.Random(1))
    files = SnapshotFiles(tmp_path, PeerNet("a", net.transport(ADDRESS["a"]), b"k" * 20,
                                            ADDRESS.get))
    for name in (file_name(META), file_name(SnapshotMeta(20, 2, META.membership)),
                 "received-50-3.sqlite3", "received-60-3.sqlite3.part"):
        (tmp_path / name).write_bytes(b"x")
    files.clean(META)
    assert [p.name for p in tmp_path.iterdir()] == [file_name(META)]
    files.clean(None)
    assert [p.name for p in tmp_path.iterdir()] == [file_name(META)]
