"""The whole gossip stack in one process: ``Gossip`` drivers, the wire format and a
``MemoryNetwork``, on trio's ``MockClock``, from one seed.

``node.testing.swim_sim`` simulates the SWIM core alone; this harness runs the
real drivers (their tasks, timers, HMAC-sealed datagrams and push-pull streams)
over the in-memory network, so what it measures is what a deployment does::

    async def scenario(cluster: GossipCluster) -> float:
        await cluster.start_all(10)
        return await cluster.wait_until(cluster.converged, timeout_s=60.0)

    elapsed_s = run_cluster(seed, scenario, config=LAN, drop_rate=0.05)

Faults: random loss, duplication and delay (hence reordering) of datagrams,
partitions, crashes (``crash``: the node's tasks are cancelled and its endpoint
detached), restarts at the same address (``restart``: a new ``Gossip``, at
incarnation 0, with a new boot) and graceful leaves (``leave``).

Determinism. Every random draw comes from the seed: the network's generator,
each node's generator (derived from the seed, the node's index and how often it
was started, so a restart has a new boot) and the cluster key. Trio's scheduler
draws from a module-level ``random.Random`` of its own; ``run_cluster`` seeds
it and turns on trio's deterministic batch order (the switch pytest-trio and
Hypothesis use) for the run, then puts both back. Time is the mock clock, and
``wall_ms`` (the datagram timestamps) is derived from it, so every node's clock
agrees. The same seed and the same scenario therefore give the same run, event
for event, in this process or another (nothing depends on hash seeds or object
ids): ``fingerprint()`` digests a run to check.

What this module does *not* do: decide what a scenario asserts, or pick its
seed; the tests do, and print the seed with a command that replays it.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TypeVar

import trio
import trio.testing

from node.gossip.config import LAN, GossipConfig
from node.gossip.driver import Gossip
from node.gossip.members import Member, MembershipView, MemberState
from node.gossip.messages import Alive, MemberMeta
from node.net.memory import MemoryNetwork, MemoryTransport

T = TypeVar("T")

#: The datagram timestamps' epoch: mock time 0 is this wall-clock instant (ms).
EPOCH_MS = 1_700_000_000_000
#: One-way datagram delay on the simulated LAN: well under the probe timeout.
LAN_DELAY_S = (0.0005, 0.002)
GOSSIP_PORT = 7946


@dataclass(frozen=True, slots=True)
class Transition:
    """``observer`` saw ``member`` enter ``state`` at mock time ``at_s``."""

    at_s: float
    observer: str
    member: str
    state: MemberState
    incarnation: int


@dataclass
class SimNode:
    """One node's current life: its driver, endpoint and the scope that runs it."""

    index: int
    generation: int
    gossip: Gossip
    transport: MemoryTransport
    scope: trio.CancelScope
    running: bool = True
    #: False for a node that was never meant to be a member (a wrong key, say).
    member: bool = True


class GossipCluster:
    """N ``Gossip`` drivers on one ``MemoryNetwork``; made by ``open_cluster``.

    Nodes are named by index: node ``i`` is ``n{i}`` at ``address(i)``. The
    first started node has no seeds; every other joins through node 0 unless
    told otherwise.

    Args:
      seed: the one source of randomness (see the module docstring).
      config: the gossip preset every node runs.
      track: record every member state change each node sees in ``transitions``
        (costs a pass over the view per change: leave off for big clusters).
      drop_rate, duplicate_rate, delay_s: the network's faults.
    """

    def __init__(self, seed: int, config: GossipConfig = LAN, *, track: bool = False,
                 drop_rate: float = 0.0, duplicate_rate: float = 0.0,
                 delay_s: tuple[float, float] = LAN_DELAY_S) -> None:
        self.seed = seed
        self.config = config
        self.key = derive_key(seed, "cluster")
        self.network = MemoryNetwork(random.Random(f"{seed}/network"), drop_rate=drop_rate,
                                     duplicate_rate=duplicate_rate, delay_s=delay_s)
        self.nodes: dict[int, SimNode] = {}
        self.track = track
        self.transitions: list[Transition] = []
        #: What each node's view last said of each member (for ``track``).
        self._seen: dict[int, dict[str, Member]] = {}
        self._starts: Counter[int] = Counter()
        self._trace = hashlib.sha256()
        self._nursery: trio.Nursery | None = None

    # -- naming ----------------------------------------------------------------------------

    @staticmethod
    def address(index: int) -> str:
        return f"10.0.{index // 250}.{index % 250 + 1}:{GOSSIP_PORT}"

    @staticmethod
    def node_id(index: int) -> str:
        return f"n{index}"

    def meta(self, index: int) -> MemberMeta:
        address = self.address(index)
        return MemberMeta(self.node_id(index), address,
                          address.replace(f":{GOSSIP_PORT}", ":8080"))

    def rng(self, purpose: str) -> random.Random:
        """A generator of its own for ``purpose`` (which victim to crash, say), from the seed."""
        return random.Random(f"{self.seed}/{purpose}")

    # -- starting and stopping -------------------------------------------------------------

    async def start(self, index: int, *, seeds: Iterable[int] | None = None,
                    key: bytes | None = None, preload: Iterable[int] = (),
                    member: bool = True) -> SimNode:
        """Start node ``index`` (again, after ``crash`` or ``leave``) at incarnation 0.

        Args:
          seeds: indices to join through; default node 0 (none for node 0 itself).
          key: the cluster key; default the cluster's.
          preload: indices the node believes are alive before it ever hears from them
            (as if from an earlier life), so it probes and gossips without a join.
          member: whether ``converged`` and ``views`` count it (False for intruders).
        """
        assert self._nursery is not None, "use open_cluster() or run_cluster()"
        old = self.nodes.get(index)
        if old is not None and old.running:
            raise ValueError(f"node {index} is running")
        if seeds is None:
            seeds = () if index == 0 else (0,)
        generation = self._starts[index]
        self._starts[index] += 1
        transport = self.network.transport(self.address(index))
        rng = random.Random(f"{self.seed}/node/{index}/{generation}")
        gossip = Gossip(self.meta(index), self.config, transport, key or self.key, rng=rng,
                        wall_ms=wall_ms, seeds=tuple(self.address(s) for s in seeds),
                        on_view=lambda view: self._observe(index, view))
        now = trio.current_time()
        for other in preload:
            gossip.swim.apply(now, Alive(0, self.meta(other)))
        node = SimNode(index, generation, gossip, transport, trio.CancelScope(), member=member)
        self.nodes[index] = node
        self._seen[index] = {}
        await self._nursery.start(self._run, node)
        return node

    async def start_all(self, n: int) -> None:
        """Start nodes 0..n-1 at the same instant, each joining through node 0."""
        for index in range(n):
            await self.start(index)

    def crash(self, index: int) -> None:
        """Stop node ``index`` dead: its tasks are cancelled, its endpoint and streams cut."""
        node = self._running(index)
        node.running = False
        node.scope.cancel()
        self.network.detach(node.transport.address)

    async def restart(self, index: int, *, seeds: Iterable[int] | None = None) -> SimNode:
        """Crash node ``index`` if it runs, then start a new life at the same address."""
        if self.nodes[index].running:
            self.crash(index)
        return await self.start(index, seeds=seeds)

    async def leave(self, index: int, timeout_s: float) -> None:
        """Leave gracefully (``Gossip.leave``), then stop and close the endpoint."""
        node = self._running(index)
        await node.gossip.leave(timeout_s)
        node.running = False
        node.scope.cancel()
        await node.transport.aclose()

    async def _run(self, node: SimNode, *,
                   task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with node.scope:
            await node.gossip.run(task_status=task_status)

    def _running(self, index: int) -> SimNode:
        node = self.nodes.get(index)
        if node is None or not node.running:
            raise ValueError(f"node {index} is not running")
        return node

    # -- faults ----------------------------------------------------------------------------

    def partition(self, *groups: Iterable[int]) -> None:
        self.network.partition(*({self.address(i) for i in g} for g in groups))

    def heal(self) -> None:
        self.network.heal()

    # -- observing -------------------------------------------------------------------------

    def running(self, *, members_only: bool = True) -> list[int]:
        return [i for i, node in self.nodes.items()
                if node.running and (node.member or not members_only)]

    def views(self) -> dict[str, dict[str, Member]]:
        """Each running member's view: observer id -> member id -> member."""
        return {self.node_id(i): {m.node_id: m for m in self.nodes[i].gossip.view.members}
                for i in self.running()}

    def states(self, member: int) -> dict[str, MemberState | None]:
        """What each running member (but ``member`` itself) thinks of ``member``."""
        target = self.node_id(member)
        states: dict[str, MemberState | None] = {}
        for i in self.running():
            if i != member:
                seen = self.nodes[i].gossip.view.get(target)
                states[self.node_id(i)] = seen.state if seen is not None else None
        return states

    def converged(self, expected_alive: Iterable[int] | None = None) -> bool:
        """One view: every running member knows the same members, in the same states at
        the same incarnations, and exactly ``expected_alive`` (default: the running
        members) are alive in it."""
        running = self.running()
        expected = {self.node_id(i) for i in (running if expected_alive is None
                                              else expected_alive)}
        views = {tuple((m.node_id, m.state, m.incarnation)
                       for m in self.nodes[i].gossip.view.members) for i in running}
        if len(views) != 1:
            return False
        (view,) = views
        return {node_id for node_id, state, _ in view if state is MemberState.ALIVE} == expected

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float,
                         poll_s: float = 0.25) -> float | None:
        """Mock seconds until ``predicate()`` held (checked every ``poll_s``), or None."""
        started = trio.current_time()
        while True:
            if predicate():
                return trio.current_time() - started
            if trio.current_time() - started >= timeout_s:
                return None
            await trio.sleep(poll_s)

    def stats(self, indices: Iterable[int] | None = None) -> Counter[str]:
        """Driver, core and wire counters summed over ``indices`` (default: every node's
        current life), with the transports' datagram counters as ``datagrams_*``."""
        total: Counter[str] = Counter()
        for i in self.nodes if indices is None else indices:
            node = self.nodes[i]
            total.update(node.gossip.stats())
            total["datagrams_sent"] += node.transport.packets_sent
            total["datagram_bytes_sent"] += node.transport.bytes_sent
            total["datagrams_received"] += node.transport.packets_received
        return total

    def fingerprint(self) -> str:
        """A digest of the run so far: every view change (when, where, which version),
        every node's final view and counters, the network's counters and the time."""
        digest = self._trace.copy()
        for i, node in self.nodes.items():
            view = node.gossip.view
            digest.update(repr((i, node.generation, node.running, sorted(node.gossip.stats()
                                                                          .items()))).encode())
            digest.update(repr([(m.node_id, m.state.value, m.incarnation)
                                for m in view.members]).encode())
        net = self.network.stats
        digest.update(repr((net.packets_sent, net.packets_delivered, net.packets_duplicated,
                            sorted(net.dropped.items()), net.streams_opened,
                            trio.current_time())).encode())
        return digest.hexdigest()

    def _observe(self, index: int, view: MembershipView) -> None:
        now = trio.current_time()
        self._trace.update(f"{now!r} {index} {view.version} {len(view.members)};".encode())
        if not self.track:
            return
        seen = self._seen[index]
        observer = self.node_id(index)
        for m in view.members:
            last = seen.get(m.node_id)
            if last is m:  # the core hands out a new snapshot only when a member changed
                continue
            seen[m.node_id] = m
            if last is None or (last.state, last.incarnation) != (m.state, m.incarnation):
                self.transitions.append(Transition(now, observer, m.node_id, m.state,
                                                   m.incarnation))


def wall_ms() -> int:
    """Every node's wall clock: the mock clock, from ``EPOCH_MS``."""
    return EPOCH_MS + int(trio.current_time() * 1000)


def derive_key(seed: int, purpose: str) -> bytes:
    return hashlib.sha256(f"{seed}/key/{purpose}".encode()).digest()


@asynccontextmanager
async def open_cluster(seed: int, config: GossipConfig = LAN, *, track: bool = False,
                       drop_rate: float = 0.0, duplicate_rate: float = 0.0,
                       delay_s: tuple[float, float] = LAN_DELAY_S
                       ) -> AsyncIterator[GossipCluster]:
    """A cluster with no nodes yet, its network delivering; every node stops on exit."""
    cluster = GossipCluster(seed, config, track=track, drop_rate=drop_rate,
                            duplicate_rate=duplicate_rate, delay_s=delay_s)
    async with trio.open_nursery() as nursery:
        await nursery.start(cluster.network.run)
        cluster._nursery = nursery
        try:
            yield cluster
        finally:
            nursery.cancel_scope.cancel()


@contextmanager
def deterministic_trio(seed: int) -> Iterator[None]:
    """Seed trio's scheduler and make its batch order deterministic; restore both after.

    Trio shuffles each batch of runnable tasks with ``trio._core._run._r`` and
    breaks ties between equal deadlines by object id; with the switch on, each
    batch is first sorted by task creation order, which removes the id-dependence.
    """
    import trio._core._run as trio_run

    state = trio_run._r.getstate()
    allowed = trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    trio_run._r.seed(f"{seed}/trio")
    trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    try:
        yield
    finally:
        trio_run._ALLOW_DETERMINISTIC_SCHEDULING = allowed  # type: ignore[misc]
        trio_run._r.setstate(state)


def run_cluster(seed: int, scenario: Callable[[GossipCluster], Awaitable[T]], *,
                config: GossipConfig = LAN, track: bool = False, drop_rate: float = 0.0,
                duplicate_rate: float = 0.0,
                delay_s: tuple[float, float] = LAN_DELAY_S) -> T:
    """Run ``scenario`` on a fresh cluster under ``MockClock(autojump_threshold=0)``.

    Blocking (it calls ``trio.run``); returns what the scenario returns.
    """
    async def main() -> T:
        async with open_cluster(seed, config, track=track, drop_rate=drop_rate,
                                duplicate_rate=duplicate_rate, delay_s=delay_s) as cluster:
            return await scenario(cluster)

    with deterministic_trio(seed):
        return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
