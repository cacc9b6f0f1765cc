"""Clients of a simulated Raft cluster: key-value puts and linearizable reads, recorded
as a history for the linearizability checker.

Each client issues one operation at a time, with a think time between them,
through the node it believes leads: it starts from a random node and follows
``NotLeader`` hints (a random node when there is none, or when the node it tried
is down), retrying after ``retry_s`` until the operation's ``timeout_s``. A
client knows only what a real one would: what the node it talks to answers.

* ``put(key, value)`` proposes ``b"key=value"``. It succeeds when that node
  applies an entry at the proposal's index with the proposal's term. An entry
  of another term applied there means the proposal was lost: the client tries
  again (at most once in effect, since the lost one can never commit). If the
  node crashes, installs a snapshot over the index, or the timeout passes, the
  outcome is unknown, and the history says so.
* ``get(key)`` asks the node for a ReadIndex; once the answer's index is
  applied there it reads the node's map. A failed ReadIndex (leadership lost)
  or a crash is retried; reads have no effect, so retrying is always safe.

With ``leases=True`` (a core configured with ``lease_s``), a get asks the node
for ``lease_read_index`` first and, holding a lease, reads its map once that is
applied, with no round trip; and, as the node does (``node.meta.dirty``), every
read waits until the key's last change on that node is stable, and a put
completes only once its entry is stable. A paused node answers nothing until it
resumes. Gets then go to a random node each time, as behind a load balancer that
spreads requests over every node, since any node may answer them.

``stale_reads=True`` is the deliberate bug for the pipeline's self-test: a get
is answered at once from any node's local map, with no ReadIndex.
``unsettled_reads=True`` is another: with leases, reads do not wait for the
keys they read to be stable.

The recorder stamps events with their position in the run (logical time): the
simulation is one process recording every call and return in the order it
happens, which is what that clock needs to be sound.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from node.raft.core import NotLeader, ReadState
from node.raft.messages import Entry, EntryKind, SnapshotMeta
from node.testing.linearizability import (NOT_FOUND, OK, CheckResult, HistoryRecorder, KeyValue,
                                          check)
from node.testing.raft_sim import RaftSim, SimNode


@dataclass
class ClientOp:
    """One operation as the test sees it (simulated times), beside the recorded ``Op``."""

    client: int
    kind: str  # "put" or "get"
    key: str
    value: str | None
    handle: int
    invoked_s: float
    deadline_s: float
    done_s: float | None = None
    outcome: str = "pending"  # "ok", "unknown", or "pending"
    result: str | None = None
    attempts: int = 0
    node: str | None = None  # where the current attempt waits


@dataclass
class ClientStats:
    puts_ok: int = 0
    puts_unknown: int = 0
    puts_lost: int = 0  # a proposal that another entry overtook; retried
    reads_ok: int = 0
    reads_unknown: int = 0
    reads_failed: int = 0  # ReadIndex answered "leadership lost"; retried
    redirects: int = 0
    lease_reads: int = 0  # gets answered under a read lease (no ReadIndex)


@dataclass
class _Waiting:
    op: ClientOp
    term: int = 0


@dataclass
class KvClients:
    sim: RaftSim
    rng: random.Random
    clients: int = 3
    keys: tuple[str, ...] = ("x", "y", "z")
    read_share: float = 0.5
    think_s: tuple[float, float] = (0.01, 0.15)
    retry_s: float = 0.05
    timeout_s: float = 2.5
    stale_reads: bool = False
    leases: bool = False
    unsettled_reads: bool = False
    stats: ClientStats = field(default_factory=ClientStats)
    ops: list[ClientOp] = field(default_factory=list)
    recorder: HistoryRecorder = field(default_factory=HistoryRecorder)

    def __post_init__(self) -> None:
        self._running = False
        self._hint: dict[int, str] = {}
        self._counter = 0
        self._puts: dict[tuple[str, int], _Waiting] = {}  # (node, index) -> the put
        self._reads: dict[object, ClientOp] = {}  # ReadIndex context -> the get
        self._applied_wait: dict[str, list[tuple[int, ClientOp]]] = {}
        #: Puts applied where they were proposed, waiting to be stable (with leases).
        self._stable_wait: dict[str, list[tuple[int, ClientOp]]] = {}
        #: Per node: the index of each key's last change, and the index below which
        #: nothing is known (what it restarted or installed a snapshot from).
        self._changed: dict[str, dict[str, int]] = {}
        self._floor: dict[str, int] = {}
        sim = self.sim
        sim.on_apply.append(self._on_apply)
        sim.on_install.append(self._on_install)
        sim.on_read.append(self._on_read)
        sim.on_crash.append(self._on_crash)
        sim.on_restart.append(self._on_restart)
        sim.on_wipe.append(self._on_restart)
        sim.on_event.append(self._on_event)

    # -- control -----------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        for client in range(self.clients):
            self._think(client)

    def stop(self) -> None:
        """Issue no new operations; those under way go on to their end."""
        self._running = False

    def check(self, max_steps: int = 2_000_000) -> CheckResult:
        return check(KeyValue(), self.recorder.history(), max_steps=max_steps)

    def pending(self) -> list[ClientOp]:
        return [op for op in self.ops if op.outcome == "pending"]

    # -- one operation -----------------------------------------------------------------

    def _think(self, client: int) -> None:
        if self._running:
            self.sim.schedule(self.sim.now + self.rng.uniform(*self.think_s),
                              lambda: self._issue(client))

    def _issue(self, client: int) -> None:
        if not self._running:
            return
        key = self.rng.choice(self.keys)
        now = self.sim.now
        if self.rng.random() < self.read_share:
            handle = self.recorder.invoke(client, "get", key)
            op = ClientOp(client, "get", key, None, handle, now, now + self.timeout_s)
        else:
            self._counter += 1
            value = f"c{client}.{self._counter}"
            handle = self.recorder.invoke(client, "put", key, value)
            op = ClientOp(client, "put", key, value, handle, now, now + self.timeout_s)
        self.ops.append(op)
        self.sim.schedule(op.deadline_s, lambda: self._expire(op))
        self._attempt(op)

    def _target(self, client: int) -> str:
        hint = self._hint.get(client)
        if hint is None or hint not in self.sim.nodes:
            hint = self._hint[client] = self.rng.choice(sorted(self.sim.nodes))
        return hint

    def _redirect(self, op: ClientOp, leader: str | None) -> None:
        self.stats.redirects += 1
        self._hint[op.client] = leader if leader is not None and leader in self.sim.nodes \
            else self.rng.choice(sorted(self.sim.nodes))
        self.sim.schedule(self.sim.now + self.retry_s, lambda: self._attempt(op))

    def _attempt(self, op: ClientOp) -> None:
        if op.outcome != "pending" or op.node is not None:
            return
        if self.sim.now >= op.deadline_s:
            self._finish(op, "unknown")
            return
        op.attempts += 1
        target = self.rng.choice(sorted(self.sim.nodes)) if self.leases and op.kind == "get" \
            else self._target(op.client)
        node = self.sim.nodes[target]
        if not node.up:
            self._redirect(op, None)
            return
        if self.sim.is_paused(target):  # the request waits in its socket
            op.attempts -= 1
            self.sim.schedule(self.sim.paused[target], lambda: self._attempt(op))
            return
        if op.kind == "get" and self.stale_reads:
            self._finish(op, "ok", node.disk.kv.get(op.key, NOT_FOUND))
            return
        try:
            if op.kind == "put":
                data = f"{op.key}={op.value}".encode()
                entry = self.sim.call(target, lambda raft, now: raft.propose(now, data))
                assert isinstance(entry, Entry)
                self._puts[(target, entry.index)] = _Waiting(op, entry.term)
            else:
                index = self.sim.call(target, lambda raft, now: raft.lease_read_index(now)) \
                    if self.leases else None
                if isinstance(index, int):
                    self.stats.lease_reads += 1
                    op.node = target
                    self._applied_wait.setdefault(target, []).append((index, op))
                    self._serve_reads(node)
                    return
                context = ("get", op.handle, op.attempts)
                self._reads[context] = op
                self.sim.call(target, lambda raft, now: raft.read_index(now, context))
        except NotLeader as exc:
            if op.kind == "get":
                self._reads.pop(("get", op.handle, op.attempts), None)
            self._redirect(op, exc.leader)
            return
        op.node = target

    def _retry(self, op: ClientOp) -> None:
        op.node = None
        self.sim.schedule(self.sim.now + self.retry_s, lambda: self._attempt(op))

    def _expire(self, op: ClientOp) -> None:
        if op.outcome == "pending":
            self._finish(op, "unknown")

    def _finish(self, op: ClientOp, outcome: str, result: str | None = None) -> None:
        if op.outcome != "pending":
            return
        op.outcome, op.result, op.done_s, op.node = outcome, result, self.sim.now, None
        if outcome == "ok":
            self.recorder.complete(op.handle, OK if op.kind == "put" else result)
        else:
            self.recorder.timeout(op.handle)
        if op.kind == "put":
            if outcome == "ok":
                self.stats.puts_ok += 1
            else:
                self.stats.puts_unknown += 1
        elif outcome == "ok":
            self.stats.reads_ok += 1
        else:
            self.stats.reads_unknown += 1
        self._think(op.client)

    # -- what the nodes answer ---------------------------------------------------------

    def _on_apply(self, node: SimNode, entry: Entry) -> None:
        if entry.kind is EntryKind.COMMAND:
            key = entry.data.decode().partition("=")[0]
            self._changed.setdefault(node.id, {})[key] = entry.index
        waiting = self._puts.pop((node.id, entry.index), None)
        if waiting is not None and waiting.op.node == node.id:
            if entry.term == waiting.term and self.leases:
                self._stable_wait.setdefault(node.id, []).append((entry.index, waiting.op))
            elif entry.term == waiting.term:
                self._finish(waiting.op, "ok")
            else:
                self.stats.puts_lost += 1
                self._retry(waiting.op)
        self._serve_reads(node)

    def _on_restart(self, node: SimNode) -> None:
        self._changed[node.id] = {}
        self._floor[node.id] = node.disk.applied

    def _on_event(self, node: SimNode) -> None:
        if not self.leases:
            return
        waiting = self._stable_wait.get(node.id)
        if waiting:
            still = []
            for index, op in waiting:
                if op.outcome != "pending" or op.node != node.id:
                    continue
                if node.raft.stable_index >= index:
                    self._finish(op, "ok")
                else:
                    still.append((index, op))
            self._stable_wait[node.id] = still
        self._serve_reads(node)

    def _settled(self, node: SimNode, key: str) -> bool:
        """The key's last change on ``node`` is stable (or leases are off)."""
        if not self.leases or self.unsettled_reads:
            return True
        changed = max(self._floor.get(node.id, 0), self._changed.get(node.id, {}).get(key, 0))
        return changed <= node.raft.stable_index

    def _on_install(self, node: SimNode, meta: SnapshotMeta) -> None:
        self._changed[node.id] = {}
        self._floor[node.id] = meta.index
        for (node_id, index), waiting in list(self._puts.items()):
            if node_id == node.id and index <= meta.index:
                del self._puts[(node_id, index)]
                if waiting.op.node == node.id:
                    self._finish(waiting.op, "unknown")  # applied or not: the node cannot say
        self._serve_reads(node)

    def _on_read(self, node: SimNode, read: ReadState) -> None:
        op = self._reads.pop(read.context, None)
        if op is None or op.node != node.id or op.outcome != "pending":
            return
        if read.index is None:
            self.stats.reads_failed += 1
            self._hint.pop(op.client, None)
            self._retry(op)
            return
        self._applied_wait.setdefault(node.id, []).append((read.index, op))
        self._serve_reads(node)

    def _serve_reads(self, node: SimNode) -> None:
        waiting = self._applied_wait.get(node.id)
        if not waiting:
            return
        still = []
        for index, op in waiting:
            if op.outcome != "pending" or op.node != node.id:
                continue
            if node.disk.applied >= index and self._settled(node, op.key):
                self._finish(op, "ok", node.disk.kv.get(op.key, NOT_FOUND))
            else:
                still.append((index, op))
        self._applied_wait[node.id] = still

    def _on_crash(self, node: SimNode) -> None:
        self._applied_wait.pop(node.id, None)
        self._stable_wait.pop(node.id, None)
        for op in self.ops:
            if op.outcome != "pending" or op.node != node.id:
                continue
            if op.kind == "put":
                self._finish(op, "unknown")
            else:
                self._retry(op)
