"""The Raft state machine, sans I/O: messages and time in; messages, persistence and
committed entries out.

The driver's loop (the contract every driver and simulator keeps)::

    raft.tick(now) / raft.receive(now, msg) / raft.propose(...) / raft.read_index(...)
    ready = raft.ready()
    1. truncate the durable log from ready.truncate_from, append ready.entries,
       install ready.snapshot, persist ready.hard_state -- and fsync;
    2. only then send ready.messages (a vote or an Ack must never outrun the disk);
    3. apply ready.committed in order; answer ready.reads once applied >= their index;
    raft.advance(ready)

Safety rests on the paper's rules; liveness and availability on these choices:

* **Pre-vote** (dissertation 9.6): a node first asks whether it *would* win at
  term+1; nobody changes term for that. A node returning from a partition
  cannot depose a healthy leader.
* **Leader lease for votes and check-quorum**: a voter that heard from a leader
  within the minimum election timeout ignores vote requests (unless sent for a
  leadership transfer); a leader that has not heard from a quorum within an
  election timeout steps down, so a minority leader stops accepting writes.
* **Reads**: with ``lease_s`` set, any node holding a read lease reads its own
  state (``lease_read_index``; the protocol and why it is safe are in
  ``node.raft.leases``: it assumes only that clocks run at rates within
  ``clock_drift`` of each other, never that they agree, and a paused process
  checks its lease against a fresh monotonic reading). Without one, ReadIndex
  (dissertation 6.4): the leader confirms with one heartbeat round to a quorum
  that it still leads, then the read waits until the commit index of that
  moment is applied. Writes are acknowledged once *stable* (``stable_index``).
* **Single-server membership changes** take effect when appended; one at a
  time, and only after the leader committed an entry of its own term.
* **Leadership transfer** (dissertation 3.10) on graceful leave.
* **A replaced disk** (a node back with an empty log under its old id): Raft's
  safety rests on a voter remembering its votes and its acknowledged entries,
  and such a node remembers neither. It starts *fenced* (``HardState.fence``, a
  random value its driver chose): it neither votes (nor pre-votes) nor stands
  until it holds an entry whose membership admits that fence
  (``Membership.admitted``), which a leader appends once it learns of it. Then
  its log holds everything committed before that entry, and in that entry's
  term it counts as having voted for the leader that sent it. So no quorum
  that elects a leader contains it while it lacks what it once acknowledged,
  and an old acknowledgement the leader still counts is harmless. A leader that
  sees a follower's log end before what the follower had acknowledged (only a
  lost disk does that) forgets the follower's match index and refills it from
  its real end. Not covered: a vote the old disk cast in a term above the one
  it is admitted in (a candidate that reached nobody else, then retried in the
  same term after the node was admitted: pre-vote and the leader lease make
  that all but impossible).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from node.raft.leases import FollowerLease, LeaseHolders, leader_lease_until
from node.raft.log import RaftLog
from node.raft.messages import (AppendRequest, AppendResponse, Applied, Entry, EntryKind,
                                Membership, Message, SnapshotMeta, SnapshotRequest,
                                SnapshotResponse, TimeoutNow, VoteRequest, VoteResponse)

if TYPE_CHECKING:
    import random  # noqa: TID251 - only the type: the generator is seeded and injected


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class NotLeader(Exception):
    """This node cannot take the request; ``leader`` is who can, if known."""

    def __init__(self, leader: str | None) -> None:
        super().__init__(f"not the leader (leader: {leader})")
        self.leader = leader


@dataclass(frozen=True, slots=True)
class RaftConfig:
    #: Followers wait a random time in [election_timeout_s, 2 * election_timeout_s) without
    #: hearing from a leader before they stand; failover takes about that long.
    election_timeout_s: float = 0.8
    #: Well below the election timeout, so a few lost heartbeats do not start an election.
    heartbeat_interval_s: float = 0.15
    #: Bytes of entries per AppendRequest (the batch size when a follower catches up).
    max_append_bytes: int = 1024 * 1024
    #: A leadership transfer that has not finished after this long is abandoned.
    transfer_timeout_s: float = 1.6
    #: Length of a follower's read lease (0: no leases, every read is a ReadIndex); a
    #: node that stops answering holds acknowledgements of writes up for this long.
    lease_s: float = 0.0
    #: How far two nodes' clocks may differ in rate; leases are shortened by this much.
    clock_drift: float = 0.05


@dataclass(frozen=True, slots=True)
class HardState:
    term: int
    voted_for: str | None
    #: Set when the Raft state began empty on a node that joins an existing group: the
    #: node does not vote or stand until a membership admits this value (then None).
    fence: str | None = None


@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex answer: reads tagged ``context`` are linearizable once ``index`` is
    applied; ``index`` is None when the read could not be served (leadership lost)."""

    context: object
    index: int | None


@dataclass
class Ready:
    hard_state: HardState | None = None
    truncate_from: int | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: SnapshotRequest | None = None
    messages: list[Message] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    reads: list[ReadState] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.hard_state or self.truncate_from is not None or self.entries
                    or self.snapshot or self.messages or self.committed or self.reads)


@dataclass(slots=True)
class _Progress:
    """The leader's knowledge of one follower."""

    next_index: int
    match_index: int = 0
    #: Optimistic pipelining once the follower is known to match; one probe at a time before.
    replicating: bool = False
    snapshot_sent_s: float | None = None
    last_heard_s: float = -1e18
    round_acked: int = 0
    #: When the first answer to ``round_acked`` arrived: the follower answered before.
    round_acked_s: float = -1e18
    #: The round of the request whose acknowledgement set ``match_index``.
    match_round: int = 0


@dataclass(slots=True)
class _PendingRead:
    context: object
    index: int
    round: int


class Raft:
    def __init__(self, node_id: str, config: RaftConfig, rng: random.Random, now: float, *,
                 hard_state: HardState = HardState(0, None),
                 snapshot: SnapshotMeta | None = None, entries: list[Entry] | None = None,
                 applied: int = 0) -> None:
        self.id = node_id
        self.config = config
        self._rng = rng
        self.log = RaftLog(snapshot, entries) if snapshot else RaftLog(entries=entries)
        self.term = hard_state.term
        self.voted_for = hard_state.voted_for
        self.fence = hard_state.fence
        self.role = Role.FOLLOWER
        self.leader: str | None = None
        #: Never below what the snapshot or the applied state machine proves committed.
        self.commit_index = max(self.log.snapshot.index, min(applied, self.log.last_index))
        self._handed = self.commit_index  # committed entries given to the driver to apply
        self._persisted = self.log.last_index  # what the durable log is known to hold
        self._membership_index, self.membership = self.log.latest_membership()
        self._hard_saved = hard_state
        self._ready = Ready()
        self._votes: set[str] = set()
        self._progress: dict[str, _Progress] = {}
        self._round = 0
        #: Proposals and reads ask for a round of AppendRequests; ``ready`` sends one for all
        #: that asked since the last Ready, so a burst of them shares one message per peer.
        self._broadcast_wanted = False
        #: When each recent round was first broadcast (the leader's lease starts there).
        self._round_sent: dict[int, float] = {}
        self._lease = FollowerLease(config.clock_drift)
        self._holders = LeaseHolders(config.lease_s, config.clock_drift)
        #: Every entry up to here is applied on every lease holder: reads may show it.
        self.stable_index = 0
        #: The lease length the current leader grants (0: it grants none, so no node
        #: reads under a lease and reads need not wait to be stable).
        self.leader_lease_s = 0.0
        #: A restarted node forgot which leader it heard and when: it refuses votes for an
        #: election timeout, or a leader's lease could outlive its reign.
        self._no_votes_until = now + config.election_timeout_s if config.lease_s > 0 else now
        self._reads: list[_PendingRead] = []
        self._waiting_reads: list[object] = []
        self._transfer_to: str | None = None
        self._transfer_until = 0.0
        self._heard_leader_s = -1e18
        self._term_started_index = 0
        self._now = now
        self.stats = {"elections": 0, "leader_changes": 0, "snapshots_sent": 0,
                      "snapshots_installed": 0}
        self._reset_election_timer(now)
        self._maybe_admitted(self.membership)

    # -- what the driver reads --------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    @property
    def fenced(self) -> bool:
        """Whether this node waits to be admitted before it votes or stands again."""
        return self.fence is not None

    def progress(self) -> dict[str, int]:
        """Followers' match indexes (leader only; empty otherwise)."""
        return {peer: p.match_index for peer, p in self._progress.items()}

    def next_deadline(self) -> float:
        if self.role is Role.LEADER:
            deadline = min(self._next_heartbeat_s, self._quorum_check_s)
            if self._transfer_to is not None:
                deadline = min(deadline, self._transfer_until)
            return deadline
        return self._election_deadline_s

    def ready(self) -> Ready:
        if self._broadcast_wanted:
            self._broadcast_wanted = False
            if self.role is Role.LEADER:
                self._broadcast_append(self._now)
        ready = self._ready
        hard = HardState(self.term, self.voted_for, self.fence)
        if hard != self._hard_saved:
            ready.hard_state = hard
        end = min(self.commit_index, self._persisted if self.role is not Role.LEADER
                  else self.log.last_index)
        if end > self._handed:
            start = max(self._handed + 1, self.log.first_index)
            ready.committed = [self.log.entry(i) for i in range(start, end + 1)]
        self._ready = Ready()
        return ready

    def advance(self, ready: Ready) -> None:
        """The driver persisted, sent and applied ``ready``."""
        if ready.hard_state is not None:
            self._hard_saved = ready.hard_state
        if ready.snapshot is not None:
            self._persisted = max(self._persisted, ready.snapshot.meta.index)
        if ready.entries:
            # Only entries still in the log count: a truncation may have overtaken this
            # disk write (the driver receives while it writes).
            durable = [e.index for e in ready.entries if self.log.term_at(e.index) == e.term]
            if durable:
                self._persisted = max(self._persisted, self._contiguous(durable))
        if ready.truncate_from is not None:
            self._persisted = min(self._persisted, self.log.last_index)
        if ready.committed:
            self._handed = max(self._handed, ready.committed[-1].index)
            if self.role is not Role.LEADER and self.leader is not None and \
                    self.config.lease_s > 0:
                self._send(Applied(self.term, self.id, self.leader, self._handed))
        if self.role is Role.LEADER:
            self._maybe_commit()
            self._advance_stable(self._now)

    def _contiguous(self, indexes: list[int]) -> int:
        """The end of the run of still-valid indexes that starts this Ready's entries."""
        end = indexes[0]
        for index in indexes[1:]:
            if index != end + 1:
                break
            end = index
        return end

    # -- inputs: client requests ------------------------------------------------------------

    def propose(self, now: float, data: bytes, kind: EntryKind = EntryKind.COMMAND) -> Entry:
        """Append a command; it is committed when it appears in ``Ready.committed`` with the
        same index and term (a different term there means it was lost)."""
        if self.role is not Role.LEADER or self._transfer_to is not None:
            raise NotLeader(self.leader if self.role is not Role.LEADER else None)
        self._now = now
        entry = Entry(self.log.last_index + 1, self.term, kind, data)
        self._append_own(entry)
        self._broadcast_wanted = True
        return entry

    def change_membership(self, now: float, membership: Membership) -> Entry:
        """Single-server change: one at a time, after this term's first commit."""
        if self.role is not Role.LEADER or self._transfer_to is not None:
            raise NotLeader(self.leader if self.role is not Role.LEADER else None)
        if not self._committed_in_term() or self._membership_index > self.commit_index:
            raise ChangeInProgress("a membership change is still being committed")
        old = self.membership
        if len(old.voters ^ membership.voters) > 1:
            raise ValueError("change one voter at a time")
        if not membership.voters:
            raise ValueError("a membership needs at least one voter")
        return self.propose(now, membership.encode(), EntryKind.MEMBERSHIP)

    def read_index(self, now: float, context: object) -> None:
        """Ask for a linearizable read point; the answer comes as a ``ReadState``."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if not self._committed_in_term():
            self._waiting_reads.append(context)
            return
        self._start_read(now, context)

    def transfer_leadership(self, now: float, target: str | None = None) -> str | None:
        """Hand leadership to ``target`` (or the most up-to-date voter); the chosen one."""
        if self.role is not Role.LEADER:
            return None
        voters = [v for v in self.membership.voters if v != self.id and v in self._progress]
        if target is None:
            if not voters:
                return None
            target = max(sorted(voters), key=lambda v: self._progress[v].match_index)
        if target not in voters:
            return None
        self._transfer_to = target
        self._transfer_until = now + self.config.transfer_timeout_s
        self._maybe_send_timeout_now(now)
        return target

    def snapshot_meta(self, index: int) -> SnapshotMeta:
        """The meta of a snapshot of the state after applying ``index`` (<= applied)."""
        term = self.log.term_at(index)
        if term is None or index > self._handed:
            raise ValueError(f"index {index} is not applied or no longer in the log")
        return SnapshotMeta(index, term, self.log.membership_at(index))

    def compact(self, snapshot: SnapshotMeta) -> None:
        """The driver saved a snapshot of the applied state: forget the log it covers."""
        if snapshot.index > self._handed:
            raise ValueError("cannot compact past what was applied")
        self.log.compact(snapshot)

    # -- inputs: time and messages ----------------------------------------------------------

    def tick(self, now: float) -> None:
        self._now = now
        if self.role is Role.LEADER:
            if now >= self._quorum_check_s:
                self._check_quorum(now)
                if self.role is not Role.LEADER:
                    return
            if self._transfer_to is not None and now >= self._transfer_until:
                self._transfer_to = None
            self._advance_stable(now)
            if now >= self._next_heartbeat_s:
                self._broadcast_append(now)
            return
        if now >= self._election_deadline_s:
            if self.id in self.membership.voters and not self.fenced:
                self._start_pre_vote(now)
            else:
                self._reset_election_timer(now)

    def receive(self, now: float, msg: Message) -> None:
        self._now = now
        if msg.dest != self.id:
            return
        if msg.term > self.term:
            if isinstance(msg, VoteRequest) and not msg.transfer and self._in_lease(now):
                return  # a leader is alive: do not let this candidate disrupt it
            if isinstance(msg, VoteRequest) and msg.pre_vote:
                pass  # a pre-vote never changes anyone's term
            elif isinstance(msg, VoteResponse) and msg.pre_vote and msg.granted:
                pass  # granted pre-votes carry the proposed term, not the voter's
            else:
                leader = msg.source if isinstance(msg, (AppendRequest, SnapshotRequest)) \
                    else None
                self._become_follower(now, msg.term, leader)
        elif msg.term < self.term:
            self._answer_stale(msg)
            return
        if isinstance(msg, VoteRequest):
            self._on_vote_request(now, msg)
        elif isinstance(msg, VoteResponse):
            self._on_vote_response(now, msg)
        elif isinstance(msg, AppendRequest):
            self._on_append(now, msg)
        elif isinstance(msg, AppendResponse):
            self._on_append_response(now, msg)
        elif isinstance(msg, SnapshotRequest):
            self._on_snapshot(now, msg)
        elif isinstance(msg, SnapshotResponse):
            self._on_snapshot_response(now, msg)
        elif isinstance(msg, TimeoutNow):
            if self.id in self.membership.voters and self.role is not Role.LEADER \
                    and not self.fenced:
                self._start_election(now, transfer=True)
        elif isinstance(msg, Applied):
            if self.role is Role.LEADER:
                self._holders.applied(msg.source, msg.applied)
                self._advance_stable(now)

    # -- elections --------------------------------------------------------------------------

    def _reset_election_timer(self, now: float) -> None:
        if self.membership.voters == {self.id} and not self.fenced:
            self._election_deadline_s = now  # alone: nobody else can lead, so do not wait
            return
        timeout = self.config.election_timeout_s
        self._election_deadline_s = now + self._rng.uniform(timeout, 2 * timeout)

    def _in_lease(self, now: float) -> bool:
        if self.role is Role.LEADER:
            return True
        return self.leader is not None and \
            now - self._heard_leader_s < self.config.election_timeout_s

    def _log_ok(self, last_index: int, last_term: int) -> bool:
        return (last_term, last_index) >= (self.log.last_term, self.log.last_index)

    def _start_pre_vote(self, now: float) -> None:
        self.role = Role.PRE_CANDIDATE
        self.leader = None
        self._votes = {self.id}
        self._reset_election_timer(now)
        if self._won():
            self._start_election(now)
            return
        for voter in sorted(self.membership.voters - {self.id}):
            self._send(VoteRequest(self.term + 1, self.id, voter, self.log.last_index,
                                   self.log.last_term, pre_vote=True))

    def _start_election(self, now: float, *, transfer: bool = False) -> None:
        self.stats["elections"] += 1
        self.role = Role.CANDIDATE
        self.term += 1
        self.voted_for = self.id
        self.leader = None
        self._votes = {self.id}
        self._reset_election_timer(now)
        if self._won():
            self._become_leader(now)
            return
        for voter in sorted(self.membership.voters - {self.id}):
            self._send(VoteRequest(self.term, self.id, voter, self.log.last_index,
                                   self.log.last_term, transfer=transfer))

    def _won(self) -> bool:
        return len(self._votes & self.membership.voters) >= self.membership.quorum()

    def _on_vote_request(self, now: float, msg: VoteRequest) -> None:
        if now < self._no_votes_until and not msg.transfer:
            self._send(VoteResponse(self.term, self.id, msg.source, False, msg.pre_vote))
            return
        if msg.pre_vote:
            granted = msg.term > self.term and self._log_ok(msg.last_index, msg.last_term) \
                and not self._in_lease(now) and not self.fenced
            self._send(VoteResponse(msg.term if granted else self.term, self.id, msg.source,
                                    granted, pre_vote=True))
            return
        granted = self.voted_for in (None, msg.source) and \
            self._log_ok(msg.last_index, msg.last_term) and not self.fenced
        if granted:
            self.voted_for = msg.source
            self._reset_election_timer(now)
        self._send(VoteResponse(self.term, self.id, msg.source, granted))

    def _on_vote_response(self, now: float, msg: VoteResponse) -> None:
        if msg.pre_vote and self.role is Role.PRE_CANDIDATE and msg.term == self.term + 1:
            if msg.granted:
                self._votes.add(msg.source)
                if self._won():
                    self._start_election(now)
        elif not msg.pre_vote and self.role is Role.CANDIDATE and msg.term == self.term:
            if msg.granted:
                self._votes.add(msg.source)
                if self._won():
                    self._become_leader(now)

    def _become_follower(self, now: float, term: int, leader: str | None) -> None:
        if term > self.term or leader != self.leader:
            self._lease.reset()
            self.leader_lease_s = 0.0  # until the new leader says
        if term > self.term:
            self.term = term
            self.voted_for = None
        was_leader = self.role is Role.LEADER
        self.role = Role.FOLLOWER
        if leader is not None and leader != self.leader:
            self.stats["leader_changes"] += 1
        self.leader = leader
        if leader is not None:
            self._heard_leader_s = now
        self._progress = {}
        self._transfer_to = None
        self._term_started_index = 0
        if was_leader or self._reads or self._waiting_reads:
            self._fail_reads()
        self._reset_election_timer(now)

    def _become_leader(self, now: float) -> None:
        self.role = Role.LEADER
        self.leader = self.id
        self.stats["leader_changes"] += 1
        self._transfer_to = None
        self._progress = {peer: _Progress(self.log.last_index + 1, last_heard_s=now)
                          for peer in self.membership.members - {self.id}}
        self._quorum_check_s = now + self.config.election_timeout_s
        self._lease.reset()
        self.leader_lease_s = self.config.lease_s
        self._holders.start_term(self.membership.members - {self.id}, now)
        self._round_sent.clear()
        self._append_own(Entry(self.log.last_index + 1, self.term, EntryKind.NOOP))
        self._term_started_index = self.log.last_index
        self._broadcast_append(now)

    def _check_quorum(self, now: float) -> None:
        window = self.config.election_timeout_s
        heard = {p for p, prog in self._progress.items() if now - prog.last_heard_s < window}
        if len((heard | {self.id}) & self.membership.voters) < self.membership.quorum():
            self._become_follower(now, self.term, None)
            return
        # Checked every heartbeat, so a cut-off leader steps down within about one timeout.
        self._quorum_check_s = now + self.config.heartbeat_interval_s

    # -- replication: leader ----------------------------------------------------------------

    def _append_own(self, entry: Entry) -> None:
        self.log.append([entry])
        self._ready.entries.append(entry)
        if entry.kind is EntryKind.MEMBERSHIP:
            self._set_membership(entry.index, Membership.decode(entry.data))

    def _set_membership(self, index: int, membership: Membership) -> None:
        self._membership_index, self.membership = index, membership
        if self.role is Role.LEADER:
            for peer in membership.members - {self.id}:
                self._progress.setdefault(peer, _Progress(self.log.last_index + 1))
            for peer in set(self._progress) - membership.members:
                del self._progress[peer]

    def _broadcast_append(self, now: float) -> None:
        self._round += 1
        self._round_sent[self._round] = now
        if len(self._round_sent) > 64:
            del self._round_sent[min(self._round_sent)]
        for peer in sorted(self._progress):
            self._send_append(now, peer)
        self._next_heartbeat_s = now + self.config.heartbeat_interval_s

    def _send_append(self, now: float, peer: str) -> None:
        progress = self._progress[peer]
        if progress.next_index <= self.log.snapshot.index:
            self._send_snapshot(now, peer, progress)
            return
        prev = progress.next_index - 1
        prev_term = self.log.term_at(prev)
        assert prev_term is not None, (prev, self.log.snapshot, self.log.last_index)
        # Probing (match unknown): resend from next_index each time. Replicating: pipeline,
        # moving next_index past what is in flight; a lost request shows as a rejection.
        entries = self.log.slice(progress.next_index, self.log.last_index + 1,
                                 self.config.max_append_bytes)
        if progress.replicating and entries:
            progress.next_index = entries[-1].index + 1
        # The follower commits at most up to what this request proves it holds.
        # Every request says how long this leader's leases are; it names the round a
        # lease is anchored at only when it grants one.
        lease_round, lease_ms = 0, int(self.config.lease_s * 1000)
        if progress.round_acked and self._leads_under_lease(now) and \
                self._holders.grant(peer, progress.round_acked_s):
            lease_round = progress.round_acked
        self._send(AppendRequest(self.term, self.id, peer, prev, prev_term, entries,
                                 self.commit_index, self._round, lease_round, lease_ms,
                                 self.stable_index))

    def _send_snapshot(self, now: float, peer: str, progress: _Progress) -> None:
        if progress.snapshot_sent_s is not None and \
                now - progress.snapshot_sent_s < self.config.election_timeout_s:
            return
        progress.snapshot_sent_s = now
        self.stats["snapshots_sent"] += 1
        self._send(SnapshotRequest(self.term, self.id, peer, self.log.snapshot))

    def _on_append_response(self, now: float, msg: AppendResponse) -> None:
        progress = self._progress.get(msg.source)
        if self.role is not Role.LEADER or progress is None:
            return
        progress.last_heard_s = now
        if msg.round > progress.round_acked:
            progress.round_acked, progress.round_acked_s = msg.round, now
        if msg.success:
            if msg.match_index > progress.match_index:
                progress.match_index, progress.match_round = msg.match_index, msg.round
            progress.next_index = max(progress.next_index, progress.match_index + 1)
            progress.replicating = True
            self._maybe_commit()
            if self.role is not Role.LEADER:
                return  # the commit removed us
            self._maybe_send_timeout_now(now)
            if progress.next_index <= self.log.last_index:
                self._send_append(now, msg.source)
        elif msg.prev_index >= progress.match_index:
            if msg.conflict_term == 0 and msg.conflict_index <= progress.match_index \
                    and msg.round > progress.match_round:
                # Its log ends before what it acknowledged (in an earlier round, so this is
                # no reordering): its disk was replaced. Those acknowledgements are void.
                progress.match_index = progress.match_round = 0
            was, progress.replicating = progress.next_index, False
            progress.next_index = self._backtrack(msg, progress)
            if progress.next_index != was:
                self._send_append(now, msg.source)  # else the same request would fail again
        self._serve_reads()

    def _backtrack(self, msg: AppendResponse, progress: _Progress) -> int:
        """Skip a whole conflicting term per round trip (the paper's 5.3 optimisation)."""
        if msg.conflict_term:
            last = self.log.last_index_of_term(msg.conflict_term)
            if last is not None:
                return max(progress.match_index + 1, min(last + 1, msg.prev_index))
        return max(progress.match_index + 1, min(msg.conflict_index, msg.prev_index))

    def _on_snapshot_response(self, now: float, msg: SnapshotResponse) -> None:
        progress = self._progress.get(msg.source)
        if self.role is not Role.LEADER or progress is None:
            return
        progress.last_heard_s = now
        progress.snapshot_sent_s = None
        progress.match_index = max(progress.match_index, msg.match_index)
        progress.next_index = progress.match_index + 1
        progress.replicating = False
        self._maybe_commit()
        if self.role is Role.LEADER:
            self._send_append(now, msg.source)

    def _maybe_commit(self) -> None:
        """Commit the highest index of this term a quorum of voters (self included) holds."""
        matches = [p.match_index for peer, p in self._progress.items()
                   if peer in self.membership.voters]
        if self.id in self.membership.voters:
            matches.append(self._persisted)
        if len(matches) < self.membership.quorum():
            return
        matches.sort(reverse=True)
        candidate = matches[self.membership.quorum() - 1]
        if candidate > self.commit_index and self.log.term_at(candidate) == self.term:
            self.commit_index = candidate
            if self.config.lease_s > 0:
                self._broadcast_wanted = True  # lease holders apply it, so writes can be acked
            if self._committed_in_term() and self._waiting_reads:
                waiting, self._waiting_reads = self._waiting_reads, []
                for context in waiting:
                    self._start_read_index_only(context)
                self._broadcast_wanted = True  # confirm them now, not at the heartbeat
            if self.id not in self.membership.voters and \
                    self._membership_index <= self.commit_index:
                self._become_follower(self._now, self.term, None)  # removed: step down

    def _committed_in_term(self) -> bool:
        """This leader's first entry (its no-op) is committed: its commit index is current."""
        return self.role is Role.LEADER and self.commit_index >= self._term_started_index > 0

    def _maybe_send_timeout_now(self, now: float) -> None:
        target = self._transfer_to
        if target is None or self.role is not Role.LEADER:
            return
        progress = self._progress.get(target)
        if progress is not None and progress.match_index == self.log.last_index:
            self._send(TimeoutNow(self.term, self.id, target))

    # -- reads ------------------------------------------------------------------------------

    def _start_read(self, now: float, context: object) -> None:
        self._now = now
        self._start_read_index_only(context)
        self._broadcast_wanted = True

    def _start_read_index_only(self, context: object) -> None:
        self._reads.append(_PendingRead(context, self.commit_index, self._round + 1))
        if len(self.membership.voters - {self.id}) == 0:
            self._serve_reads()

    def _confirmed_round(self) -> int:
        """The latest round a quorum of voters answered (past every round when this node
        is a quorum by itself)."""
        acked = sorted((p.round_acked for peer, p in self._progress.items()
                        if peer in self.membership.voters), reverse=True)
        need = self.membership.quorum() - (1 if self.id in self.membership.voters else 0)
        if need <= 0:
            return self._round + 1
        return acked[need - 1] if len(acked) >= need else 0

    def _leads_under_lease(self, now: float) -> bool:
        """This leader cannot have been replaced yet (``node.raft.leases``): it may read
        its own state, and make promises to followers."""
        if self.config.lease_s <= 0 or self.role is not Role.LEADER or \
                self._transfer_to is not None or not self._committed_in_term():
            return False
        confirmed = self._confirmed_round()
        if confirmed > self._round:
            return True  # a quorum by itself: nobody else can be elected
        sent = self._round_sent.get(confirmed)
        return sent is not None and now < leader_lease_until(
            sent, self.config.election_timeout_s, self.config.clock_drift)

    def lease_read_index(self, now: float) -> int | None:
        """With a valid read lease, the index this node must have applied for its own state
        to be a linearizable read now; None without one (use ReadIndex)."""
        if self.role is Role.LEADER:
            return self.commit_index if self._leads_under_lease(now) else None
        if self.leader is not None and self._lease.valid(now):
            return self._lease.index
        return None

    def _advance_stable(self, now: float) -> None:
        if self.role is not Role.LEADER:
            return
        if self.config.lease_s <= 0:
            # Without leases nobody waits on it: applied on the leader is enough.
            self.stable_index = max(self.stable_index, self._handed)
            return
        moved = self._holders.advance(now, min(self._handed, self.commit_index)) and \
            self._holders.stable > self.stable_index
        self.stable_index = max(self.stable_index, self._holders.stable)
        if moved and self._progress:
            self._broadcast_wanted = True  # followers learn it now: their reads may wait on it

    def _serve_reads(self) -> None:
        if not self._reads:
            return
        confirmed = self._confirmed_round()
        still = []
        for read in self._reads:
            if read.round <= confirmed:
                self._ready.reads.append(ReadState(read.context, read.index))
            else:
                still.append(read)
        self._reads = still

    def _fail_reads(self) -> None:
        for read in self._reads:
            self._ready.reads.append(ReadState(read.context, None))
        for context in self._waiting_reads:
            self._ready.reads.append(ReadState(context, None))
        self._reads, self._waiting_reads = [], []

    # -- replication: follower --------------------------------------------------------------

    def _heard_from_leader(self, now: float, leader: str) -> None:
        if self.role is not Role.FOLLOWER or self.leader != leader:
            self._become_follower(now, self.term, leader)
        self._heard_leader_s = now
        self._reset_election_timer(now)

    def _on_append(self, now: float, msg: AppendRequest) -> None:
        self._heard_from_leader(now, msg.source)
        prev_term = self.log.term_at(msg.prev_index)
        if msg.prev_index < self.log.snapshot.index:
            # Everything up to our snapshot is committed and so matches the leader.
            skip = self.log.snapshot.index - msg.prev_index
            entries = msg.entries[skip:]
            prev_index, prev_term = self.log.snapshot.index, self.log.snapshot.term
        else:
            entries, prev_index = msg.entries, msg.prev_index
        if prev_term is None or (prev_index == msg.prev_index and prev_term != msg.prev_term):
            self._lease.answered(msg.round, now)
            self._reject_append(msg)
            return
        truncated = self.log.append(entries)
        if truncated is not None:
            self._ready.truncate_from = truncated if self._ready.truncate_from is None \
                else min(self._ready.truncate_from, truncated)
            self._ready.entries = [e for e in self._ready.entries if e.index < truncated]
            self._persisted = min(self._persisted, truncated - 1)
            if self._membership_index >= truncated:
                self._membership_index, self.membership = self.log.latest_membership()
        new = [e for e in entries if e.index > self._persisted and
               (not self._ready.entries or e.index > self._ready.entries[-1].index)]
        self._ready.entries.extend(new)
        for entry in new:
            if entry.kind is EntryKind.MEMBERSHIP:
                self._set_membership(entry.index, Membership.decode(entry.data))
                self._maybe_admitted(self.membership)
        last_new = prev_index + len(entries)
        if msg.commit > self.commit_index:
            self.commit_index = max(self.commit_index, min(msg.commit, last_new))
        self._lease.granted(msg.lease_round, msg.lease_ms / 1000, msg.commit)
        self.leader_lease_s = msg.lease_ms / 1000
        self.stable_index = max(self.stable_index, msg.stable)
        self._lease.answered(msg.round, now)
        self._send(AppendResponse(self.term, self.id, msg.source, True, last_new,
                                  prev_index=msg.prev_index, round=msg.round))

    def _reject_append(self, msg: AppendRequest) -> None:
        if msg.prev_index > self.log.last_index:
            conflict_index, conflict_term = self.log.last_index + 1, 0
        else:
            conflict_term = self.log.term_at(msg.prev_index) or 0
            conflict_index = self.log.first_index_of_term(conflict_term, msg.prev_index)
        self._send(AppendResponse(self.term, self.id, msg.source, False, 0, conflict_index,
                                  conflict_term, msg.prev_index, msg.round))

    def _on_snapshot(self, now: float, msg: SnapshotRequest) -> None:
        self._heard_from_leader(now, msg.source)
        meta = msg.meta
        if meta.index <= self.commit_index:
            self._send(SnapshotResponse(self.term, self.id, msg.source, self.commit_index))
            return
        self.stats["snapshots_installed"] += 1
        keep = self.log.term_at(meta.index) == meta.term
        self.log.compact(meta)
        if keep:
            self._persisted = max(self._persisted, meta.index)
        else:
            # Our suffix conflicts with the snapshot: it goes from the disk too.
            cut = meta.index + 1
            self._ready.truncate_from = cut if self._ready.truncate_from is None \
                else min(self._ready.truncate_from, cut)
            self._ready.entries = [e for e in self._ready.entries if e.index <= meta.index]
            self._persisted = meta.index
        self._ready.snapshot = msg
        self.commit_index = max(self.commit_index, meta.index)
        self._handed = max(self._handed, meta.index)
        self._membership_index, self.membership = self.log.latest_membership()
        self._maybe_admitted(meta.membership)
        self._send(SnapshotResponse(self.term, self.id, msg.source, meta.index))

    def _maybe_admitted(self, membership: Membership) -> None:
        """End the fence once this node holds a membership that admits it: its log now
        holds everything committed before, and in this term a leader already reigns, so
        it counts as having voted for it (it may have voted in this term before its disk
        was replaced, and must not vote again)."""
        if self.fence is None or membership.fence_of(self.id) != self.fence:
            return
        self.fence = None
        if self.voted_for is None:
            self.voted_for = self.leader

    # -- plumbing ---------------------------------------------------------------------------

    def _answer_stale(self, msg: Message) -> None:
        """Tell a deposed leader or a late candidate about the newer term."""
        if isinstance(msg, AppendRequest):
            self._send(AppendResponse(self.term, self.id, msg.source, False, 0,
                                      prev_index=msg.prev_index))
        elif isinstance(msg, VoteRequest):
            self._send(VoteResponse(self.term, self.id, msg.source, False, msg.pre_vote))
        elif isinstance(msg, SnapshotRequest):
            self._send(SnapshotResponse(self.term, self.id, msg.source, 0))

    def _send(self, msg: Message) -> None:
        self._ready.messages.append(msg)

    def __repr__(self) -> str:
        return (f"<Raft {self.id} {self.role.value} term={self.term} "
                f"last={self.log.last_index} commit={self.commit_index}>")


class ChangeInProgress(Exception):
    """A membership change is already under way; try again when it has committed."""
