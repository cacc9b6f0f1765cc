"""Whole nodes in one process, gossiping and running Raft over real loopback sockets.

They form one coordinator group from ``--bootstrap-expect 3`` in any start
order, forward writes from any node to the leader, fail over when the leader
is cancelled (a crash), answer 503 without a quorum, take new nodes as
learners and promote them, hand leadership over on a graceful stop, and take
back a voter whose disk was replaced.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from typing import Any

import trio

from node.config import parse_host_port
from node.testing.inprocess import (Cluster, NodeHandle, cluster, eventually, leader_of,
                                    running_node, status)

async def healthy(h: NodeHandle) -> bool:
    answer = await h.client.get("/health")
    body = await answer.get_json()
    return bool(body["status"] == "ok" and body["coordinator"])


async def create(h: NodeHandle, headers: dict[str, str], name: str) -> int:
    answer = await h.client.post("/create_container", json={"container": name},
                                 headers=headers)
    return answer.status_code


async def names(h: NodeHandle, headers: dict[str, str]) -> set[str]:
    answer = await h.client.get("/list_containers", headers=headers)
    assert answer.status_code == 200, await answer.get_data()
    return {c["container"] for c in (await answer.get_json())["containers"]}


async def three(c: Cluster, **overrides: Any) -> None:
    """Three nodes expecting three, started seed last-but-not-first to vary the order."""
    first = await c.start("n2", bootstrap_expect=3, **overrides)
    join = (parse_host_port(c.seed),)
    await c.start("n3", bootstrap_expect=3, join=join, **overrides)
    await c.start("n1", bootstrap_expect=3, join=join, **overrides)
    assert first is c.nodes["n2"]
    for h in c.live():
        await eventually(f"{h.node.config.node_id} in the cluster", partial(in_cluster, h))


def in_cluster(h: NodeHandle) -> bool:
    return bool(leader_of(h)) and bool(h.services.state.signing_key)


async def three_with_containers(c: Cluster) -> tuple[NodeHandle, dict[str, str]]:
    """Three nodes, and containers ``before-0..4`` created through the leader: the leader
    and its admin headers."""
    await three(c)
    leader = await c.leader()
    headers = await leader.admin_headers()
    for i in range(5):
        assert await create(leader, headers, f"before-{i}") == 201
    return leader, headers


async def test_three_nodes_form_one_group_and_every_node_takes_writes(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await three(c)
        leader = await c.leader()
        # The metadata was bootstrapped exactly once: the same cluster and key everywhere.
        assert len({h.services.state.cluster_id for h in c.live()}) == 1
        assert len({h.services.state.signing_key for h in c.live()}) == 1
        assert status(leader).voters == ("n1", "n2", "n3")
        follower = next(h for h in c.live() if h is not leader)
        headers = await follower.admin_headers()  # logging in on a follower reads linearizably
        for i, h in enumerate(c.live()):
            assert await create(h, headers, f"from-{h.node.config.node_id}") == 201, i
        # A write acknowledged anywhere is visible at once everywhere (reads use ReadIndex).
        expected = {f"from-{n}" for n in c.nodes}
        for h in c.live():
            assert await names(h, headers) == expected
        # Every node names the coordinator; the leader reports every follower's progress.
        views = {}
        for h in c.live():
            answer = await h.client.get("/cluster", headers=headers)
            views[h.node.config.node_id] = (await answer.get_json())["coordinator"]
        leading = [n for n, v in views.items() if v["this_node"] == "leader"]
        assert len(leading) == 1, views
        coordinator = views[leading[0]]
        assert coordinator["node_id"] == leading[0]
        assert set(coordinator["match_index"]) == set(c.nodes) - {leading[0]}
        assert all(v["match_index"] == {} for n, v in views.items() if n != leading[0])
        assert coordinator["voters"] == ["n1", "n2", "n3"]
        assert coordinator["commit_index"] >= 4


async def test_the_leader_crashes_a_new_one_takes_over_and_nothing_acknowledged_is_lost(
        tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        leader, headers = await three_with_containers(c)
        old = leader.node.config.node_id
        old_term = status(leader).term
        c.crash(old)
        took = await eventually("a new leader", lambda: c.agreed_leader() not in (None, old))
        print(f"\nleader crash: new leader after {took:.2f} s (election timeout 0.5 s)")
        new = await c.leader()
        assert status(new).term > old_term
        for h in c.live():
            assert {f"before-{i}" for i in range(5)} <= await names(h, headers)
            assert await create(h, headers, f"after-{h.node.config.node_id}") == 201


async def test_without_a_quorum_writes_and_linearizable_reads_answer_503_in_time(
        tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await three(c)
        survivor = c.nodes["n1"]
        headers = await survivor.admin_headers()
        c.crash("n2")
        c.crash("n3")
        started = trio.current_time()
        assert await create(survivor, headers, "lonely") == 503
        took = trio.current_time() - started
        assert took < 2.0 + 1.0, took
        answer = await survivor.client.get("/list_containers", headers=headers)
        assert answer.status_code == 503
        body = await answer.get_json()
        assert body["error"]["code"] == "Unavailable"
        await eventually("the cut-off leader steps down", lambda: leader_of(survivor) is None)
        health = await (await survivor.client.get("/health")).get_json()
        assert health["coordinator"] is None  # check-quorum: a cut-off leader steps down
        # Operators can still see the cluster (no read barrier on /cluster).
        answer = await survivor.client.get("/cluster", headers=headers)
        assert answer.status_code == 200
        assert (await answer.get_json())["coordinator"]["node_id"] is None


async def test_a_graceful_stop_of_the_leader_hands_leadership_over(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await three(c)
        leader = await c.leader()
        name = leader.node.config.node_id
        term = status(leader).term
        leader.node.stop()
        took = await eventually("another leader", lambda: any(
            leader_of(h) not in (None, name) for h in c.live() if h is not leader), 5.0)
        print(f"\ngraceful stop: leadership handed over after {took:.2f} s")
        others = [h for h in c.live() if h is not leader]
        assert all(status(h).term == term + 1 for h in others if leader_of(h) != name)
        # A handover needs no election timeout (0.5-1 s) to pass.
        assert took < 0.5, took


async def test_new_nodes_join_as_learners_promoted_up_to_five_and_replace_dead_voters(
        tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.start("n1", voter_replace_s=1.0)  # a cluster of one...
        for i in range(2, 7):  # ...that five more join (the default expect of 1, with --join)
            await c.start(f"n{i}", voter_replace_s=1.0)
        leader = await c.leader()
        assert leader.node.config.node_id == "n1"
        await eventually("five voters and one learner", lambda: (
            len(status(leader).voters), len(status(leader).learners)) == (5, 1), 30.0)
        headers = await leader.admin_headers()
        assert await create(leader, headers, "everywhere") == 201
        for h in c.live():
            await eventually("bootstrapped and caught up", partial(healthy_now, h))
            assert "everywhere" in await names(h, headers)
        # A voter dies: once gossip has called it dead for voter_replace_s, the learner
        # takes its place and the voter set is back to five live nodes.
        learner = status(leader).learners[0]
        victim = next(v for v in status(leader).voters if v != "n1")
        c.crash(victim)
        took = await eventually(f"{learner} replaces {victim}", lambda: (
            learner in status(leader).voters and victim not in status(leader).voters), 60.0)
        print(f"\ndead voter replaced {took:.1f} s after the crash")
        assert set(status(leader).voters) == set(c.nodes)
        assert await create(leader, headers, "after-replacement") == 201


async def test_a_voter_whose_disk_was_replaced_is_fenced_refilled_admitted_and_votes_again(
        tmp_path: Path) -> None:
    """Killed, its data dir deleted, restarted with the same node id: it joins with an
    empty log, fenced (no vote) until the leader admits it, is refilled, and is a voter
    like the others again. (Before fences it stayed empty: the leader kept the match index
    of the old disk and asked it for the same entry over and over.)"""
    async with cluster(tmp_path) as c:
        leader, headers = await three_with_containers(c)
        name = leader.node.config.node_id
        victim = next(n for n in c.nodes if n != name)
        c.crash(victim)
        await trio.sleep(0.2)
        shutil.rmtree(tmp_path / victim)
        back = await c.start(victim, bootstrap_expect=3)
        expected = {f"before-{i}" for i in range(5)}
        took = await eventually(f"{victim} refilled and admitted", lambda: (
            not status(back).fenced and healthy_now(back)
            and set(back.services.state.view.containers) >= expected), 20.0)
        print(f"\nreplaced disk: refilled and admitted {took:.2f} s after the restart")
        assert status(leader).voters == ("n1", "n2", "n3")
        await eventually("its fence tag gone from every view", lambda: all(
            "fence" not in m.tags for h in c.live() for m in h.services.membership.members))
        # It votes again: with the leader gone, the other two elect one of them.
        c.crash(name)
        await eventually("a new leader", lambda: c.agreed_leader() not in (None, name))
        for h in c.live():
            assert expected <= await names(h, headers)
            assert await create(h, headers, f"after-{h.node.config.node_id}") == 201


def healthy_now(h: NodeHandle) -> bool:
    return h.services.state.signing_key is not None and bool(leader_of(h))


async def test_logs_are_compacted_and_new_or_lagging_nodes_catch_up_from_snapshots(
        tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await three(c, snapshot_every=20)
        leader = await c.leader()
        headers = await leader.admin_headers()
        for i in range(60):
            assert await create(leader, headers, f"c{i:03d}") == 201
        raft = leader.node.coordinator.driver.raft  # type: ignore[union-attr]
        assert raft is not None
        assert raft.log.snapshot.index >= 40, raft.log.snapshot
        assert len(list((tmp_path / leader.node.config.node_id / "snapshots").glob(
            "snapshot-*.sqlite3"))) == 1
        # A follower that was down while the log moved on past its position...
        lagging = next(n for n in c.nodes if n != leader.node.config.node_id)
        c.crash(lagging)
        for i in range(60, 120):
            assert await create(leader, headers, f"c{i:03d}") == 201
        expected = {f"c{i:03d}" for i in range(120)}
        # ...and a new node, whose log is empty: both get the snapshot, then the rest.
        await c.start("n4", snapshot_every=20)
        back = await c.start(lagging, snapshot_every=20, bootstrap_expect=3)

        def caught_up(h: NodeHandle) -> bool:
            return healthy_now(h) and set(h.services.state.view.containers) >= expected

        for h in (c.nodes["n4"], back):
            await eventually(f"{h.node.config.node_id} caught up", partial(caught_up, h), 30.0)
            assert await names(h, headers) == expected
        metrics = (await (await leader.client.get("/metrics")).get_data(as_text=False)).decode()
        size = [line for line in metrics.splitlines()
                if line.startswith("blobstore_raft_snapshot_bytes ")]
        assert size and float(size[0].split()[1]) > 0, size
        files = leader.node.coordinator._files  # type: ignore[union-attr]
        assert files.counters["sent"] >= 1, files.counters
        installed = c.nodes["n4"].node.coordinator.driver.raft.stats  # type: ignore[union-attr]
        assert installed["snapshots_installed"] >= 1


async def test_bootstrap_happens_once_when_nodes_restart_while_the_cluster_forms(
        tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.start("n1", bootstrap_expect=3)
        await c.start("n2", bootstrap_expect=3)
        await trio.sleep(0.5)  # two of three: everyone waits
        assert all(h.node.coordinator.driver is None for h in c.live())  # type: ignore[union-attr]
        c.crash("n2")  # a member of the future voter set restarts before the group forms
        await c.start("n3", bootstrap_expect=3)
        await c.start("n2", bootstrap_expect=3)
        await eventually("one group", lambda: c.agreed_leader() in c.nodes, 20.0)
        leader = await c.leader()
        # The bootstrapper, n1, restarts right after writing the voter set: it comes back
        # with its Raft state and never writes another.
        if leader.node.config.node_id != "n1":
            c.crash("n1")
            await c.start("n1", bootstrap_expect=3)
        for h in c.live():
            await eventually("caught up", partial(healthy_now, h))
        leader = await c.leader()
        assert status(leader).voters == ("n1", "n2", "n3")
        assert len({h.services.state.cluster_id for h in c.live()}) == 1
        # Exactly one membership entry made the first voter set, on every node.
        for h in c.live():
            raft = h.node.coordinator.driver.raft  # type: ignore[union-attr]
            assert raft is not None
            first = [e for e in raft.log.entries if e.index == 1]
            assert first and first[0].kind.name == "MEMBERSHIP"
            assert raft.log.entries[0].index == 1


async def test_groups_started_apart_under_one_key_never_take_each_others_members(
        tmp_path: Path) -> None:
    """An operator mistake: two nodes each started as a cluster of one, then gossip joins
    them (same cluster key). Neither leader may add the other (its log would overwrite
    metadata the other already applied), and a new node that sees both refuses to guess."""
    async with cluster(tmp_path) as c:
        a = await c.start("a", join=())
        b = await c.start("b", join=())
        seeds = tuple(parse_host_port(h.node.gossip.transport.address)  # type: ignore[union-attr]
                      for h in (a, b))
        newcomer = await c.start("n", join=seeds)
        await eventually("everyone sees everyone", lambda: all(
            len(h.services.membership.alive()) == 3 for h in c.live()))
        await trio.sleep(3.0)  # several steward rounds
        assert status(a).voters == ("a",) and status(a).learners == ()
        assert status(b).voters == ("b",) and status(b).learners == ()
        assert a.services.state.cluster_id != b.services.state.cluster_id
        assert newcomer.node.coordinator.driver is None  # type: ignore[union-attr]
        assert "several coordinator groups" in (newcomer.node.coordinator.waiting or "")  # type: ignore[union-attr]


async def test_a_metadata_database_older_than_the_raft_snapshot_is_restored_from_it(
        tmp_path: Path) -> None:
    """The metadata commits without fsync (the Raft log replays what a power cut takes
    back) and is made durable before a snapshot lets the log go. Should a node still find
    its metadata older than its snapshot (here: an old copy put back by hand), it
    reinstalls the snapshot file instead of skipping what the snapshot covers."""
    data = tmp_path / "n1"
    old = tmp_path / "old.sqlite3"
    async with running_node(data, snapshot_every=20) as node:
        headers = await node.admin_headers()
        for i in range(5):
            assert await create(node, headers, f"early-{i}") == 201
        await node.services.db.backup_to(old)
        for i in range(40):
            assert await create(node, headers, f"late-{i:02d}") == 201
        raft = node.node.coordinator.driver.raft  # type: ignore[union-attr]
        assert raft is not None
        assert raft.log.snapshot.index >= 40, raft.log.snapshot
    for suffix in ("", "-wal", "-shm"):
        (data / f"meta.sqlite3{suffix}").unlink(missing_ok=True)
    shutil.copy(old, data / "meta.sqlite3")
    async with running_node(data, snapshot_every=20) as node:
        headers = await node.admin_headers()
        expected = {f"early-{i}" for i in range(5)} | {f"late-{i:02d}" for i in range(40)}
        assert await names(node, headers) == expected
