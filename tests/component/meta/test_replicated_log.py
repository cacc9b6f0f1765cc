"""The metadata log over Raft: writes from any node commit once, results come from each
node's own application, domain errors travel as results, and without a quorum calls
answer Unavailable instead of hanging.

Also what the single-node log's tests checked, for a group of one voter and for a
follower forwarding to the leader of three: concurrent submits are group-committed,
a domain error reaches only its submitter, read_barrier returns, and a node whose
driver is not running answers Unavailable within its timeout."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import pytest
import trio
import trio.testing

from node.errors import ContainerExists, Unavailable, UserNotFound
from node.meta import commands as c
from node.meta.records import Container, User
from node.meta.replicated import ReplicatedLog
from node.meta.state import MetaState
from node.net.memory import MemoryNetwork
from node.net.router import StreamRouter
from node.raft.core import NotLeader, RaftConfig, Role
from node.raft.driver import RaftDriver
from node.raft.messages import Entry, Membership
from node.rpc.peers import PeerNet
from node.store.db import Connection, Database

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
        driver = logs[follower].driver
        assert driver is not None and driver.raft is not None
        assert driver.raft.role is not Role.LEADER
        nursery.cancel_scope.cancel()


# -- group commit, errors and shutdown (what the single-node LocalLog's tests checked) -------

R = TypeVar("R")
SOLO = ("a",)
#: How long a call may take before it must answer Unavailable, in the tests below.
SHORT_S = 0.3
T = "2026-01-01T00:00:00.000Z"
#: Quicker elections than CONFIG, so that a group settles sooner (see ``settled_leader``).
FAST = RaftConfig(election_timeout_s=0.2, heartbeat_interval_s=0.04)


class Recorder:
    """The driver's commit observer: (entries, seconds) of every persisted batch."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, float]] = []

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batches.append((size, seconds))


class SlowDisk(Database):
    """A database whose writes take ``delay_s`` longer (a slow fsync), and which says when
    one is under way."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.delay_s = 0.0
        self.writing = trio.Event()

    async def write(self, fn: Callable[[Connection], R]) -> R:
        self.writing.set()
        try:
            await trio.sleep(self.delay_s)
            return await super().write(fn)
        finally:
            self.writing = trio.Event()


class Node:
    """One node of a test group: its log, driver and disks, and scopes to stop it (all of
    it, or only its Raft driver while its RPC server keeps answering)."""

    def __init__(self, node_id: str) -> None:
        self.id = node_id
        self.raft_db: SlowDisk | None = None
        self.recorder = Recorder()
        #: Sizes of the batches handed to the state machine (one meta transaction each).
        self.applies: list[int] = []
        self.state = MetaState()
        self.scope = trio.CancelScope()
        self.driver_scope = trio.CancelScope()
        self._log: ReplicatedLog | None = None
        self._driver: RaftDriver | None = None

    @property
    def log(self) -> ReplicatedLog:
        assert self._log is not None
        return self._log

    @property
    def driver(self) -> RaftDriver:
        assert self._driver is not None
        return self._driver

    @property
    def is_leader(self) -> bool:
        return self._driver is not None and self._driver.raft is not None \
            and self._driver.raft.is_leader

    @property
    def term(self) -> int:
        raft = self.driver.raft
        return raft.term if raft is not None else 0

    def batches(self) -> int:
        return self.driver.counters["batches"]

    async def run(self, net: MemoryNetwork, tmp: Path, voters: tuple[str, ...],
                  timeout_s: float, *, run_driver: bool = True,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.scope:
            transport = net.transport(ADDRESS[self.id])
            meta_db = Database(tmp / f"{self.id}-meta.sqlite3")
            raft_db = self.raft_db = SlowDisk(tmp / f"{self.id}-raft.sqlite3")
            try:
                meta_db.write_sync(self.state.load)
                peers = PeerNet(self.id, transport, KEY, ADDRESS.get)
                log = self._log = ReplicatedLog(self.state, meta_db, peers,
                                                timeout_s=timeout_s)

                async def apply(entries: list[Entry]) -> list[object]:
                    self.applies.append(len(entries))
                    return await log.apply(entries)

                driver = self._driver = RaftDriver(
                    self.id, FAST, raft_db, apply, peers, random.Random(self.id),
                    applied=self.state.applied_index, bootstrap=Membership(frozenset(voters)),
                    observer=self.recorder)
                log.attach(driver)

                async def drive(task_status: trio.TaskStatus[None]) -> None:
                    with self.driver_scope:
                        await driver.run(task_status=task_status)

                async with trio.open_nursery() as inner:
                    await inner.start(peers.run)
                    await inner.start(StreamRouter(transport).run, peers.serve)
                    if run_driver:
                        await inner.start(drive)
                    task_status.started()
            finally:
                meta_db.close()
                raft_db.close()


async def until(predicate: Callable[[], bool], *, within_s: float = 5.0) -> None:
    with trio.fail_after(within_s):
        while not predicate():
            await trio.sleep(0.005)


async def settled_leader(nodes: dict[str, Node]) -> Node:
    """A leader that kept its term for two election timeouts while serving reads.

    The reads are traffic: a fresh leader's first heartbeat can come late (see
    ``test_a_new_leader_heartbeats_on_time_and_keeps_leading_an_idle_group``), and without
    traffic it then steps down; once settled, heartbeats keep it leading."""
    settle_s = 2 * FAST.election_timeout_s + 0.02
    with trio.fail_after(10.0):
        while True:
            await until(lambda: any(n.is_leader for n in nodes.values()))
            leader = next(n for n in nodes.values() if n.is_leader)
            term, since = leader.term, trio.current_time()
            while leader.is_leader and leader.term == term \
                    and trio.current_time() - since < settle_s:
                with trio.move_on_after(0.1):
                    try:
                        await leader.driver.read_index()
                    except NotLeader:
                        pass
                await trio.sleep(0.02)
            if leader.is_leader and leader.term == term:
                return leader


@asynccontextmanager
async def group(tmp: Path, voters: tuple[str, ...], *, timeout_s: float = 2.0,
                settle: bool = True) -> AsyncIterator[dict[str, Node]]:
    """A running group of ``voters``; with ``settle``, once it has a settled leader whose
    log is applied everywhere."""
    net = MemoryNetwork(random.Random(7), delay_s=(0.0005, 0.002))
    nodes = {n: Node(n) for n in voters}
    async with net.running(), trio.open_nursery() as nursery:
        for node in nodes.values():
            await nursery.start(node.run, net, tmp, voters, timeout_s)
        if settle:
            if len(voters) > 1:
                leader = await settled_leader(nodes)
            else:
                await until(lambda: any(n.is_leader for n in nodes.values()))
                leader = next(n for n in nodes.values() if n.is_leader)
            index = await leader.driver.read_index()
            for node in nodes.values():
                with trio.fail_after(2.0):
                    await node.driver.wait_applied(index)
        yield nodes
        nursery.cancel_scope.cancel()


def roles(nodes: dict[str, Node]) -> tuple[Node, Node]:
    """(the leader, a follower)."""
    leader = next(n for n in nodes.values() if n.is_leader)
    return leader, next(n for n in nodes.values() if n is not leader)


def user(n: int) -> c.CreateUser:
    return c.CreateUser(username=f"user{n}", role="user", password_hash=f"h{n}", now=T)


def container(name: str) -> c.CreateContainer:
    return c.CreateContainer(container=name, owner="o", owner_uid=1, now=T)


async def submit_concurrently(log: ReplicatedLog, commands: list[c.Command]
                              ) -> dict[int, object]:
    """Submit every command at once: index -> its result, or the exception it raised."""
    outcomes: dict[int, object] = {}

    async def one(i: int) -> None:
        try:
            outcomes[i] = await log.submit(commands[i])
        except Exception as exc:
            outcomes[i] = exc

    async with trio.open_nursery() as nursery:
        for i in range(len(commands)):
            nursery.start_soon(one, i)
    return outcomes


def check_users(outcomes: dict[int, object], count: int, first: int = 0) -> None:
    """Submit i created user ``first + i``; every user got its own uid."""
    assert set(outcomes) == set(range(count))
    for i, result in outcomes.items():
        assert isinstance(result, User) and result.username == f"user{first + i}", (i, result)
    assert len({r.uid for r in outcomes.values() if isinstance(r, User)}) == count


def check_one_winner(outcomes: list[object]) -> None:
    """Racing creates of one container: one Container, the rest ContainerExists."""
    assert sum(isinstance(o, Container) for o in outcomes) == 1, outcomes
    assert sum(isinstance(o, ContainerExists) for o in outcomes) == len(outcomes) - 1


async def expect_unavailable(call: Callable[[], Awaitable[object]], timeout_s: float) -> float:
    """``call`` must raise Unavailable within its timeout (plus slack), never hang; the
    seconds it took."""
    started = trio.current_time()
    with trio.fail_after(timeout_s + 0.5):
        with pytest.raises(Unavailable):
            await call()
    return trio.current_time() - started


# -- a group of one voter -------------------------------------------------------------------


async def test_single_voter_concurrent_submits_are_batched(tmp_path: Path) -> None:
    """Concurrent submits share batches: far fewer fsyncs (and meta transactions) than
    submits, and the observer hears of every persisted batch."""
    count = 60
    async with group(tmp_path, SOLO) as nodes:
        a = nodes["a"]
        assert a.log.status().leader == "a"
        batches_before, persisted_before = a.batches(), len(a.recorder.batches)
        applies_before = len(a.applies)
        outcomes = await submit_concurrently(a.log, [user(n) for n in range(count)])
        check_users(outcomes, count)
        batches = a.batches() - batches_before
        sizes = [size for size, _ in a.recorder.batches[persisted_before:]]
        assert len(sizes) == batches
        assert sum(sizes) == count
        assert max(sizes) > 1, sizes
        assert batches <= count // 3, sizes
        assert all(seconds >= 0 for _, seconds in a.recorder.batches)
        applies = a.applies[applies_before:]
        assert sum(applies) == count and len(applies) <= count // 3, applies
        status = a.log.status()
        assert status.applied_index == status.commit_index == a.state.applied_index
        assert set(a.state.view.users) == {f"user{n}" for n in range(count)}


async def arrive_during_a_persist(writer: Node, submitter: Node) -> list[int]:
    """One submit on ``submitter``; while ``writer`` persists it (a slow disk), ten more.
    The sizes of the batches ``writer`` persisted meanwhile."""
    disk = writer.raft_db
    assert disk is not None
    persisted_before = len(writer.recorder.batches)
    disk.delay_s = 0.05
    async with trio.open_nursery() as nursery:
        nursery.start_soon(submitter.log.submit, user(0))
        with trio.fail_after(1.0):
            await disk.writing.wait()
        for n in range(1, 11):
            nursery.start_soon(submitter.log.submit, user(n))
    disk.delay_s = 0.0
    return [size for size, _ in writer.recorder.batches[persisted_before:]]


async def test_single_voter_submits_arriving_during_a_persist_share_the_next(tmp_path: Path
                                                                           ) -> None:
    async with group(tmp_path, SOLO) as nodes:
        sizes = await arrive_during_a_persist(nodes["a"], nodes["a"])
        assert [size for size in sizes if size] == [1, 10], sizes
        assert set(nodes["a"].state.view.users) == {f"user{n}" for n in range(11)}


async def test_single_voter_domain_error_raises_from_submit(tmp_path: Path) -> None:
    async with group(tmp_path, SOLO) as nodes:
        log, state = nodes["a"].log, nodes["a"].state
        start_index = log.status().commit_index
        created = await log.submit(container("k"))
        assert isinstance(created, Container) and created.name == "k"
        with pytest.raises(ContainerExists):
            await log.submit(container("k"))
        with pytest.raises(UserNotFound):
            await log.submit(c.DeleteUser(username="nobody"))
        # A failed command still took its place in the log, and the log keeps working.
        assert await log.submit(c.DeleteContainer(container="k")) is None
        assert state.applied_index == log.status().commit_index == start_index + 4
        assert "k" not in state.view.containers


async def test_single_voter_errors_in_a_batch_reach_only_their_submitter(tmp_path: Path
                                                                         ) -> None:
    async with group(tmp_path, SOLO) as nodes:
        a = nodes["a"]
        batches_before = a.batches()
        # Even numbers all create the same container: exactly one wins.
        commands: list[c.Command] = [container("same") if n % 2 == 0 else user(n)
                                     for n in range(20)]
        outcomes = await submit_concurrently(a.log, commands)
        assert a.batches() - batches_before < 10  # they did share batches
    check_one_winner([outcomes[n] for n in range(0, 20, 2)])
    assert all(isinstance(outcomes[n], User) for n in range(1, 20, 2))


async def test_single_voter_read_barrier_returns(tmp_path: Path) -> None:
    async with group(tmp_path, SOLO) as nodes:
        a = nodes["a"]
        with trio.fail_after(1.0):
            await a.log.read_barrier()
        await a.log.submit(container("k"))
        with trio.fail_after(1.0):
            await a.log.read_barrier()
        assert a.state.applied_index == a.log.status().commit_index
        assert "k" in a.state.view.containers


async def test_calls_before_a_driver_is_attached_answer_unavailable(tmp_path: Path) -> None:
    net = MemoryNetwork(random.Random(3))
    async with net.running():
        db = Database(tmp_path / "meta.sqlite3")
        try:
            state = MetaState()
            db.write_sync(state.load)
            log = ReplicatedLog(state, db, PeerNet("a", net.transport(ADDRESS["a"]), KEY,
                                                   ADDRESS.get), timeout_s=SHORT_S)
            # They wait for a driver (a node starting up gets one soon), never past timeout_s.
            assert await expect_unavailable(lambda: log.submit(user(1)), SHORT_S) \
                <= SHORT_S + 0.2
            assert await expect_unavailable(log.read_barrier, SHORT_S) <= SHORT_S + 0.2
            assert log.status().leader is None
        finally:
            db.close()


async def test_calls_to_a_driver_that_never_ran_answer_unavailable(tmp_path: Path) -> None:
    net = MemoryNetwork(random.Random(3))
    a = Node("a")
    async with net.running(), trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: a.run(net, tmp_path, SOLO, SHORT_S,
                                                      run_driver=False,
                                                      task_status=task_status))
        await expect_unavailable(lambda: a.log.submit(user(1)), SHORT_S)
        await expect_unavailable(a.log.read_barrier, SHORT_S)
        nursery.cancel_scope.cancel()


async def test_single_voter_calls_after_the_driver_stopped_answer_unavailable(
        tmp_path: Path) -> None:
    async with group(tmp_path, SOLO, timeout_s=SHORT_S) as nodes:
        a = nodes["a"]
        await a.log.submit(user(1))
        a.driver_scope.cancel()
        await trio.sleep(0.02)
        await expect_unavailable(lambda: a.log.submit(user(2)), SHORT_S)
        await expect_unavailable(a.log.read_barrier, SHORT_S)
        assert "user2" not in a.state.view.users


async def test_single_voter_submits_queued_when_the_driver_stops_answer_unavailable(
        tmp_path: Path) -> None:
    async with group(tmp_path, SOLO, timeout_s=SHORT_S) as nodes:
        a = nodes["a"]
        batches_before = a.batches()
        outcomes: list[object] = []
        started = trio.current_time()

        async def submit(n: int) -> None:
            try:
                outcomes.append(await a.log.submit(user(n)))
            except Unavailable as exc:
                outcomes.append(exc)

        with trio.fail_after(SHORT_S + 2.0):
            async with trio.open_nursery() as nursery:
                for n in range(20):
                    nursery.start_soon(submit, n)
                # Stop the driver once the first batch is on its way to disk: what it did
                # not take yet is never processed, and must not wait forever.
                await until(lambda: a.batches() > batches_before or bool(outcomes),
                            within_s=1.0)
                for n in range(20, 25):
                    nursery.start_soon(submit, n)
                a.driver_scope.cancel()
        assert trio.current_time() - started < SHORT_S + 0.5
        assert len(outcomes) == 25
        assert all(isinstance(o, (User, Unavailable)) for o in outcomes), outcomes
        assert sum(isinstance(o, Unavailable) for o in outcomes) >= 5, outcomes


# -- a follower of a three-voter group forwards to the leader ----------------------------------


async def test_follower_concurrent_submits_are_batched(tmp_path: Path) -> None:
    """Writes forwarded by a follower are group-committed by the leader (and persisted and
    applied in batches on every node); forwarded writes that arrive while the leader
    persists a batch all go into its next one."""
    count = 40
    async with group(tmp_path, IDS) as nodes:
        leader, follower = roles(nodes)
        term = leader.term
        sizes = await arrive_during_a_persist(leader, follower)
        assert [size for size in sizes if size] == [1, 10], sizes
        await follower.log.read_barrier()
        assert set(follower.state.view.users) == {f"user{n}" for n in range(11)}
        before = {n.id: (n.batches(), len(n.recorder.batches), len(n.applies))
                  for n in nodes.values()}
        outcomes = await submit_concurrently(follower.log,
                                             [user(n) for n in range(100, 100 + count)])
        check_users(outcomes, count, first=100)
        assert leader.is_leader and leader.term == term  # one leader did it all
        for node in nodes.values():
            # Once the barrier returns, the node's own state has every write.
            with trio.fail_after(1.0):
                await node.log.read_barrier()
        for node in nodes.values():
            batches, persisted, applies = before[node.id]
            sizes = [size for size, _ in node.recorder.batches[persisted:]]
            assert sum(sizes) == count, (node.id, sizes)
            assert max(sizes) > 1, (node.id, sizes)
            assert node.batches() - batches <= count // 2, (node.id, sizes)
            assert sum(node.applies[applies:]) == count
            assert len(node.applies[applies:]) <= count // 2, (node.id, node.applies[applies:])
            assert set(node.state.view.users) == {f"user{n}" for n in range(11)} | {
                f"user{n}" for n in range(100, 100 + count)}


async def test_follower_domain_errors_and_linearizable_reads(tmp_path: Path) -> None:
    async with group(tmp_path, IDS) as nodes:
        leader, follower = roles(nodes)
        created = await follower.log.submit(container("k"))
        assert isinstance(created, Container) and created.name == "k"
        with pytest.raises(ContainerExists):
            await follower.log.submit(container("k"))
        with pytest.raises(UserNotFound):
            await follower.log.submit(c.DeleteUser(username="nobody"))
        assert await follower.log.submit(c.DeleteContainer(container="k")) is None
        # Writers on the follower and on the leader race for one name, in shared batches:
        # exactly one create wins, and only the losers see ContainerExists.
        commands: list[c.Command] = [container("same") if n % 2 == 0 else user(n)
                                     for n in range(20)]
        results: dict[str, dict[int, object]] = {}

        races: list[c.Command] = [container("same") for _ in range(5)]

        async def run(node: Node, commands: list[c.Command]) -> None:
            results[node.id] = await submit_concurrently(node.log, commands)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, follower, commands)
            nursery.start_soon(run, leader, races)
        on_follower = results[follower.id]
        assert all(isinstance(on_follower[n], User) for n in range(1, 20, 2))
        check_one_winner([on_follower[n] for n in range(0, 20, 2)]
                         + list(results[leader.id].values()))
        # Linearizable reads on the follower: after its barrier, its own state has what
        # the leader committed before it.
        for i in range(3):
            await leader.log.submit(container(f"c{i}"))
            with trio.fail_after(1.0):
                await follower.log.read_barrier()
            assert f"c{i}" in follower.state.view.containers
            assert follower.state.applied_index >= leader.state.applied_index
        assert "same" in follower.state.view.containers


async def test_follower_submit_with_its_driver_stopped_answers_unavailable(tmp_path: Path
                                                                          ) -> None:
    async with group(tmp_path, IDS, timeout_s=SHORT_S) as nodes:
        leader, follower = roles(nodes)
        await follower.log.submit(user(1))
        follower.driver_scope.cancel()
        await trio.sleep(0.02)
        # The leader still commits the write, but this node never applies it: the caller
        # gets Unavailable (the outcome is unknown to it), in time.
        await expect_unavailable(lambda: follower.log.submit(user(2)), SHORT_S)
        assert "user2" not in follower.state.view.users


async def test_follower_read_barrier_with_its_driver_stopped_answers_unavailable(
        tmp_path: Path) -> None:
    async with group(tmp_path, IDS, timeout_s=SHORT_S) as nodes:
        leader, follower = roles(nodes)
        follower.driver_scope.cancel()
        await trio.sleep(0.02)
        # The rest of the group commits a write this node will not apply.
        await leader.log.submit(user(1))
        await expect_unavailable(follower.log.read_barrier, SHORT_S)


async def test_a_new_leader_heartbeats_on_time_and_keeps_leading_an_idle_group(
        tmp_path: Path) -> None:
    async with group(tmp_path, IDS, settle=False) as nodes:
        await until(lambda: any(n.is_leader for n in nodes.values()))
        leader = next(n for n in nodes.values() if n.is_leader)
        raft = leader.driver.raft
        assert raft is not None
        term, late = leader.term, 0.0
        # For two election timeouts of silence (the longest a candidate's election timer
        # runs): deadlines (heartbeats) are never overdue by more than a heartbeat
        # interval, and the leader stays.
        started = trio.current_time()
        while trio.current_time() - started < 2 * FAST.election_timeout_s:
            if raft.is_leader:
                late = max(late, trio.current_time() - raft.next_deadline())
            await trio.sleep(0.005)
        assert late < FAST.heartbeat_interval_s, f"a deadline went unserved for {late:.3f} s"
        assert leader.is_leader and leader.term == term


# -- a committed entry this node cannot read (a newer node's command) --------------------------


async def test_an_entry_this_node_cannot_decode_stops_applying_instead_of_skipping_it(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Skipping it would leave this node's metadata apart from every other node's for good;
    it stops applying and says so, and nothing after the entry is applied either."""
    db = Database(tmp_path / "meta.sqlite3")
    try:
        state = MetaState()
        db.write_sync(state.load)
        peers = PeerNet("a", MemoryNetwork(random.Random(1)).transport(ADDRESS["a"]), KEY,
                        ADDRESS.get)
        log = ReplicatedLog(state, db, peers)
        newer = b'{"v":1,"t":"put_blob","container":"c","blob":"b","feature_of_v9":1}'
        entries = [Entry(1, 1, data=c.encode(c.Bootstrap("cid", "00" * 32, "h", NOW))),
                   Entry(2, 1, data=newer),
                   Entry(3, 1, data=c.encode(c.DeleteUser("nobody")))]
        with trio.move_on_after(60) as waited:
            await log.apply(entries)
        assert waited.cancelled_caught, "apply returned past an entry it could not decode"
        assert log.stalled and log.status().stalled
        assert state.applied_index == 1  # what came before it is applied
    finally:
        db.close()
