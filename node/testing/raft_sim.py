"""A discrete-event simulator for the Raft core: many ``Raft`` objects, one seeded world.

Like ``swim_sim``: no trio, no sockets; a heap orders deliveries, timers and
scheduled actions, and every random choice comes from one seed, so a run
replays exactly. Each node has a ``Disk`` that survives crashes (hard state,
log, snapshot, and the applied state machine, which like the real sqlite state
is durable and knows its applied index); a crash drops everything else,
including messages the node had not yet sent because its disk write had not
finished.

The state machine is a key-value map. Commands are ``b"key=value"``; the
simulator records, per node, every (index, term, data) it applied, and the disk
keeps a running digest of everything applied, which a snapshot carries along,
so two state machines at the same index can be compared in one step.

Faults: message loss, duplication, latency (a wide range reorders messages)
with occasional long spikes (a message arriving after several heartbeats),
partitions into groups, one-way blocks between two nodes, crashes and restarts,
pauses (``pause``: a SIGSTOPped process, which handles nothing until it resumes
and then everything that waited, with its clock having run on), and clocks that
run at different rates (``clock_rates``: each node's core sees its own time,
``local(node, t)``), which read leases must survive.

Hooks, for checkers and client layers (each a list of callables, called in
order): ``on_event(node)`` after every input a node processed, ``on_persist(node,
ready)`` once a Ready is durable, ``on_apply(node, entry)`` per applied entry,
``on_install(node, meta)`` when a snapshot from the leader replaced the state
machine, ``on_read(node, read_state)`` when a ReadIndex answer comes out,
``on_crash(node)``, ``on_wipe(node)`` (its disk was replaced by an empty one) and
``on_restart(node)``. ``schedule(at_s, action)`` runs an action at a simulated time.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from node.raft.core import HardState, NotLeader, Raft, RaftConfig, Ready, ReadState, Role
from node.raft.messages import (Entry, EntryKind, Membership, Message, SnapshotMeta,
                                SnapshotRequest, VoteRequest)

#: The digest of the empty state machine.
GENESIS = "0" * 16


def chain(digest: str, entry: Entry) -> str:
    """The state machine's digest after applying ``entry`` on top of ``digest``."""
    body = f"{digest}|{entry.index}|{entry.term}|{int(entry.kind)}|".encode() + entry.data
    return hashlib.blake2b(body, digest_size=8).hexdigest()


def apply_command(kv: dict[str, str], entry: Entry) -> None:
    """The state machine's transition: ``b"key=value"`` sets key; other kinds change nothing."""
    if entry.kind is EntryKind.COMMAND:
        key, _, value = entry.data.decode().partition("=")
        kv[key] = value


@dataclass(frozen=True)
class SnapshotData:
    """What a snapshot carries: the state machine after applying ``index``."""

    index: int
    kv: dict[str, str]
    digest: str


@dataclass
class Disk:
    hard_state: HardState = HardState(0, None)
    entries: dict[int, Entry] = field(default_factory=dict)
    snapshot: SnapshotMeta | None = None
    snapshot_data: SnapshotData | None = None
    #: The durable state machine: applied index, the map and the digest of what was applied.
    applied: int = 0
    kv: dict[str, str] = field(default_factory=dict)
    digest: str = GENESIS

    def log(self) -> list[Entry]:
        start = self.snapshot.index + 1 if self.snapshot else 1
        out = []
        index = start
        while index in self.entries:
            out.append(self.entries[index])
            index += 1
        return out

    def save(self, ready: Ready) -> None:
        """The Raft half of persisting ``ready``, as ``node.raft.storage.save`` does in
        sqlite: a snapshot record cuts the log, a truncation drops the suffix, then the
        entries and the hard state are written. (The state machine is the caller's.)"""
        if ready.snapshot is not None:
            self.snapshot = ready.snapshot.meta
            for index in [i for i in self.entries if i <= self.snapshot.index]:
                del self.entries[index]
        if ready.truncate_from is not None:
            for index in [i for i in self.entries if i >= ready.truncate_from]:
                del self.entries[index]
        for entry in ready.entries:
            self.entries[entry.index] = entry
        if ready.hard_state is not None:
            self.hard_state = ready.hard_state


@dataclass
class SimNode:
    id: str
    raft: Raft
    disk: Disk
    up: bool = True


@dataclass
class SimStats:
    events: int = 0
    messages: Counter[str] = field(default_factory=Counter)
    dropped: int = 0
    duplicated: int = 0
    crashes: int = 0
    wipes: int = 0
    restarts: int = 0
    snapshots_taken: int = 0
    snapshots_installed: int = 0
    #: Appends that cut a node's log; those that came while a disk write was in flight.
    truncations: int = 0
    truncations_during_write: int = 0
    #: Snapshots installed over a log that held another entry at the snapshot's index and
    #: went on past it.
    snapshots_over_conflicts: int = 0


class RaftSim:
    def __init__(self, seed: int, config: RaftConfig | None = None, *, loss: float = 0.0,
                 latency_s: tuple[float, float] = (0.001, 0.005), duplicate: float = 0.0,
                 disk_latency_s: tuple[float, float] = (0.0002, 0.002),
                 snapshot_every: int = 0, spike: float = 0.0,
                 spike_s: tuple[float, float] = (0.05, 0.6)) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.config = config or RaftConfig()
        self.loss = loss
        self.duplicate = duplicate
        self.latency_s = latency_s
        #: The chance that a message is held back a further ``spike_s`` (reordering).
        self.spike = spike
        self.spike_s = spike_s
        self.disk_latency_s = disk_latency_s
        self.snapshot_every = snapshot_every
        self.now = 0.0
        #: Each node's clock rate (1.0: the simulation's); its core sees ``rate * now``.
        self.clock_rates: dict[str, float] = {}
        #: Paused nodes and when they resume (simulation time).
        self.paused: dict[str, float] = {}
        self.nodes: dict[str, SimNode] = {}
        self.groups: dict[str, int] = {}
        self.blocked: set[tuple[str, str]] = set()
        #: Every entry each node applied: node -> index -> (term, kind, data).
        self.applied: dict[str, dict[int, tuple[int, EntryKind, bytes]]] = {}
        #: (term, leader, time) for every time a node was seen leading a new term.
        self.leaders: list[tuple[int, str, float]] = []
        self.reads: list[tuple[str, ReadState, float]] = []
        self.stats = SimStats()
        self.on_event: list[Callable[[SimNode], None]] = []
        self.on_persist: list[Callable[[SimNode, Ready], None]] = []
        self.on_apply: list[Callable[[SimNode, Entry], None]] = []
        self.on_install: list[Callable[[SimNode, SnapshotMeta], None]] = []
        self.on_read: list[Callable[[SimNode, ReadState], None]] = []
        self.on_crash: list[Callable[[SimNode], None]] = []
        self.on_wipe: list[Callable[[SimNode], None]] = []
        self.on_restart: list[Callable[[SimNode], None]] = []
        self._heap: list[tuple[float, int, str, str, object]] = []
        self._order = 0
        self._busy: dict[str, bool] = {}
        self._tick_at: dict[str, tuple[Raft, float]] = {}
        #: Snapshot data each node can still send, by index (the message names the index).
        self._snapshots: dict[str, dict[int, SnapshotData]] = {}

    # -- building ----------------------------------------------------------------------

    def add(self, node_id: str, *, bootstrap: Membership | None = None) -> SimNode:
        """A node with an empty disk; ``bootstrap`` writes the first membership as entry 1
        (every founding member gets the same one; a node added later gets none)."""
        if node_id in self.nodes:
            raise ValueError(f"{node_id} is already in the simulation")
        disk = Disk()
        if bootstrap is not None:
            disk.entries[1] = Entry(1, 0, EntryKind.MEMBERSHIP, bootstrap.encode())
        self.applied[node_id] = {}
        self._snapshots[node_id] = {}
        node = SimNode(node_id, self._make_raft(node_id, disk), disk)
        self.nodes[node_id] = node
        self._after(node)
        return node

    def local(self, node_id: str, at_s: float | None = None) -> float:
        """Node ``node_id``'s clock at simulated time ``at_s`` (now by default)."""
        return self.clock_rates.get(node_id, 1.0) * (self.now if at_s is None else at_s)

    def _sim_time(self, node_id: str, local_s: float) -> float:
        return local_s / self.clock_rates.get(node_id, 1.0)

    def pause(self, node_id: str, seconds: float) -> None:
        """SIGSTOP for ``seconds``: the node handles no message, timer or disk completion
        until then; they wait and are handled when it resumes (the network kept them)."""
        self.paused[node_id] = max(self.paused.get(node_id, 0.0), self.now + seconds)

    def is_paused(self, node_id: str) -> bool:
        return self.paused.get(node_id, -1.0) > self.now

    def _make_raft(self, node_id: str, disk: Disk) -> Raft:
        return Raft(node_id, self.config, random.Random(self.rng.random()), self.local(node_id),
                    hard_state=disk.hard_state, snapshot=disk.snapshot, entries=disk.log(),
                    applied=disk.applied)

    def crash(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if not node.up:
            return
        node.up = False
        self.stats.crashes += 1
        self._busy.pop(node_id, None)
        self._tick_at.pop(node_id, None)
        for hook in self.on_crash:
            hook(node)

    def wipe(self, node_id: str) -> None:
        """A replaced disk: crash ``node_id`` (if up) and give it an empty disk, which
        ``restart`` then starts from, with the same node id. The new disk holds only a
        fence, as the coordinator writes it for a node that joins with an empty log
        (``node.coordinator.service``); ``fence_of`` names it."""
        self.crash(node_id)
        node = self.nodes[node_id]
        node.disk = Disk(hard_state=HardState(0, None, f"{node_id}.{self.stats.wipes + 1}"))
        self._snapshots[node_id] = {}
        self.stats.wipes += 1
        for hook in self.on_wipe:
            hook(node)

    def fence_of(self, node_id: str) -> str | None:
        """The fence on ``node_id``'s disk: it may not vote until a membership admits it."""
        return self.nodes[node_id].disk.hard_state.fence

    def restart(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.up:
            return
        node.raft = self._make_raft(node_id, node.disk)
        node.up = True
        self.stats.restarts += 1
        for hook in self.on_restart:
            hook(node)
        self._after(node)

    def partition(self, *groups: set[str] | frozenset[str]) -> None:
        """Only nodes of the same group reach each other; a node in no group is in the
        implicit group of all such nodes."""
        self.groups = {n: g for g, members in enumerate(groups) for n in members}

    def block(self, src: str, dst: str) -> None:
        """Drop every message from ``src`` to ``dst`` (one way) until unblocked or healed."""
        self.blocked.add((src, dst))

    def unblock(self, src: str, dst: str) -> None:
        self.blocked.discard((src, dst))

    def cut(self, side_a: set[str] | frozenset[str], side_b: set[str] | frozenset[str]) -> None:
        """Block both ways between every node of ``side_a`` and every node of ``side_b``;
        nodes in neither side still reach both (a bridge)."""
        for a in side_a:
            for b in side_b:
                self.blocked.add((a, b))
                self.blocked.add((b, a))

    def heal(self) -> None:
        self.groups = {}
        self.blocked = set()

    def reachable(self, src: str, dst: str) -> bool:
        return (src, dst) not in self.blocked and \
            self.groups.get(src, -1) == self.groups.get(dst, -1)

    # -- clients -----------------------------------------------------------------------

    def leader(self) -> SimNode | None:
        """The up node that believes it leads with the highest term."""
        leaders = [n for n in self.nodes.values() if n.up and n.raft.role is Role.LEADER]
        return max(leaders, key=lambda n: n.raft.term) if leaders else None

    def propose(self, node_id: str, data: bytes) -> Entry | None:
        node = self.nodes[node_id]
        if not node.up:
            return None
        try:
            entry = node.raft.propose(self.local(node_id), data)
        except NotLeader:
            return None
        self._after(node)
        return entry

    def read(self, node_id: str, context: object) -> bool:
        node = self.nodes[node_id]
        if not node.up:
            return False
        try:
            node.raft.read_index(self.local(node_id), context)
        except NotLeader:
            return False
        self._after(node)
        return True

    def call(self, node_id: str, action: Callable[[Raft, float], object]) -> object:
        """Run ``action(raft, now)`` on an up node and process what it produced; whatever
        ``action`` raises propagates (after the node's state was processed)."""
        node = self.nodes[node_id]
        try:
            return action(node.raft, self.local(node_id))
        finally:
            self._after(node)

    def schedule(self, at_s: float, action: Callable[[], None]) -> None:
        """Run ``action()`` at simulated time ``at_s`` (now, if that has passed)."""
        self._push(max(at_s, self.now), "call", "", action)

    # -- running -----------------------------------------------------------------------

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def run_until(self, end: float, until: Callable[[], bool] | None = None) -> bool:
        """Process events up to ``end``; with ``until``, stop as soon as it holds (checked
        after every event) and return True, leaving ``now`` at that event."""
        while self._heap and self._heap[0][0] <= end:
            when, _, kind, node_id, payload = heapq.heappop(self._heap)
            self.now = max(self.now, when)
            if kind == "call":
                cast(Callable[[], None], payload)()
            else:
                self._event(kind, self.nodes[node_id], payload)
            if until is not None and until():
                return True
        self.now = max(self.now, end)
        return until is not None and until()

    def _event(self, kind: str, node: SimNode, payload: object) -> None:
        if not node.up:
            return
        if self.is_paused(node.id):
            self._push(self.paused[node.id], kind, node.id, payload)  # handled on resume
            return
        now = self.local(node.id)
        if kind == "tick":
            if payload is not node.raft:
                return
            if node.raft.next_deadline() > now + 1e-9:  # early by this node's clock: rearm
                self._tick_at.pop(node.id, None)
                self._after(node)
                return
            self._tick_at.pop(node.id, None)
            node.raft.tick(now)
        elif kind == "msg":
            log = node.raft.log
            last, term = log.last_index, log.last_term
            node.raft.receive(now, cast(Message, payload))
            if node.raft.log.term_at(last) not in (term, None) or node.raft.log.last_index < last:
                self.stats.truncations += 1
                self.stats.truncations_during_write += bool(self._busy.get(node.id))
        elif kind == "disk":
            raft, ready = cast(tuple[Raft, Ready], payload)
            if raft is not node.raft:
                return
            self._busy[node.id] = False
            self._finish(node, ready)
        self.stats.events += 1
        self._after(node)

    def _push(self, when: float, kind: str, node_id: str, payload: object) -> None:
        self._order += 1
        heapq.heappush(self._heap, (when, self._order, kind, node_id, payload))

    def _after(self, node: SimNode) -> None:
        """Start the disk write of the next Ready (one at a time), and rearm the timer."""
        if not node.up:
            return
        raft = node.raft
        if raft.role is Role.LEADER and (not self.leaders or
                                         self.leaders[-1][:2] != (raft.term, node.id)):
            self.leaders.append((raft.term, node.id, self.now))
        for hook in self.on_event:
            hook(node)
        if not self._busy.get(node.id):
            ready = node.raft.ready()
            if ready:
                self._persist(node, ready)
                self._busy[node.id] = True
                delay = self.rng.uniform(*self.disk_latency_s) if (
                    ready.entries or ready.hard_state or ready.snapshot) else 0.0
                self._push(self.now + delay, "disk", node.id, (node.raft, ready))
        deadline = node.raft.next_deadline()
        if self._tick_at.get(node.id) != (node.raft, deadline):
            self._tick_at[node.id] = (node.raft, deadline)
            self._push(self._sim_time(node.id, deadline) + 1e-9, "tick", node.id, node.raft)

    def _persist(self, node: SimNode, ready: Ready) -> None:
        """Apply ``ready`` to the disk at once: a crash before ``_finish`` loses only the
        messages and the acknowledgement, as with a real fsync that completed."""
        disk = node.disk
        if ready.snapshot is not None:
            meta = ready.snapshot.meta
            data = cast(SnapshotData, ready.snapshot.data)
            held = disk.entries.get(meta.index)
            if held is not None and held.term != meta.term and meta.index + 1 in disk.entries:
                self.stats.snapshots_over_conflicts += 1
            assert data.index == meta.index, (node.id, data.index, meta)
            disk.snapshot_data = data
            disk.kv, disk.digest, disk.applied = dict(data.kv), data.digest, meta.index
            self._snapshots[node.id][meta.index] = data
            self.applied[node.id] = {i: v for i, v in self.applied[node.id].items()
                                     if i <= meta.index}
            self.stats.snapshots_installed += 1
        disk.save(ready)
        for hook in self.on_persist:
            hook(node, ready)
        if ready.snapshot is not None:
            for install in self.on_install:
                install(node, ready.snapshot.meta)

    def _finish(self, node: SimNode, ready: Ready) -> None:
        for msg in ready.messages:
            self._deliver(node.id, msg)
        disk = node.disk
        for entry in ready.committed:
            if entry.index <= disk.applied:
                continue
            assert entry.index == disk.applied + 1, (node.id, entry.index, disk.applied)
            apply_command(disk.kv, entry)
            disk.digest = chain(disk.digest, entry)
            disk.applied = entry.index
            self.applied[node.id][entry.index] = (entry.term, entry.kind, entry.data)
            for hook in self.on_apply:
                hook(node, entry)
        for read in ready.reads:
            self.reads.append((node.id, read, self.now))
            for answer in self.on_read:
                answer(node, read)
        node.raft.advance(ready)
        # Compact every ``snapshot_every`` applied entries, unless the log already starts
        # past what is applied (an InstallSnapshot is on its way to the disk).
        if self.snapshot_every and disk.applied > node.raft.log.snapshot.index and \
                disk.applied - (disk.snapshot.index if disk.snapshot else 0) \
                >= self.snapshot_every:
            self._take_snapshot(node)

    def _take_snapshot(self, node: SimNode) -> None:
        disk = node.disk
        meta = node.raft.snapshot_meta(disk.applied)
        data = SnapshotData(meta.index, dict(disk.kv), disk.digest)
        disk.snapshot, disk.snapshot_data = meta, data
        kept = self._snapshots[node.id]
        kept[meta.index] = data
        for index in sorted(kept)[:-4]:  # a leader sends its latest; keep a few for stragglers
            del kept[index]
        for index in [i for i in disk.entries if i <= meta.index]:
            del disk.entries[index]
        node.raft.compact(meta)
        self.stats.snapshots_taken += 1

    def _deliver(self, src: str, msg: Message) -> None:
        if isinstance(msg, SnapshotRequest) and msg.data is None:
            data = self._snapshots[src].get(msg.meta.index)
            if data is None:
                self.stats.dropped += 1  # that snapshot is gone; the leader sends a newer one
                return
            msg = SnapshotRequest(msg.term, msg.source, msg.dest, msg.meta, data)
        kind = type(msg).__name__
        if isinstance(msg, VoteRequest) and msg.pre_vote:
            kind = "PreVoteRequest"
        self.stats.messages[kind] += 1
        copies = 1
        if self.rng.random() < self.duplicate:
            copies = 2
            self.stats.duplicated += 1
        for _ in range(copies):
            if self.rng.random() < self.loss or not self.reachable(src, msg.dest):
                self.stats.dropped += 1
                continue
            if msg.dest in self.nodes:
                delay = self.rng.uniform(*self.latency_s)
                if self.spike and self.rng.random() < self.spike:
                    delay += self.rng.uniform(*self.spike_s)
                self._push(self.now + delay, "msg", msg.dest, msg)

    # -- observing -----------------------------------------------------------------------

    def replay_hint(self) -> str:
        return f"seed={self.seed} (RaftSim({self.seed}, ...) replays this run)"
