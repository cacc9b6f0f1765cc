"""The SWIM membership protocol as a sans-I/O state machine (with Lifeguard).

``Swim`` never touches a socket or a clock. Its inputs are ``tick(now)``,
``receive(now, from_addr, packet)``, ``merge(now, push_pull)``, ``join`` and
``leave``; its outputs are effects drained with ``drain()``: datagrams to send
(``Send``), full-state exchanges to run over a stream (``PushPullWith``) and
membership changes (``MemberChanged``). ``next_deadline()`` says when ``tick``
must run next. A driver (``node.gossip.driver``) does the I/O; the simulator
runs hundreds of these in one process on a mock clock.

Failure detection: every probe period one member is pinged (round robin over
a shuffled list). No Ack within the probe timeout: ``indirect_checks`` others
ping it on our behalf and answer Ack or, Lifeguard's addition, Nack. No Ack by
the end of the period: the member is suspected. A suspicion the member does
not refute (with a higher incarnation) in time makes it dead.

Update rules, per member, ordered by incarnation (only the member raises its
own): Alive(i) beats Suspect/Dead(j) when i > j and Alive(j) when i > j;
Suspect(i) beats Alive(j) when i >= j; Dead(i) beats Alive/Suspect(j) when
i >= j. A node that hears itself suspected or declared dead refutes with an
incarnation above the claim.
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from node.gossip.broadcast import BroadcastQueue
from node.gossip.config import GossipConfig
from node.gossip.members import Member, MembershipView, MemberState
from node.gossip.messages import (Ack, Alive, Dead, MemberMeta, Nack, Packet, Ping, PingReq,
                                  ProtocolMessage, PushPull, Suspect, Update)
from node.gossip.suspicion import Suspicion, suspicion_bounds

if TYPE_CHECKING:
    import random  # noqa: TID251 - only the type: the generator is seeded and injected

#: Incarnations the wire format can carry are below this (a varint of at most 63 bits).
MAX_INCARNATION = 2**63 - 1

ALIVE, SUSPECT, DEAD, LEFT = (MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD,
                              MemberState.LEFT)


@dataclass(frozen=True, slots=True)
class Send:
    to: str
    packet: Packet


@dataclass(frozen=True, slots=True)
class PushPullWith:
    to: str
    join: bool


@dataclass(frozen=True, slots=True)
class MemberChanged:
    member: Member
    removed: bool = False


Effect = Send | PushPullWith | MemberChanged


@dataclass(slots=True)
class _Entry:
    meta: MemberMeta
    incarnation: int
    state: MemberState
    since_s: float

    def snapshot(self) -> Member:
        m = self.meta
        return Member(m.node_id, m.http_addr, m.gossip_addr, self.state, self.incarnation,
                      m.zone, m.weight, m.tags)

    def as_update(self, me: str) -> Update:
        if self.state is ALIVE:
            return Alive(self.incarnation, self.meta)
        if self.state is SUSPECT:
            return Suspect(self.meta.node_id, self.incarnation, me)
        by = self.meta.node_id if self.state is LEFT else me
        return Dead(self.meta.node_id, self.incarnation, by)


@dataclass(slots=True)
class _Probe:
    seq: int
    target: str
    indirect_at: float
    ends_at: float
    #: The target's incarnation when the probe began: a failure says nothing about a
    #: newer incarnation it announced meanwhile.
    incarnation: int = 0
    acked: bool = False
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class _Relay:
    requester_addr: str
    requester_seq: int
    deadline: float


class Sizer(Protocol):
    """Sizes of encoded gossip, so piggybacking never overflows a datagram.

    The driver and the simulator pass ``node.gossip.wire.WireSizer`` (exact).
    """

    max_datagram_bytes: int

    def update(self, update: Update) -> int: ...

    def datagram(self, message: ProtocolMessage | None) -> int: ...


class EstimatedSizer:
    """A rough estimate, for tests of the core alone."""

    max_datagram_bytes = 1400

    def update(self, update: Update) -> int:
        return 64 if not isinstance(update, Alive) else 160

    def datagram(self, message: ProtocolMessage | None) -> int:
        return 120


class Swim:
    def __init__(self, me: MemberMeta, config: GossipConfig, rng: random.Random, now: float,
                 *, incarnation: int = 0, sizer: Sizer | None = None) -> None:
        self.me = me.node_id
        self.config = config
        self._rng = rng
        self._sizer: Sizer = sizer or EstimatedSizer()
        self._members: dict[str, _Entry] = {self.me: _Entry(me, incarnation, ALIVE, now)}
        self._queue = BroadcastQueue()
        self._effects: list[Effect] = []
        self._suspicions: dict[str, Suspicion] = {}
        self._relays: dict[int, _Relay] = {}
        self._checks: dict[int, str] = {}
        self._probe: _Probe | None = None
        self._probe_order: list[str] = []
        self._seq = 0
        self._seeds: tuple[str, ...] = ()
        self._push_pulls = 0
        self.awareness = 0
        self.leaving = False
        self.version = 1
        #: ``_count()`` as of ``version`` (every change of a state or of the member set
        #: bumps the version, so the count is only redone after one).
        self._live_count = 0
        self._live_count_version = 0
        #: Each member's snapshot, taken when it last changed (``_changed``), and the view
        #: of them as of ``version``: views are asked for far more often than rebuilt.
        self._snapshots: dict[str, Member] = {self.me: self._members[self.me].snapshot()}
        self._view: MembershipView | None = None
        self.stats = {"probes_sent": 0, "probes_failed": 0, "indirect_probes": 0,
                      "suspicions_raised": 0, "suspicions_refuted": 0, "deaths_declared": 0,
                      "final_checks": 0, "final_checks_answered": 0}
        self._next_probe_s = now + rng.uniform(0, config.probe_interval_s)
        self._next_gossip_s = now + config.gossip_interval_s
        self._next_push_pull_s = now + config.push_pull_interval_s * rng.uniform(0.5, 1.0)
        self._next_reap_s = now + config.reap_after_s / 10
        self._next_join_s = math.inf
        self._join_backoff_s = config.probe_interval_s
        self._enqueue(Alive(incarnation, me))

    # -- outputs ---------------------------------------------------------------------------

    def drain(self) -> list[Effect]:
        effects, self._effects = self._effects, []
        return effects

    def view(self) -> MembershipView:
        view = self._view
        if view is None or view.version != self.version:
            snapshots = self._snapshots
            view = self._view = MembershipView(
                tuple(snapshots[k] for k in sorted(snapshots)), self.version)
        return view

    @property
    def incarnation(self) -> int:
        return self._members[self.me].incarnation

    @property
    def own_meta(self) -> MemberMeta:
        return self._members[self.me].meta

    def member(self, node_id: str) -> Member | None:
        return self._snapshots.get(node_id)

    def local_state(self, join: bool = False) -> PushPull:
        return PushPull(self.me, join, tuple(e.as_update(self.me)
                                             for e in self._members.values()))

    def next_deadline(self) -> float:
        # The earliest of the timers (the driver and the simulator ask after every input).
        deadline = min(self._next_push_pull_s, self._next_reap_s, self._next_join_s)
        probe = self._probe
        if probe is None:
            if self._next_probe_s < deadline:
                deadline = self._next_probe_s
        else:
            if probe.ends_at < deadline:
                deadline = probe.ends_at
            if not probe.acked and not probe.indirect_sent and probe.indirect_at < deadline:
                deadline = probe.indirect_at
        if len(self._queue) and self._next_gossip_s < deadline:
            deadline = self._next_gossip_s
        for relay in self._relays.values():
            if relay.deadline < deadline:
                deadline = relay.deadline
        for suspicion in self._suspicions.values():
            at = suspicion.deadline()
            if at < deadline:
                deadline = at
        return deadline

    # -- inputs ----------------------------------------------------------------------------

    def join(self, now: float, seeds: list[str] | tuple[str, ...]) -> None:
        self._seeds = tuple(s for s in seeds if s != self._members[self.me].meta.gossip_addr)
        for seed in self._seeds:
            self._effects.append(PushPullWith(seed, join=True))
        if self._seeds:
            self._next_join_s = now + self._join_backoff_s

    def leave(self, now: float) -> None:
        """Announce a graceful leave: a Dead about ourselves, by ourselves."""
        entry = self._members[self.me]
        entry.incarnation += 1
        self._set_state(entry, LEFT, now)
        self.leaving = True
        self._enqueue(Dead(self.me, entry.incarnation, self.me))
        for target in self._random_members(self.config.gossip_nodes * 2, exclude=()):
            self._send(target.meta.gossip_addr, None)

    def update_meta(self, meta: MemberMeta) -> None:
        """Publish new metadata about ourselves (tags): a fresh incarnation carries it, so
        it beats every older Alive (memberlist's UpdateNode)."""
        if meta.node_id != self.me:
            raise ValueError("a member can only change its own metadata")
        entry = self._members[self.me]
        entry.meta = meta
        entry.incarnation += 1
        self._changed(entry)
        self._enqueue(Alive(entry.incarnation, meta))

    @property
    def pending_updates(self) -> int:
        """Updates still to be piggybacked (a leaving node waits for its farewell to go out)."""
        return len(self._queue)

    def tick(self, now: float) -> None:
        self._expire_relays(now)
        self._advance_probe(now)
        self._expire_suspicions(now)
        if now >= self._next_gossip_s:
            self._gossip()
            self._next_gossip_s = now + self.config.gossip_interval_s
        if now >= self._next_push_pull_s:
            self._schedule_push_pull()
            self._next_push_pull_s = now + self.config.push_pull_interval(self._count())
        if now >= self._next_reap_s:
            self._reap(now)
            self._next_reap_s = now + self.config.reap_after_s / 10
        if now >= self._next_join_s:
            self._retry_join(now)

    def _retry_join(self, now: float) -> None:
        """Until someone answers, ask a seed again, backing off to the push-pull interval."""
        if self._count() > 1 or self.leaving or not self._seeds:
            self._next_join_s = math.inf
            return
        self._effects.append(PushPullWith(self._rng.choice(self._seeds), join=True))
        self._join_backoff_s = min(2 * self._join_backoff_s, self.config.push_pull_interval_s)
        self._next_join_s = now + self._join_backoff_s

    def receive(self, now: float, from_addr: str, packet: Packet) -> None:
        for update in packet.updates:
            self.apply(now, update)
        message = packet.message
        if message is not None:
            self._on_message(now, from_addr, message)

    def merge(self, now: float, remote: PushPull) -> None:
        """Merge a full state: remote suspicions and deaths are only suspicions here,
        so a member that is in fact alive gets the chance to refute them."""
        for state in remote.states:
            if isinstance(state, Dead) and not state.left:
                state = Suspect(state.node_id, state.incarnation, remote.source)
            self.apply(now, state)

    def apply(self, now: float, update: Update) -> None:
        if update.incarnation >= MAX_INCARNATION:
            return  # nobody could refute it: a claim at the ceiling is never legitimate
        if isinstance(update, Alive):
            self._on_alive(now, update)
        elif isinstance(update, Suspect):
            self._on_suspect(now, update)
        else:
            self._on_dead(now, update)

    # -- protocol messages -----------------------------------------------------------------

    def _on_message(self, now: float, from_addr: str, message: ProtocolMessage) -> None:
        if isinstance(message, Ping):
            if message.target == self.me and not self.leaving:
                self._send(from_addr, Ack(message.seq, self.me))
        elif isinstance(message, PingReq):
            seq = self._next_seq()
            # Nack within 80% of the probe timeout: the prober sent this PingReq one probe
            # timeout into its period, and its period is at least two timeouts long.
            self._relays[seq] = _Relay(from_addr, message.seq,
                                       now + 0.8 * self.config.probe_timeout_s)
            self._send(message.target_addr, Ping(seq, self.me, message.target))
        elif isinstance(message, Ack):
            relay = self._relays.pop(message.seq, None)
            if relay is not None:
                self._send(relay.requester_addr, Ack(relay.requester_seq, message.source))
            elif self._probe is not None and self._probe.seq == message.seq:
                self._probe.acked = True
            elif message.seq in self._checks:
                self._checked(now, message.seq)
        elif isinstance(message, Nack):
            if self._probe is not None and self._probe.seq == message.seq:
                self._probe.nacks += 1

    def _expire_relays(self, now: float) -> None:
        for seq, relay in list(self._relays.items()):
            if now >= relay.deadline:
                del self._relays[seq]
                self._send(relay.requester_addr, Nack(relay.requester_seq, self.me))

    # -- probing ---------------------------------------------------------------------------

    def _scale(self) -> int:
        return 1 + self.awareness

    def _advance_probe(self, now: float) -> None:
        probe = self._probe
        if probe is not None and not probe.acked and not probe.indirect_sent \
                and now >= probe.indirect_at:
            self._send_indirect(probe)
        if probe is not None and now >= probe.ends_at:
            self._finish_probe(now, probe)
            probe = self._probe = None
        if probe is None and now >= self._next_probe_s:
            if self.leaving:
                self._next_probe_s = now + self.config.probe_interval_s
            else:
                self._start_probe(now)

    def _start_probe(self, now: float) -> None:
        interval = self.config.probe_interval_s * self._scale()
        target = self._next_probe_target()
        self._next_probe_s = now + interval
        if target is None:
            return
        seq = self._next_seq()
        self._probe = _Probe(seq, target.meta.node_id,
                             now + self.config.probe_timeout_s * self._scale(), now + interval,
                             target.incarnation)
        self.stats["probes_sent"] += 1
        # Lifeguard's buddy system: a suspect hears of its suspicion from whoever probes it,
        # not only by the luck of the epidemic, so it can refute in time.
        buddy = (target.as_update(self.me),) if target.state is SUSPECT else ()
        self._send(target.meta.gossip_addr, Ping(seq, self.me, target.meta.node_id), buddy)

    def _send_indirect(self, probe: _Probe) -> None:
        probe.indirect_sent = True
        target = self._members.get(probe.target)
        if target is None:
            return
        helpers = self._random_members(self.config.indirect_checks, exclude=(probe.target,),
                                       states=(ALIVE,))
        probe.expected_nacks = len(helpers)
        self.stats["indirect_probes"] += len(helpers)
        for helper in helpers:
            self._send(helper.meta.gossip_addr,
                       PingReq(probe.seq, self.me, probe.target, target.meta.gossip_addr))

    def _finish_probe(self, now: float, probe: _Probe) -> None:
        if probe.acked:
            self.awareness = max(0, self.awareness - 1)
            return
        self.stats["probes_failed"] += 1
        missing = probe.expected_nacks - probe.nacks if probe.expected_nacks else 1
        self.awareness = min(self.config.awareness_max - 1, self.awareness + max(0, missing))
        entry = self._members.get(probe.target)
        if entry is not None and entry.state in (ALIVE, SUSPECT) \
                and entry.incarnation == probe.incarnation:
            self.stats["suspicions_raised"] += entry.state is ALIVE
            self._on_suspect(now, Suspect(probe.target, entry.incarnation, self.me))

    def _next_probe_target(self) -> _Entry | None:
        for _ in range(2):
            while self._probe_order:
                entry = self._members.get(self._probe_order.pop())
                if entry is not None and entry.state in (ALIVE, SUSPECT):
                    return entry
            self._probe_order = [k for k, e in self._members.items()
                                 if k != self.me and e.state in (ALIVE, SUSPECT)]
            self._rng.shuffle(self._probe_order)
        return None

    # -- update rules ----------------------------------------------------------------------

    def _on_alive(self, now: float, update: Alive) -> None:
        node_id = update.node_id
        if node_id == self.me:
            if update.incarnation > self.incarnation and not self.leaving:
                self._refute(now, update.incarnation)
            return
        entry = self._members.get(node_id)
        if entry is None:
            entry = self._members[node_id] = _Entry(update.meta, update.incarnation, ALIVE, now)
            self._changed(entry)
            self._enqueue(update)
            return
        if update.incarnation <= entry.incarnation:
            return
        self._end_suspicion(node_id)
        entry.meta, entry.incarnation = update.meta, update.incarnation
        self._set_state(entry, ALIVE, now)
        self._enqueue(update)

    def _on_suspect(self, now: float, update: Suspect) -> None:
        node_id = update.node_id
        if node_id == self.me:
            if not self.leaving:
                # Lifeguard: being suspected hints that our own health is poor. Even an old
                # suspicion is refuted with a new incarnation: whoever still spreads it missed
                # our refutation, and a newer Alive overrides every claim in flight.
                self.awareness = min(self.config.awareness_max - 1, self.awareness + 1)
                self.stats["suspicions_refuted"] += 1
                self._refute(now, update.incarnation)
            return
        entry = self._members.get(node_id)
        if entry is None or update.incarnation < entry.incarnation:
            return
        if entry.state in (DEAD, LEFT):
            return
        suspicion = self._suspicions.get(node_id)
        if entry.state is SUSPECT and suspicion is not None \
                and suspicion.incarnation == update.incarnation:
            if suspicion.confirm(update.by):
                self._enqueue(update)
            return
        entry.incarnation = update.incarnation
        self._set_state(entry, SUSPECT, now)
        self._end_suspicion(node_id)
        self._suspicions[node_id] = self._new_suspicion(now, update)
        self._enqueue(update)

    def _new_suspicion(self, now: float, update: Suspect) -> Suspicion:
        n = self._count()
        low, high = suspicion_bounds(n, self.config.probe_interval_s, self.config.suspicion_mult,
                                     self.config.suspicion_max_mult)
        expected = max(0, int(self.config.suspicion_mult) - 2)
        if n - 2 < expected:
            expected = 0
        return Suspicion(update.incarnation, now, low, high, expected, origin=update.by)

    def _on_dead(self, now: float, update: Dead) -> None:
        node_id = update.node_id
        if node_id == self.me:
            # Not leaving, yet declared dead or gone: a restart (or a false death) to refute.
            if not self.leaving:
                self._refute(now, update.incarnation)
            return
        entry = self._members.get(node_id)
        if entry is None or update.incarnation < entry.incarnation:
            return
        new_state = LEFT if update.left else DEAD
        if entry.state is LEFT or entry.state is new_state:
            return
        self._end_suspicion(node_id)
        entry.incarnation = update.incarnation
        self._set_state(entry, new_state, now)
        self._enqueue(update)

    def _expire_suspicions(self, now: float) -> None:
        for node_id, suspicion in list(self._suspicions.items()):
            if now < suspicion.deadline():
                continue
            entry = self._members.get(node_id)
            if entry is not None and entry.state is SUSPECT and suspicion.check_seq is None \
                    and not self.leaving:
                self._final_check(now, entry, suspicion)
                continue
            self._end_suspicion(node_id)
            if entry is not None and entry.state is SUSPECT:
                self.stats["deaths_declared"] += 1
                self._on_dead(now, Dead(node_id, entry.incarnation, self.me))

    def _final_check(self, now: float, entry: _Entry, suspicion: Suspicion) -> None:
        """Probe the suspect ourselves (with the suspicion attached) before declaring it dead."""
        seq = self._next_seq()
        suspicion.check_seq = seq
        suspicion.check_ends_s = now + self.config.probe_interval_s * self._scale()
        self._checks[seq] = entry.meta.node_id
        self.stats["final_checks"] += 1
        self._send(entry.meta.gossip_addr, Ping(seq, self.me, entry.meta.node_id),
                   (entry.as_update(self.me),))
        for helper in self._random_members(self.config.indirect_checks,
                                           exclude=(entry.meta.node_id,), states=(ALIVE,)):
            self._send(helper.meta.gossip_addr,
                       PingReq(seq, self.me, entry.meta.node_id, entry.meta.gossip_addr))

    def _checked(self, now: float, seq: int) -> None:
        """The suspect answered our final check: it is alive, so give it a fresh suspicion
        period to get its refutation to us (usually already in the same datagram)."""
        node_id = self._checks.pop(seq)
        suspicion = self._suspicions.get(node_id)
        entry = self._members.get(node_id)
        if suspicion is None or suspicion.check_seq != seq or entry is None:
            return
        self.stats["final_checks_answered"] += 1
        self._suspicions[node_id] = self._new_suspicion(
            now, Suspect(node_id, suspicion.incarnation, self.me))

    def _end_suspicion(self, node_id: str) -> None:
        suspicion = self._suspicions.pop(node_id, None)
        if suspicion is not None and suspicion.check_seq is not None:
            self._checks.pop(suspicion.check_seq, None)

    def _refute(self, now: float, claimed: int) -> None:
        entry = self._members[self.me]
        entry.incarnation = max(entry.incarnation, claimed) + 1
        self._changed(entry)
        self._enqueue(Alive(entry.incarnation, entry.meta))

    def _set_state(self, entry: _Entry, state: MemberState, now: float) -> None:
        entry.state = state
        entry.since_s = now
        self._changed(entry)

    def _changed(self, entry: _Entry, removed: bool = False) -> None:
        """Every change of an entry (state, incarnation, meta) or of the member set ends
        here: a new version, a fresh snapshot for ``view``, and the effect."""
        self.version += 1
        member = entry.snapshot()
        if removed:
            del self._snapshots[member.node_id]
        else:
            self._snapshots[member.node_id] = member
        self._effects.append(MemberChanged(member, removed))

    # -- dissemination ---------------------------------------------------------------------

    def _count(self) -> int:
        """Members alive or suspected, ourselves included (counted again after a change)."""
        if self._live_count_version != self.version:
            self._live_count = sum(1 for e in self._members.values()
                                   if e.state is ALIVE or e.state is SUSPECT)
            self._live_count_version = self.version
        return self._live_count

    def _enqueue(self, update: Update) -> None:
        """Queue an update for piggybacking; one too big for any datagram's budget could
        never leave the queue, so it spreads by push-pull only."""
        size = self._sizer.update(update)
        if size <= self.config.piggyback_budget_bytes:
            self._queue.put(update, size)

    def _send(self, to: str, message: ProtocolMessage | None,
              first: tuple[Update, ...] = ()) -> None:
        room = self._sizer.max_datagram_bytes - self._sizer.datagram(message)
        room = min(room, self.config.piggyback_budget_bytes)
        room -= sum(self._sizer.update(u) for u in first)
        updates = list(first) + self._queue.take(room, self._sizer.update,
                                                 self.config.retransmit_limit(self._count()))
        if message is None and not updates:
            return
        self._effects.append(Send(to, Packet(message, tuple(updates))))

    def _gossip(self) -> None:
        if not len(self._queue):
            return
        for target in self._random_members(self.config.gossip_nodes, exclude=()):
            self._send(target.meta.gossip_addr, None)

    def _schedule_push_pull(self) -> None:
        self._push_pulls += 1
        reconnect = self._push_pulls % self.config.reconnect_every == 0
        peers = self._random_members(1, exclude=(), states=(ALIVE,))
        if reconnect or not peers:
            dead = [e.meta.gossip_addr for e in self._members.values() if e.state is DEAD]
            candidates = dead + list(self._seeds)
            if candidates:
                self._effects.append(PushPullWith(self._rng.choice(candidates), join=False))
                return
        if peers:
            self._effects.append(PushPullWith(peers[0].meta.gossip_addr, join=False))

    def _random_members(self, count: int, *, exclude: tuple[str, ...],
                        states: tuple[MemberState, ...] = (ALIVE, SUSPECT)) -> list[_Entry]:
        pool = [e for k, e in self._members.items()
                if k != self.me and k not in exclude and e.state in states]
        return self._rng.sample(pool, min(count, len(pool)))

    def _reap(self, now: float) -> None:
        for node_id, entry in list(self._members.items()):
            if node_id != self.me and entry.state in (DEAD, LEFT) \
                    and now - entry.since_s >= self.config.reap_after_s:
                del self._members[node_id]
                self._changed(entry, removed=True)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def __repr__(self) -> str:
        return f"<Swim {self.me} inc={self.incarnation} members={len(self._members)}>"
