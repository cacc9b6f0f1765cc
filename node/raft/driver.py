"""The trio driver of one Raft core: disk, network and the state machine.

Inputs (messages from peers, timer ticks, proposals, read requests) change the
core at once and wake the processor; the processor is the only task that
takes a ``Ready`` and it handles them one at a time, in the core's order:
persist (one sqlite transaction, one fsync), send, apply, ``advance``; except that
a leader's AppendRequests go out before its own write when the Ready changes no
term or vote. Inputs may arrive while a Ready is being written; the core allows
that.

A proposal waits until the entry at its index is applied: if the entry there
has the proposal's term it committed, otherwise it was lost to a new leader
(``ProposalLost``, a 503 for clients).

Every ``snapshot_every`` applied entries the driver snapshots the state and
compacts the log; a follower too far behind (or new) gets the snapshot file
streamed (``node.raft.snapshots``) and installs it.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

import trio

from node.raft import codec, storage
from node.raft.core import NotLeader, Raft, RaftConfig, Ready
from node.raft.messages import (AppendRequest, Entry, EntryKind, Membership, Message,
                                SnapshotMeta, SnapshotRequest)
from node.raft.snapshots import SnapshotFiles
from node.meta.log import CommitObserver
from node.rpc.peers import PeerNet
from node.store.db import Database, DatabaseError, is_disk_full, until_stored

if TYPE_CHECKING:
    import random  # noqa: TID251 - only the type: the generator is seeded and injected

log = logging.getLogger(__name__)

Apply = Callable[[list[Entry]], Awaitable[list[object]]]


class Snapshotter(Protocol):
    """The state machine's side of snapshots."""

    async def take(self, path: Path) -> None:
        """Write a consistent copy of the state, as applied right now, to ``path``."""

    async def install(self, path: Path) -> None:
        """Replace the state with the copy at ``path``."""

#: Results of recently applied entries, for proposals forwarded from this node.
RESULTS_KEPT = 4096
#: After a snapshot found the disk full, compaction waits this long before trying again.
COMPACT_RETRY_S = 10.0


class ProposalLost(Exception):
    """The entry was overwritten by a new leader's log: it did not commit."""


@dataclass
class _Waiter:
    term: int
    done: trio.Event
    result: object = None
    lost: bool = False


class RaftDriver:
    def __init__(self, node_id: str, config: RaftConfig, db: Database, apply: Apply,
                 peers: PeerNet, rng: random.Random, *, applied: int,
                 bootstrap: Membership | None = None,
                 observer: CommitObserver | None = None,
                 snapshotter: Snapshotter | None = None, files: SnapshotFiles | None = None,
                 snapshot_every: int = 0,
                 accept: Callable[[str], bool] | None = None,
                 wire_of: Callable[[str], int] | None = None) -> None:
        self.node_id = node_id
        self.config = config
        self._db = db
        self._apply = apply
        self._peers = peers
        self._rng = rng
        self._applied = applied
        self._bootstrap = bootstrap
        self._observer = observer
        self._snapshotter = snapshotter
        #: Whether to take Raft messages from a peer (another group's are dropped).
        self._accept = accept
        #: The Raft wire version a peer reads (``node.raft.codec``); the newest if unknown.
        self._wire_of = wire_of
        self._files = files
        #: Compact the log once this many entries were applied since the last snapshot.
        self.snapshot_every = snapshot_every
        self._nursery: trio.Nursery | None = None
        self._kick = trio.Event()
        #: Set by every input: it may have moved the core's next deadline earlier.
        self._rearm = trio.Event()
        self._waiters: dict[int, _Waiter] = {}
        self._reads: dict[int, tuple[trio.Event, list[int | None]]] = {}
        self._read_ids = 0
        self._applied_changed = trio.Event()
        self._stable_changed = trio.Event()
        self._stable_seen = 0
        self._results: OrderedDict[int, tuple[int, object]] = OrderedDict()
        self.raft: Raft | None = None
        self._compact_not_before = -math.inf
        self.counters = {"bad_messages": 0, "batches": 0, "entries_persisted": 0,
                         "snapshots_taken": 0, "snapshot_requests_dropped": 0,
                         "foreign_messages": 0}

    # -- running ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        stored = await self._db.write(storage.load)
        entries = stored.entries
        if stored.empty and self._bootstrap is not None:
            entries = [Entry(1, 0, EntryKind.MEMBERSHIP, self._bootstrap.encode())]
            await self._db.write(lambda c: storage.save(c, Ready(entries=entries)))
        if stored.snapshot is not None and self._applied < stored.snapshot.index:
            await self._recover_state(stored.snapshot)
        if stored.snapshot is not None:
            # The state was installed or taken before the snapshot was recorded: it holds
            # at least everything the snapshot covers.
            self._applied = max(self._applied, stored.snapshot.index)
        if self._files is not None:
            self._files.clean(stored.snapshot)
        self.raft = Raft(self.node_id, self.config, self._rng, trio.current_time(),
                         hard_state=stored.hard_state, snapshot=stored.snapshot,
                         entries=entries, applied=self._applied)
        self._peers.on_message("raft", self._on_message)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._timer)
            nursery.start_soon(self._processor)
            task_status.started()

    async def _recover_state(self, snapshot: SnapshotMeta) -> None:
        """The state machine is older than the snapshot that replaced the log before it
        (the log it would replay is gone): reinstall the snapshot file. The state is made
        durable before any log is dropped, so only a database put back by hand gets here."""
        path = self._files.path_for(snapshot) if self._files is not None else None
        if path is None or self._snapshotter is None or not path.exists():
            raise RuntimeError(f"the applied state ({self._applied}) is older than the Raft "
                               f"snapshot ({snapshot.index}) and the snapshot file is missing")
        log.warning("the applied state is older than the Raft snapshot: reinstalling it",
                    extra={"applied": self._applied, "snapshot": snapshot.index})
        await self._snapshotter.install(path)
        self._applied = snapshot.index

    def _core(self) -> Raft:
        if self.raft is None:
            raise NotLeader(None)
        return self.raft

    # -- client side -----------------------------------------------------------------------

    async def propose(self, data: bytes) -> object:
        """Commit ``data`` and return what applying it returned. Raises NotLeader or
        ProposalLost; cancellation leaves the outcome unknown (it may still commit)."""
        _, result = await self.propose_entry(data)
        return result

    async def propose_entry(self, data: bytes) -> tuple[Entry, object]:
        """Like ``propose``, also returning the committed entry (for forwarded proposals)."""
        entry = self._core().propose(trio.current_time(), data)
        waiter = self._waiters[entry.index] = _Waiter(entry.term, trio.Event())
        self._wake()
        await waiter.done.wait()
        if waiter.lost:
            raise ProposalLost(f"entry {entry.index} was replaced by a new leader")
        # Acknowledged only once every lease holder applied it (node.raft.leases).
        await self.wait_stable(entry.index)
        return entry, waiter.result

    async def result_of(self, index: int, term: int) -> object:
        """What applying entry ``index`` returned here, once applied (every node computes
        the same result). Raises ProposalLost if another term's entry took the index."""
        await self.wait_applied(index)
        found = self._results.get(index)
        if found is None:
            raise ProposalLost(f"the result of entry {index} is no longer remembered")
        if found[0] != term:
            raise ProposalLost(f"entry {index} was replaced by a new leader")
        return found[1]

    async def read_index(self) -> int:
        """A linearizable read point: once it is applied, local reads are current."""
        self._read_ids += 1
        context = self._read_ids
        done = trio.Event()
        box: list[int | None] = []
        self._reads[context] = (done, box)
        try:
            self._core().read_index(trio.current_time(), context)
            self._wake()
            await done.wait()
        finally:
            self._reads.pop(context, None)
        if box[0] is None:
            raise NotLeader(self._core().leader)
        return box[0]

    def change_membership(self, membership: Membership) -> Entry:
        """Propose a single-server change (in force once appended). Raises NotLeader or
        ChangeInProgress."""
        entry = self._core().change_membership(trio.current_time(), membership)
        self._wake()
        return entry

    def transfer_leadership(self) -> str | None:
        """Start handing leadership to the most up-to-date voter; the chosen one, if any."""
        target = self._core().transfer_leadership(trio.current_time())
        self._wake()
        return target

    def snapshot_bytes(self) -> int:
        """Size of this node's current snapshot file (0: none yet)."""
        if self.raft is None or self._files is None or not self.raft.log.snapshot.index:
            return 0
        return self._files.size_of(self.raft.log.snapshot)

    @property
    def applied(self) -> int:
        """The last log index applied here (commands, no-ops and membership changes)."""
        return self._applied

    async def wait_applied(self, index: int) -> None:
        while self._applied < index:
            await self._applied_changed.wait()

    def lease_read_index(self) -> int | None:
        """The index to have applied for a linearizable local read now, if this node holds
        a read lease (``node.raft.leases``); None: use ``read_index``."""
        return self.raft.lease_read_index(trio.current_time()) if self.raft else None

    @property
    def stable(self) -> int:
        """Every entry up to here is applied on every node holding a read lease."""
        return self.raft.stable_index if self.raft else 0

    async def wait_stable(self, index: int) -> None:
        while self.stable < index:
            await self._stable_changed.wait()

    def _stable_moved(self) -> None:
        if self.raft is not None and self.raft.stable_index > self._stable_seen:
            self._stable_seen = self.raft.stable_index
            self._stable_changed.set()
            self._stable_changed = trio.Event()

    # -- inputs ----------------------------------------------------------------------------

    def _wake(self) -> None:
        self._kick.set()
        self._rearm.set()

    def _on_message(self, peer: str, body: bytes) -> None:
        try:
            msg = codec.decode(body)
        except codec.CodecError:
            self.counters["bad_messages"] += 1
            return
        if msg.source != peer or self.raft is None:
            self.counters["bad_messages"] += 1  # a node may speak only for itself
            return
        if self._accept is not None and not self._accept(peer):
            self.counters["foreign_messages"] += 1
            return
        if isinstance(msg, SnapshotRequest):
            path = self._files.received(msg.meta) if self._files is not None else None
            if path is None:
                self.counters["snapshot_requests_dropped"] += 1  # its file did not arrive
                return
            msg = replace(msg, data=path)
        self.raft.receive(trio.current_time(), msg)
        self._stable_moved()
        self._wake()

    async def _timer(self) -> None:
        core = self._core()
        while True:
            # Inputs can move the deadline earlier (a won election makes a heartbeat due
            # now), so wait for the deadline or for any input, then look again.
            with trio.move_on_at(core.next_deadline()):
                await self._rearm.wait()
            self._rearm = trio.Event()
            now = trio.current_time()
            if now >= core.next_deadline():
                core.tick(now)
                self._stable_moved()
                self._wake()

    # -- the processor ---------------------------------------------------------------------

    async def _processor(self) -> None:
        core = self._core()
        while True:
            await self._kick.wait()
            self._kick = trio.Event()
            while True:
                # Every write below is shielded (it must finish whole), so without this
                # checkpoint a node under steady load would never notice it was stopped.
                await trio.lowlevel.checkpoint()
                ready = core.ready()
                if not ready:
                    break
                await self._handle(core, ready)
                await self._maybe_compact(core)

    async def _handle(self, core: Raft, ready: Ready) -> None:
        messages = ready.messages
        if ready.hard_state is None and ready.truncate_from is None and ready.snapshot is None:
            # A leader's AppendRequests may leave before its own write (dissertation 10.2.1):
            # it counts itself toward a commit only once the write is done, so followers'
            # fsyncs overlap the leader's. A new term or vote must reach the disk first.
            self._send([m for m in messages if isinstance(m, AppendRequest)])
            messages = [m for m in messages if not isinstance(m, AppendRequest)]
        if ready.hard_state or ready.entries or ready.truncate_from is not None \
                or ready.snapshot:
            started = trio.current_time()
            await until_stored(lambda: self._persist(ready), "the Raft log")
            if self._observer is not None:
                self._observer.observe_batch(len(ready.entries), trio.current_time() - started)
            self.counters["batches"] += 1
            self.counters["entries_persisted"] += len(ready.entries)
        self._send(messages)
        if ready.committed:
            fresh = [e for e in ready.committed if e.index > self._applied]
            results = await self._apply(fresh) if fresh else []
            for entry, result in zip(fresh, results):
                self._settle(entry, result)
            if fresh:
                self._applied = fresh[-1].index
                self._applied_changed.set()
                self._applied_changed = trio.Event()
        for read in ready.reads:
            waiting = self._reads.get(read.context)  # type: ignore[call-overload]
            if waiting is not None:
                waiting[1].append(read.index)
                waiting[0].set()
        core.advance(ready)
        self._stable_moved()
        self._rearm.set()  # advancing can change the deadline too (a removed leader steps down)

    def _send(self, messages: list[Message]) -> None:
        for msg in messages:
            if isinstance(msg, SnapshotRequest):
                self._send_snapshot(msg)
            elif (data := self._encode(msg)) is not None:
                self._peers.send(msg.dest, "raft", data)

    def _encode(self, msg: Message) -> bytes | None:
        """``msg`` in the version its receiver reads; None if that version cannot carry it
        (an ``Applied`` for an older node, which then simply holds no lease)."""
        version = self._wire_of(msg.dest) if self._wire_of is not None else codec.VERSION
        try:
            return codec.encode(msg, version)
        except codec.CodecError:
            return None

    async def _persist(self, ready: Ready) -> None:
        """What must be on disk before anything of ``ready`` is sent or applied (one
        attempt; ``until_stored`` shields it and tries again while the disk is full)."""
        if ready.snapshot is not None:
            await self._install(ready)
        await self._db.write(lambda c: storage.save(c, ready))
        if ready.snapshot is not None and self._files is not None:
            self._files.adopt(ready.snapshot.meta, cast(Path, ready.snapshot.data))

    # -- snapshots -------------------------------------------------------------------------

    async def _install(self, ready: Ready) -> None:
        """Replace the state with the leader's snapshot, crash-safely: if our log conflicts
        with it, the log is emptied first (a crash then leaves an empty log the leader
        refills, never a conflicting log beside the new state); the snapshot is recorded
        only after the state is in place."""
        assert ready.snapshot is not None and self._snapshotter is not None
        meta = ready.snapshot.meta
        if ready.truncate_from is not None and ready.truncate_from <= meta.index + 1:
            await self._db.write(storage.clear_log)
        await self._snapshotter.install(cast(Path, ready.snapshot.data))
        self._applied = max(self._applied, meta.index)
        self._applied_changed.set()
        self._applied_changed = trio.Event()
        log.info("installed a snapshot from the leader",
                 extra={"index": meta.index, "term": meta.term})

    async def _maybe_compact(self, core: Raft) -> None:
        """Snapshot the applied state and cut the log it covers, every ``snapshot_every``
        entries. The state is exactly at ``_applied`` here: only this task applies."""
        if not self.snapshot_every or self._snapshotter is None or self._files is None:
            return
        if self._applied - core.log.snapshot.index < self.snapshot_every:
            return
        if trio.current_time() < self._compact_not_before:
            return
        meta = core.snapshot_meta(self._applied)
        with trio.CancelScope(shield=True):
            try:
                await self._snapshotter.take(self._files.path_for(meta))
                await self._db.write(lambda c: storage.compact(c, meta))
            except (DatabaseError, OSError) as exc:
                if not is_disk_full(exc):
                    raise
                log.warning("no room for a snapshot: the log is compacted later",
                            extra={"index": meta.index, "why": str(exc)})
                self._compact_not_before = trio.current_time() + COMPACT_RETRY_S
                return
        core.compact(meta)
        self._files.adopt(meta)
        self.counters["snapshots_taken"] += 1
        log.info("log compacted", extra={"index": meta.index, "term": meta.term})

    def _send_snapshot(self, msg: SnapshotRequest) -> None:
        """Stream the file first; the Raft message follows once it has arrived."""
        if self._files is None or self._nursery is None:
            self.counters["snapshot_requests_dropped"] += 1
            return
        self._files.send(self._nursery, msg.dest, msg.meta,
                         lambda: self._peers.send(msg.dest, "raft", self._encode(msg) or b""))

    def _settle(self, entry: Entry, result: object) -> None:
        self._results[entry.index] = (entry.term, result)
        while len(self._results) > RESULTS_KEPT:
            self._results.popitem(last=False)
        waiter = self._waiters.pop(entry.index, None)
        if waiter is None:
            return
        if waiter.term == entry.term:
            waiter.result = result
        else:
            waiter.lost = True
        waiter.done.set()
