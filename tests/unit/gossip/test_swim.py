"""The SWIM core (node.gossip.swim), driven by hand: packets are fed between cores directly.

Each test builds one or a few ``Swim`` objects, ticks them at their own
deadlines and hands the datagrams they emit to each other (or drops them), so
every step of the protocol is visible. No simulator, no trio, no wall clock;
every random choice comes from a seeded ``random.Random``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import replace
from types import MappingProxyType
from typing import TypeVar

import pytest

from node.gossip.config import LAN, LOCAL, GossipConfig
from node.gossip.members import MemberState
from node.gossip.messages import (Ack, Alive, Dead, MemberMeta, Nack, Packet, Ping, PingReq,
                                  ProtocolMessage, PushPull, Suspect, Update)
from node.gossip.suspicion import suspicion_bounds
from node.gossip.swim import Effect, MemberChanged, PushPullWith, Send, Swim
from node.gossip.wire import (MAX_PACKET_BYTES, WireSizer, datagram_size,
                              seal_packet, update_size)

ALIVE, SUSPECT, DEAD, LEFT = (MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD,
                              MemberState.LEFT)
#: Awareness capped at 0: probe and check periods never stretch, so timings are exact.
STEADY = replace(LAN, awareness_max=1)
M = TypeVar("M", Ping, PingReq, Ack, Nack)


def addr(i: int) -> str:
    return f"10.0.0.{i}:7946"


def nid(i: int) -> str:
    return f"n{i}"


def meta(i: int, http: str = "") -> MemberMeta:
    return MemberMeta(nid(i), addr(i), http or f"10.0.0.{i}:80")


class Node:
    """One core with its own notion of now; ``log`` keeps every effect with its time."""

    def __init__(self, i: int, peers: Iterable[int] = (), *, config: GossipConfig = LAN,
                 seed: int = 0, incarnation: int = 0, sizer: WireSizer | None = None) -> None:
        self.i = i
        self.swim = Swim(meta(i), config, random.Random(seed), 0.0, incarnation=incarnation,
                         sizer=sizer)
        for p in peers:
            self.swim.apply(0.0, Alive(0, meta(p)))
        self.swim.drain()
        self.now = 0.0
        self.log: list[tuple[float, Effect]] = []

    @property
    def addr(self) -> str:
        return addr(self.i)

    def _record(self) -> list[Effect]:
        effects = self.swim.drain()
        self.log.extend((self.now, e) for e in effects)
        return effects

    def step(self) -> list[Effect]:
        """Tick once, at the core's next deadline (or now, if that is already past)."""
        self.now = max(self.now, self.swim.next_deadline())
        self.swim.tick(self.now)
        assert self.swim.next_deadline() > self.now, "tick left a deadline in the past"
        return self._record()

    def run_until(self, t: float,
                  respond: Callable[[Node, list[Effect]], None] | None = None) -> list[Effect]:
        """Tick at every deadline up to ``t`` (inclusive); ``respond`` sees each tick's output."""
        out: list[Effect] = []
        while self.swim.next_deadline() <= t:
            effects = self.step()
            out += effects
            if respond is not None:
                respond(self, effects)
        self.now = max(self.now, t)
        return out

    def receive(self, from_addr: str, message: ProtocolMessage | None,
                updates: tuple[Update, ...] = (), at: float | None = None) -> list[Effect]:
        self.now = self.now if at is None else max(self.now, at)
        self.swim.receive(self.now, from_addr, Packet(message, updates))
        return self._record()

    def apply(self, *updates: Update) -> list[Effect]:
        for u in updates:
            self.swim.apply(self.now, u)
        return self._record()

    def state(self, i: int) -> MemberState | None:
        m = self.swim.member(nid(i))
        return m.state if m else None

    def until_ping(self, limit_s: float = 100.0, to: int | None = None,
                   respond: Callable[[Node, list[Effect]], None] | None = None
                   ) -> tuple[str, Ping]:
        """Tick until the core sends a Ping (to ``to``, if given); return it with its address."""
        end = self.now + limit_s
        while self.now < end:
            effects = self.step()
            found = [(s.to, s.packet.message) for s in sends(effects)
                     if isinstance(s.packet.message, Ping)
                     and (to is None or s.to == addr(to))]
            if respond is not None:
                respond(self, effects)
            if found:
                to_addr, ping = found[0]
                assert isinstance(ping, Ping)
                return to_addr, ping
        raise AssertionError("no Ping sent")


def sends(effects: Iterable[Effect]) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def messages(effects: Iterable[Effect], kind: type[M]) -> list[tuple[str, M]]:
    return [(s.to, s.packet.message) for s in sends(effects)
            if isinstance(s.packet.message, kind)]


def changes(effects: Iterable[Effect]) -> list[MemberChanged]:
    return [e for e in effects if isinstance(e, MemberChanged)]


def carried(effects: Iterable[Effect]) -> list[Update]:
    return [u for s in sends(effects) for u in s.packet.updates]


def ack_pings_from(alive: set[int]) -> Callable[[Node, list[Effect]], None]:
    """A responder: members in ``alive`` answer every Ping for them at once."""
    def respond(node: Node, effects: list[Effect]) -> None:
        for to, ping in messages(effects, Ping):
            target = int(ping.target[1:])
            if target in alive and to == addr(target):
                node.receive(to, Ack(ping.seq, ping.target))
    return respond


class Wires:
    """A few nodes delivering each other's datagrams at once, unless ``drop`` says no."""

    def __init__(self, nodes: Iterable[Node],
                 drop: Callable[[int, int, Packet], bool] = lambda src, dst, p: False) -> None:
        self.nodes = {n.addr: n for n in nodes}
        self.drop = drop
        self.delivered: list[tuple[int, int, Packet]] = []

    def deliver(self, src: Node, effects: list[Effect]) -> None:
        pending = [(src, s) for s in sends(effects)]
        while pending:
            sender, send = pending.pop(0)
            dst = self.nodes.get(send.to)
            if dst is None or self.drop(sender.i, dst.i, send.packet):
                continue
            self.delivered.append((sender.i, dst.i, send.packet))
            dst.now = max(dst.now, sender.now)
            out = dst.receive(sender.addr, send.packet.message, send.packet.updates)
            pending += [(dst, s) for s in sends(out)]


# -- pings and acks ------------------------------------------------------------------------


def test_a_ping_for_this_node_is_acked_to_its_sender() -> None:
    a = Node(1, [2])
    out = a.receive(addr(2), Ping(41, "n2", "n1"))
    assert messages(out, Ack) == [(addr(2), Ack(41, "n1"))]


def test_a_ping_for_another_node_id_is_not_answered() -> None:
    """A restarted node under a new id (or a stale address) must not answer for the old id."""
    a = Node(1, [2])
    out = a.receive(addr(2), Ping(41, "n2", "n7"))
    assert messages(out, Ack) == []
    assert messages(out, Nack) == []


def test_a_leaving_node_does_not_ack() -> None:
    a = Node(1, [2])
    a.swim.leave(a.now)
    a._record()
    assert messages(a.receive(addr(2), Ping(5, "n2", "n1")), Ack) == []


def test_the_ack_goes_back_to_the_address_the_ping_came_from() -> None:
    a = Node(1, [2])
    out = a.receive("192.168.9.9:5555", Ping(3, "n2", "n1"))
    assert messages(out, Ack) == [("192.168.9.9:5555", Ack(3, "n1"))]


# -- probing -------------------------------------------------------------------------------


def test_a_silent_member_gets_ping_reqs_after_the_probe_timeout_then_a_suspicion() -> None:
    a = Node(1, [2, 3, 4, 5])
    to, ping = a.until_ping()
    t0, target = a.now, int(ping.target[1:])
    assert to == addr(target) and ping.source == "n1"
    assert a.swim.stats["probes_sent"] == 1

    before = a.run_until(t0 + LAN.probe_timeout_s - 1e-6)
    assert messages(before, PingReq) == []
    at_timeout = a.run_until(t0 + LAN.probe_timeout_s)
    reqs = messages(at_timeout, PingReq)
    assert len(reqs) == LAN.indirect_checks
    helpers = {to for to, _ in reqs}
    assert len(helpers) == LAN.indirect_checks and addr(target) not in helpers
    assert all(r == PingReq(ping.seq, "n1", nid(target), addr(target)) for _, r in reqs)
    assert a.swim.stats["indirect_probes"] == LAN.indirect_checks

    a.run_until(t0 + LAN.probe_interval_s - 1e-6)
    assert a.state(target) is ALIVE
    end = a.run_until(t0 + LAN.probe_interval_s)
    assert a.state(target) is SUSPECT
    assert [c.member.node_id for c in changes(end)] == [nid(target)]
    assert a.swim.stats["probes_failed"] == 1
    assert a.swim.stats["suspicions_raised"] == 1
    # The suspicion is spread by the next datagrams (the next probe, gossip).
    later = a.run_until(t0 + LAN.probe_interval_s + LAN.gossip_interval_s)
    assert Suspect(nid(target), 0, "n1") in carried(end + later)


def test_with_fewer_members_than_indirect_checks_every_other_member_helps() -> None:
    a = Node(1, [2, 3])
    _, ping = a.until_ping()
    reqs = messages(a.run_until(a.now + LAN.probe_timeout_s), PingReq)
    others = {addr(2), addr(3)} - {addr(int(ping.target[1:]))}
    assert {to for to, _ in reqs} == others


def test_suspect_members_are_not_asked_to_help() -> None:
    a = Node(1, [2, 3, 4, 5])
    a.apply(Suspect("n3", 0, "n9"), Suspect("n4", 0, "n9"))
    _, ping = a.until_ping()
    reqs = messages(a.run_until(a.now + LAN.probe_timeout_s), PingReq)
    assert reqs and {to for to, _ in reqs} == {addr(2), addr(5)} - {addr(int(ping.target[1:]))}


def test_an_ack_in_time_means_no_ping_reqs_and_no_suspicion() -> None:
    a = Node(1, [2, 3, 4, 5])
    _, ping = a.until_ping()
    t0 = a.now
    a.receive(addr(int(ping.target[1:])), Ack(ping.seq, ping.target), at=t0 + 0.1)
    out = a.run_until(t0 + LAN.probe_interval_s)
    assert messages(out, PingReq) == []
    assert a.state(int(ping.target[1:])) is ALIVE
    assert a.swim.stats["probes_failed"] == 0
    assert a.swim.awareness == 0


def test_an_ack_relayed_through_a_ping_req_helper_prevents_suspicion() -> None:
    a, b, c = Node(1, [2, 3], seed=1), Node(2, [1, 3], seed=2), Node(3, [1, 2], seed=3)
    # Only the direct path from 1 to the target is broken.
    target: list[int] = []
    wires = Wires([a, b, c], drop=lambda src, dst, p: src == 1 and dst in target
                  and isinstance(p.message, Ping))
    _, ping = a.until_ping()
    target.append(int(ping.target[1:]))
    helper = ({2, 3} - set(target)).pop()
    t0 = a.now
    reqs = messages(a.run_until(t0 + LAN.probe_timeout_s), PingReq)
    assert reqs == [(addr(helper), PingReq(ping.seq, "n1", ping.target, addr(target[0])))]
    wires.deliver(a, [Send(addr(helper), Packet(reqs[0][1]))])
    hops = [(src, dst, type(p.message).__name__) for src, dst, p in wires.delivered]
    assert hops == [(1, helper, "PingReq"), (helper, target[0], "Ping"),
                    (target[0], helper, "Ack"), (helper, 1, "Ack")]
    relayed = wires.delivered[-1][2].message
    assert relayed == Ack(ping.seq, ping.target)
    a.run_until(t0 + LAN.probe_interval_s)
    assert a.state(target[0]) is ALIVE
    assert a.swim.stats["probes_failed"] == 0 and a.swim.awareness == 0


def test_a_helper_nacks_when_the_target_stays_silent() -> None:
    h = Node(2, [1, 3])
    h.now = 10.0
    out = h.receive(addr(1), PingReq(77, "n1", "n3", addr(3)))
    (to, ping), = messages(out, Ping)
    assert to == addr(3) and ping.source == "n2" and ping.target == "n3"
    # At 80% of the probe timeout, so it reaches the prober before its period ends.
    nack_at = 10.0 + 0.8 * LAN.probe_timeout_s
    assert messages(h.run_until(nack_at - 1e-6), Nack) == []
    assert messages(h.run_until(nack_at), Nack) == [(addr(1), Nack(77, "n2"))]
    assert messages(h.run_until(20.0), Nack) == []  # once


def test_a_helper_relays_the_ack_and_then_sends_no_nack() -> None:
    h = Node(2, [1, 3])
    (_, ping), = messages(h.receive(addr(1), PingReq(77, "n1", "n3", addr(3))), Ping)
    out = h.receive(addr(3), Ack(ping.seq, "n3"), at=0.1)
    assert messages(out, Ack) == [(addr(1), Ack(77, "n3"))]
    assert messages(h.run_until(5.0), Nack) == []
    # A late duplicate of the Ack is not relayed twice.
    assert messages(h.receive(addr(3), Ack(ping.seq, "n3")), Ack) == []


def test_probes_go_round_robin_over_every_member() -> None:
    peers = list(range(2, 12))
    a = Node(1, peers, seed=4)
    targets = []
    for _ in range(3 * len(peers)):
        _, ping = a.until_ping(respond=ack_pings_from(set(peers)))
        targets.append(ping.target)
    for k in range(3):
        rnd = targets[k * len(peers):(k + 1) * len(peers)]
        assert sorted(rnd) == sorted(nid(p) for p in peers)


def test_a_lone_node_sends_no_probes() -> None:
    a = Node(1)
    out = a.run_until(30.0)
    assert messages(out, Ping) == [] and a.swim.stats["probes_sent"] == 0


# -- Lifeguard awareness -------------------------------------------------------------------


def fail_probe(a: Node, nacks: int = 0,
               then: Callable[[Node, list[Effect]], None] | None = None) -> None:
    """Run one probe of a silent member to its end, answering with ``nacks`` Nacks.

    The probe period ends in a tick that also starts the next probe; ``then`` sees its output.
    """
    _, ping = a.until_ping()
    t0, scale = a.now, 1 + a.swim.awareness
    reqs = messages(a.run_until(t0 + LAN.probe_timeout_s * scale), PingReq)
    for to, req in reqs[:nacks]:
        a.receive(to, Nack(req.seq, "n" + to.split(".")[3].split(":")[0]))
    a.run_until(t0 + LAN.probe_interval_s * scale - 1e-9)
    effects = a.step()
    if then is not None:
        then(a, effects)


@pytest.mark.parametrize(("nacks", "rise"), [(0, 3), (1, 2), (2, 1), (3, 0)])
def test_a_failed_probe_raises_awareness_by_the_missing_nacks(nacks: int, rise: int) -> None:
    a = Node(1, [2, 3, 4, 5])
    fail_probe(a, nacks)
    assert a.swim.awareness == rise
    assert a.swim.stats["probes_failed"] == 1


def test_a_failed_probe_without_helpers_raises_awareness_by_one() -> None:
    a = Node(1, [2])
    fail_probe(a)
    assert a.swim.awareness == 1


def test_extra_nacks_never_lower_awareness() -> None:
    a = Node(1, [2, 3, 4, 5])
    _, ping = a.until_ping()
    t0 = a.now
    reqs = messages(a.run_until(t0 + LAN.probe_timeout_s), PingReq)
    for to, req in reqs * 3:
        a.receive(to, Nack(req.seq, "nx"))
    a.run_until(t0 + LAN.probe_interval_s)
    assert a.swim.awareness == 0


def test_nacks_for_another_probe_do_not_count() -> None:
    a = Node(1, [2, 3, 4, 5])
    _, ping = a.until_ping()
    t0 = a.now
    reqs = messages(a.run_until(t0 + LAN.probe_timeout_s), PingReq)
    for to, _ in reqs:
        a.receive(to, Nack(ping.seq + 1000, "nx"))
    a.run_until(t0 + LAN.probe_interval_s)
    assert a.swim.awareness == 3


def test_awareness_is_capped_below_awareness_max() -> None:
    """Every probe fails and no helper answers; suspects are revived so probing goes on."""
    a = Node(1, [2, 3, 4, 5, 6, 7])
    seen = []
    while a.now < 200.0:
        a.step()
        seen.append(a.swim.awareness)
        for m in a.swim.view().members:
            if m.state is SUSPECT:
                a.apply(Alive(m.incarnation + 1, meta(int(m.node_id[1:]))))
    assert max(seen) == LAN.awareness_max - 1
    assert seen == sorted(seen)
    assert a.swim.stats["probes_failed"] >= 3


def test_successful_probes_lower_awareness_one_step_each_down_to_zero() -> None:
    alive = {2, 3, 4, 5, 6}
    a = Node(1, [2, 3, 4, 5, 6])
    fail_probe(a, then=ack_pings_from(alive))  # +3; from here on every member answers
    assert a.swim.awareness == 3
    levels = [3]
    while a.now < 30.0:
        a.run_until(a.now + 0.1, respond=ack_pings_from(alive))
        if a.swim.awareness != levels[-1]:
            levels.append(a.swim.awareness)
    assert levels == [3, 2, 1, 0]
    assert a.swim.stats["probes_failed"] == 1


def test_awareness_stretches_the_probe_period() -> None:
    alive = {2, 3, 4, 5, 6}
    a = Node(1, [2, 3, 4, 5, 6])
    fail_probe(a, then=ack_pings_from(alive))
    a.run_until(a.now + 20.0, respond=ack_pings_from(alive))
    ping_times = [t for t, e in a.log if isinstance(e, Send) and isinstance(e.packet.message, Ping)]
    after = [t for t in ping_times if t >= ping_times[1]]
    gaps = [round(b - t, 6) for t, b in zip(after, after[1:])]
    # Periods started at awareness 3, 2, 1, then 0: (1 + awareness) probe intervals each.
    assert gaps[:5] == [4.0, 3.0, 2.0, 1.0, 1.0]


def test_awareness_stretches_the_probe_timeout() -> None:
    a = Node(1, [2, 3, 4, 5, 6])
    fail_probe(a, nacks=1)  # +2; the next probe (of a silent member) starts at the same tick
    assert a.swim.awareness == 2
    t = a.now
    assert messages(a.run_until(t + 3 * LAN.probe_timeout_s - 1e-6), PingReq) == []
    assert len(messages(a.run_until(t + 3 * LAN.probe_timeout_s), PingReq)) == 3


def test_being_suspected_raises_awareness() -> None:
    a = Node(1, [2])
    a.receive(addr(2), None, (Suspect("n1", 0, "n2"),))
    assert a.swim.awareness == 1


def test_healthy_helpers_nacks_count_when_timeouts_leave_room() -> None:
    """Prober, two healthy helpers and a dead target, 1 ms apart: the helpers' Nacks arrive
    before the probe ends, so the prober's own health is not doubted."""
    config = replace(LOCAL, probe_interval_s=1.0, probe_timeout_s=0.3)
    check_healthy_helpers_keep_awareness(config)


def test_healthy_helpers_nacks_count_with_the_lan_preset() -> None:
    check_healthy_helpers_keep_awareness(LAN)


def check_healthy_helpers_keep_awareness(config: GossipConfig) -> None:
    latency = 0.001
    a = Node(1, [2, 3, 4], config=config, seed=5)
    helpers = {i: Node(i, [1, 2, 3, 4], config=config, seed=i) for i in (2, 3, 4)}
    _, ping = a.until_ping()
    dead = int(ping.target[1:])
    t0 = a.now
    reqs = messages(a.run_until(t0 + config.probe_timeout_s), PingReq)
    assert len(reqs) == 2
    nack_arrivals: list[tuple[float, str, Nack]] = []
    for to, req in reqs:
        h = helpers[int(to.split(".")[3].split(":")[0])]
        h.receive(addr(1), req, at=t0 + config.probe_timeout_s + latency)
        end = h.now + config.probe_timeout_s
        while h.now < end and not nack_arrivals[len(nack_arrivals):]:
            out = h.run_until(min(end, h.now + 0.001))
            found = [(h.now + latency, h.addr, n) for _, n in messages(out, Nack)]
            nack_arrivals += found
            if found:
                break
    assert len(nack_arrivals) == 2
    for at, frm, nack in sorted(nack_arrivals, key=lambda x: x[0]):
        a.run_until(at)
        a.receive(frm, nack, at=at)
    a.run_until(t0 + config.probe_interval_s)
    assert a.state(dead) is SUSPECT
    assert a.swim.awareness == 0


# -- refutation ----------------------------------------------------------------------------


@pytest.mark.parametrize(("mine", "claimed", "after"), [(0, 0, 1), (2, 2, 3), (2, 7, 8),
                                                         (5, 3, 6)])
def test_a_suspicion_about_self_is_refuted_with_a_higher_incarnation(
        mine: int, claimed: int, after: int) -> None:
    a = Node(1, [2], incarnation=mine)
    out = a.receive(addr(2), Ping(1, "n2", "n1"), (Suspect("n1", claimed, "n2"),))
    assert a.swim.incarnation == after
    assert a.swim.member("n1") is not None and a.swim.member("n1").state is ALIVE  # type: ignore
    # The refutation rides on the very Ack.
    (ack,) = [s for s in sends(out) if isinstance(s.packet.message, Ack)]
    assert Alive(after, meta(1)) in ack.packet.updates
    assert [c.member.incarnation for c in changes(out)] == [after]
    assert a.swim.stats["suspicions_refuted"] == 1


@pytest.mark.parametrize("claimed", [0, 4])
def test_a_death_about_self_is_refuted(claimed: int) -> None:
    a = Node(1, [2], incarnation=2)
    a.receive(addr(2), None, (Dead("n1", claimed, "n2"),))
    assert a.swim.incarnation == max(2, claimed) + 1
    out = a.run_until(a.now + LAN.gossip_interval_s)
    assert Alive(max(2, claimed) + 1, meta(1)) in carried(out)


def test_a_restarted_node_refutes_the_left_of_its_previous_life() -> None:
    """It left at incarnation 5, restarted at 0: the cluster still says 'left'."""
    a = Node(1, [2], incarnation=0)
    a.receive(addr(2), None, (Dead("n1", 5, "n1"),))
    assert a.swim.incarnation == 6
    assert a.swim.member("n1").state is ALIVE  # type: ignore[union-attr]
    assert Alive(6, meta(1)) in carried(a.run_until(a.now + LAN.gossip_interval_s))


def test_a_restarted_node_refutes_a_left_learnt_by_push_pull() -> None:
    a = Node(1, incarnation=0)
    a.swim.merge(0.0, PushPull("n2", False, (Alive(0, meta(2)), Dead("n1", 3, "n1"))))
    assert a.swim.incarnation == 4


def test_an_alive_about_self_with_a_higher_incarnation_is_outbid() -> None:
    a = Node(1, [2], incarnation=1)
    a.receive(addr(2), None, (Alive(9, meta(1, http="forged:1")),))
    assert a.swim.incarnation == 10
    assert a.swim.member("n1").http_addr == "10.0.0.1:80"  # type: ignore[union-attr]
    a.receive(addr(2), None, (Alive(3, meta(1)),))
    assert a.swim.incarnation == 10


def test_a_leaving_node_refutes_nothing() -> None:
    a = Node(1, [2], incarnation=3)
    a.swim.leave(0.0)
    a.receive(addr(2), None, (Suspect("n1", 4, "n2"), Dead("n1", 9, "n2"), Alive(9, meta(1))))
    assert a.swim.incarnation == 4
    assert a.swim.member("n1").state is LEFT  # type: ignore[union-attr]
    assert a.swim.awareness == 0


def test_a_claim_at_the_largest_incarnation_does_not_break_the_core() -> None:
    a = Node(1, [2], sizer=WireSizer("n1"))
    top = 2**63 - 1
    out = a.receive(addr(2), Ping(1, "n2", "n1"), (Suspect("n1", top, "n2"),))
    for send in sends(out):
        seal_packet(send.packet, key=b"k", sender="n1", boot=1, counter=1, now_ms=1)
    a.run_until(10.0)


# -- incarnation ordering ------------------------------------------------------------------

START = {
    "alive": (Alive(5, meta(2)),),
    "suspect": (Alive(5, meta(2)), Suspect("n2", 5, "n3")),
    "dead": (Alive(5, meta(2)), Dead("n2", 5, "n3")),
    "left": (Alive(5, meta(2)), Dead("n2", 5, "n2")),
}
NEW_META = meta(2, http="10.9.9.9:80")
ORDERING: list[tuple[str, Update, MemberState, int]] = [
    # Alive: only a higher incarnation wins, whatever the state (it revives DEAD and LEFT).
    ("alive", Alive(4, NEW_META), ALIVE, 5), ("alive", Alive(5, NEW_META), ALIVE, 5),
    ("alive", Alive(6, NEW_META), ALIVE, 6),
    ("suspect", Alive(5, NEW_META), SUSPECT, 5), ("suspect", Alive(6, NEW_META), ALIVE, 6),
    ("dead", Alive(5, NEW_META), DEAD, 5), ("dead", Alive(6, NEW_META), ALIVE, 6),
    ("left", Alive(5, NEW_META), LEFT, 5), ("left", Alive(6, NEW_META), ALIVE, 6),
    # Suspect: equal or higher beats Alive; lower is ignored; never overrides DEAD or LEFT.
    ("alive", Suspect("n2", 4, "n3"), ALIVE, 5), ("alive", Suspect("n2", 5, "n3"), SUSPECT, 5),
    ("alive", Suspect("n2", 6, "n3"), SUSPECT, 6),
    ("suspect", Suspect("n2", 4, "n4"), SUSPECT, 5),
    ("suspect", Suspect("n2", 6, "n4"), SUSPECT, 6),
    ("dead", Suspect("n2", 6, "n3"), DEAD, 5), ("left", Suspect("n2", 6, "n3"), LEFT, 5),
    # Dead: equal or higher beats Alive and Suspect; lower is ignored; LEFT is sticky.
    ("alive", Dead("n2", 4, "n3"), ALIVE, 5), ("alive", Dead("n2", 5, "n3"), DEAD, 5),
    ("alive", Dead("n2", 6, "n3"), DEAD, 6),
    ("suspect", Dead("n2", 4, "n3"), SUSPECT, 5), ("suspect", Dead("n2", 5, "n3"), DEAD, 5),
    ("alive", Dead("n2", 5, "n2"), LEFT, 5), ("suspect", Dead("n2", 6, "n2"), LEFT, 6),
    ("dead", Dead("n2", 5, "n2"), LEFT, 5),
    ("left", Dead("n2", 5, "n3"), LEFT, 5), ("left", Dead("n2", 8, "n3"), LEFT, 5),
    ("dead", Dead("n2", 4, "n2"), DEAD, 5),
]


@pytest.mark.parametrize(("start", "update", "state", "incarnation"), ORDERING,
                         ids=[f"{s}+{type(u).__name__}{u.incarnation}"
                              f"{'-left' if isinstance(u, Dead) and u.left else ''}"
                              for s, u, _, _ in ORDERING])
def test_incarnation_ordering(start: str, update: Update, state: MemberState,
                              incarnation: int) -> None:
    a = Node(1, [3, 4])
    a.apply(*START[start])
    before = a.swim.member("n2")
    assert before is not None
    version = a.swim.view().version
    out = a.apply(update)
    after = a.swim.member("n2")
    assert after is not None
    assert (after.state, after.incarnation) == (state, incarnation)
    if (after.state, after.incarnation) == (before.state, before.incarnation):
        assert changes(out) == [] and a.swim.view().version == version
        assert after == before  # ignored entirely (meta too)
    else:
        assert [c.member for c in changes(out)] == [after]
        assert a.swim.view().version > version
        if isinstance(update, Alive):
            assert after.http_addr == NEW_META.http_addr


def test_accepted_updates_are_gossiped_on_and_ignored_ones_are_not() -> None:
    a = Node(1, [2, 3])
    a.run_until(5.0, respond=ack_pings_from({2, 3}))  # drain the initial Alives
    a.apply(Suspect("n2", 0, "n3"))
    a.apply(Alive(0, meta(2)))  # equal incarnation: ignored
    out = a.run_until(a.now + LAN.gossip_interval_s)
    assert Suspect("n2", 0, "n3") in carried(out)
    assert not any(isinstance(u, Alive) and u.node_id == "n2" for u in carried(out))


def test_updates_about_unknown_members() -> None:
    a = Node(1, [2])
    a.apply(Suspect("n7", 3, "n2"), Dead("n8", 3, "n2"), Dead("n9", 1, "n9"))
    assert a.swim.member("n7") is None and a.swim.member("n8") is None
    assert a.swim.member("n9") is None
    out = a.apply(Alive(2, meta(7)))
    assert a.state(7) is ALIVE
    assert [c.member.node_id for c in changes(out)] == ["n7"]


def test_view_is_sorted_and_versions_only_grow() -> None:
    a = Node(1)
    versions = [a.swim.view().version]
    for i in (5, 3, 9, 2):
        a.apply(Alive(0, meta(i)))
        versions.append(a.swim.view().version)
    a.apply(Suspect("n3", 0, "n2"))
    versions.append(a.swim.view().version)
    assert versions == sorted(set(versions))
    assert [m.node_id for m in a.swim.view().members] == ["n1", "n2", "n3", "n5", "n9"]


# -- buddy system --------------------------------------------------------------------------


def test_a_ping_to_a_suspect_carries_the_suspicion() -> None:
    """With no piggyback budget at all, only the buddy update rides along."""
    config = replace(LAN, piggyback_budget_bytes=0)
    a = Node(1, [2], config=config)
    a.apply(Suspect("n2", 4, "n3"))
    _, ping = a.until_ping()
    (send,) = [e for _, e in a.log if isinstance(e, Send) and isinstance(e.packet.message, Ping)]
    assert send.packet.updates == (Suspect("n2", 4, "n1"),)


def test_a_ping_to_an_alive_member_carries_no_suspicion() -> None:
    config = replace(LAN, piggyback_budget_bytes=0)
    a = Node(1, [2], config=config)
    a.until_ping()
    pings = [e for _, e in a.log if isinstance(e, Send) and isinstance(e.packet.message, Ping)]
    assert [p.packet.updates for p in pings] == [()]


# -- suspicion timeouts and the final check ------------------------------------------------


def suspect_and_wait_for_check(a: Node, alive: set[int], target: int = 2
                               ) -> tuple[float, list[Effect]]:
    """Run until ``a``'s final check of ``target`` starts; return its time and effects."""
    respond = ack_pings_from(alive)
    while a.swim.stats["final_checks"] == 0:
        effects = a.step()
        respond(a, effects)
        assert a.now < 200.0, "no final check"
        if a.swim.stats["final_checks"]:
            return a.now, effects
    raise AssertionError("unreachable")


def test_a_suspicion_that_times_out_gets_a_final_check_before_death() -> None:
    a = Node(1, [2, 3, 4, 5], config=STEADY)
    a.apply(Suspect("n2", 0, "n3"))
    tc, effects = suspect_and_wait_for_check(a, alive={3, 4, 5})
    # Not dead yet: the suspect is pinged, with its suspicion attached, and through others.
    assert a.state(2) is SUSPECT and a.swim.stats["deaths_declared"] == 0
    checks = [s for s in sends(effects) if s.to == addr(2) and isinstance(s.packet.message, Ping)]
    assert len(checks) == 1
    check = checks[0].packet
    assert isinstance(check.message, Ping) and check.message.target == "n2"
    assert any(isinstance(u, Suspect) and u.node_id == "n2" for u in check.updates)
    reqs = messages(effects, PingReq)
    assert {to for to, _ in reqs} == {addr(3), addr(4), addr(5)}
    assert all(r == PingReq(check.message.seq, "n1", "n2", addr(2)) for _, r in reqs)
    # No answer: dead one probe period later, and the death is spread.
    a.run_until(tc + STEADY.probe_interval_s - 1e-6, respond=ack_pings_from({3, 4, 5}))
    assert a.state(2) is SUSPECT
    out = a.run_until(tc + STEADY.probe_interval_s, respond=ack_pings_from({3, 4, 5}))
    assert a.state(2) is DEAD
    assert a.swim.stats["deaths_declared"] == 1
    assert [(c.member.node_id, c.member.state) for c in changes(out)] == [("n2", DEAD)]
    assert Dead("n2", 0, "n1") in carried(a.run_until(a.now + 1.0))


def test_a_fully_confirmed_suspicion_is_checked_after_the_shortest_timeout() -> None:
    a = Node(1, [2, 3, 4, 5], config=STEADY)
    a.apply(Suspect("n2", 0, "n3"), Suspect("n2", 0, "n4"), Suspect("n2", 0, "n5"))
    tc, _ = suspect_and_wait_for_check(a, alive={2, 3, 4, 5})
    assert tc == pytest.approx(shortest_suspicion_s(5))


@pytest.mark.parametrize("via_helper", [False, True])
def test_an_ack_to_the_final_check_gives_a_fresh_suspicion_not_death(via_helper: bool) -> None:
    a = Node(1, [2, 3, 4, 5], config=STEADY)
    a.apply(Suspect("n2", 0, "n3"))
    tc, effects = suspect_and_wait_for_check(a, alive={3, 4, 5})
    (_, check), = [(to, p) for to, p in messages(effects, Ping) if p.target == "n2"]
    a.receive(addr(3) if via_helper else addr(2), Ack(check.seq, "n2"), at=tc + 0.05)
    assert a.swim.stats["final_checks_answered"] == 1
    # A whole new suspicion period (at least the shortest timeout) before the next check.
    a.run_until(tc + STEADY.suspicion_mult * STEADY.probe_interval_s,
                respond=ack_pings_from({3, 4, 5}))
    assert a.state(2) is SUSPECT
    assert a.swim.stats["final_checks"] == 1 and a.swim.stats["deaths_declared"] == 0
    # Still no refutation and no further answers: a second check, then death.
    while a.state(2) is SUSPECT:
        a.run_until(a.now + 1.0, respond=ack_pings_from({3, 4, 5}))
        assert a.now < 300
    assert a.state(2) is DEAD
    assert a.swim.stats["final_checks"] == 2


def test_an_ack_for_an_old_check_or_after_death_changes_nothing() -> None:
    a = Node(1, [2, 3, 4, 5], config=STEADY)
    a.apply(Suspect("n2", 0, "n3"))
    tc, effects = suspect_and_wait_for_check(a, alive={3, 4, 5})
    (_, check), = [(to, p) for to, p in messages(effects, Ping) if p.target == "n2"]
    a.run_until(tc + STEADY.probe_interval_s, respond=ack_pings_from({3, 4, 5}))
    assert a.state(2) is DEAD
    a.receive(addr(2), Ack(check.seq, "n2"))
    assert a.state(2) is DEAD and a.swim.stats["final_checks_answered"] == 0


def test_a_refutation_during_the_final_check_keeps_the_member() -> None:
    a = Node(1, [2, 3, 4, 5], config=STEADY)
    a.apply(Suspect("n2", 0, "n3"))
    tc, _ = suspect_and_wait_for_check(a, alive={3, 4, 5})
    a.receive(addr(2), None, (Alive(1, meta(2)),), at=tc + 0.1)
    assert a.state(2) is ALIVE
    a.run_until(tc + 60.0, respond=ack_pings_from({2, 3, 4, 5}))
    assert a.state(2) is ALIVE and a.swim.stats["deaths_declared"] == 0


def test_a_refutation_ends_the_suspicion_and_confirmations_count_once() -> None:
    a = Node(1, [2, 3, 4, 5], config=STEADY)
    out = a.apply(Suspect("n2", 0, "n3"))
    assert len(changes(out)) == 1
    out = a.apply(Suspect("n2", 0, "n4"), Suspect("n2", 0, "n4"))
    assert changes(out) == []  # confirmations change no state
    a.apply(Alive(1, meta(2)))
    assert a.state(2) is ALIVE
    a.run_until(100.0, respond=ack_pings_from({2, 3, 4, 5}))
    assert a.state(2) is ALIVE and a.swim.stats["final_checks"] == 0


def test_more_confirmations_mean_an_earlier_final_check() -> None:
    config = replace(STEADY, suspicion_mult=6.0)  # up to 4 confirmations expected

    def check_time(confirmers: list[str]) -> float:
        a = Node(1, [2, 3, 4, 5, 6, 7], config=config)
        a.apply(Suspect("n2", 0, "n3"))
        for by in confirmers:
            a.apply(Suspect("n2", 0, by))
        # The suspect answers our own probes (it only misses the refutation).
        return suspect_and_wait_for_check(a, alive={2, 3, 4, 5, 6, 7})[0]

    times = [check_time(["n4", "n5", "n6", "n7"][:k]) for k in range(4)]
    assert times == sorted(times, reverse=True) and len(set(times)) == 4
    assert check_time(["n4", "n4", "n4"]) == times[1]  # the same confirmer counts once


def longest_suspicion_s(n: int, config: GossipConfig = STEADY) -> float:
    return suspicion_bounds(n, config.probe_interval_s, config.suspicion_mult,
                            config.suspicion_max_mult)[1]


def shortest_suspicion_s(n: int, config: GossipConfig = STEADY) -> float:
    return suspicion_bounds(n, config.probe_interval_s, config.suspicion_mult,
                            config.suspicion_max_mult)[0]


@pytest.mark.parametrize("then", [
    "quiet", "echo", "reprobe",
])
def test_a_suspicion_raised_here_alone_lasts_the_longest_timeout(then: str) -> None:
    """Nobody else confirms: the suspect gets the longest time to refute (Lifeguard)."""
    a = Node(1, [2, 3, 4, 5], config=STEADY)
    fail_probe_of(a, 2, alive={3, 4, 5})
    started = a.now
    if then == "echo":  # another member gossips our own suspicion back to us
        a.receive(addr(3), None, (Suspect("n2", 0, "n1"),))
    # Unless re-probing, the suspect answers our later pings (it only missed the refutation).
    alive = {3, 4, 5} if then == "reprobe" else {2, 3, 4, 5}
    tc, _ = suspect_and_wait_for_check(a, alive=alive)
    assert a.swim.stats["probes_sent"] > 4  # the suspect was probed again meanwhile
    assert tc - started == pytest.approx(longest_suspicion_s(5))


def test_a_suspicion_heard_from_a_single_member_lasts_the_longest_timeout() -> None:
    a = Node(1, [2, 3, 4, 5], config=STEADY)
    a.apply(Suspect("n2", 0, "n3"))
    tc, _ = suspect_and_wait_for_check(a, alive={2, 3, 4, 5})
    assert tc == pytest.approx(longest_suspicion_s(5))


def fail_probe_of(a: Node, target: int, alive: set[int]) -> None:
    """Run ``a`` until its probe of ``target`` has failed (the others answer)."""
    respond = ack_pings_from(alive)
    while a.state(target) is ALIVE:
        respond(a, a.step())
        assert a.now < 100


# -- own metadata --------------------------------------------------------------------------


def test_new_tags_go_out_with_a_fresh_incarnation_and_win_everywhere() -> None:
    a, b = Node(1, [2]), Node(2, [1])
    tagged = replace(meta(1), tags=MappingProxyType({"raft": "member"}))
    a.swim.update_meta(tagged)
    out = a._record()
    assert a.swim.incarnation == 1
    assert [c.member.tags for c in changes(out)] == [{"raft": "member"}]
    b.swim.apply(0.0, Alive(1, tagged))
    b.swim.apply(0.0, Alive(0, meta(1)))  # an older claim arriving late changes nothing
    assert b.swim.member("n1").tags == {"raft": "member"}  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        a.swim.update_meta(meta(2))


# -- graceful leave ------------------------------------------------------------------------


def test_leave_announces_a_death_by_self_and_stops_probing() -> None:
    a = Node(1, [2, 3, 4, 5, 6, 7, 8, 9])
    a.run_until(3.0, respond=ack_pings_from(set(range(2, 10))))
    probes = a.swim.stats["probes_sent"]
    a.swim.leave(a.now)
    out = a._record()
    assert a.swim.incarnation == 1
    assert a.swim.member("n1").state is LEFT  # type: ignore[union-attr]
    assert [(c.member.node_id, c.member.state) for c in changes(out)] == [("n1", LEFT)]
    farewell = [s for s in sends(out) if Dead("n1", 1, "n1") in s.packet.updates]
    # Straight away, to several distinct members (as many as the transmit limit allows).
    assert len({s.to for s in farewell}) == len(farewell)
    assert len(farewell) >= min(LAN.gossip_nodes, LAN.retransmit_limit(8))
    assert all(s.packet.message is None for s in farewell)
    # No more probes; time keeps moving (no busy loop) and the farewell drains.
    ticks, start = 0, a.now
    while a.now < start + 60.0:
        before = a.now
        out = a.step()
        ticks += 1
        assert a.now > before or ticks == 1
        assert messages(out, Ping) == []
    assert a.swim.stats["probes_sent"] == probes
    assert ticks < 60.0 / LAN.gossip_interval_s
    assert a.swim.pending_updates == 0


def test_a_lone_node_that_leaves_does_not_spin() -> None:
    a = Node(1)
    a.swim.leave(0.0)
    times = []
    for _ in range(50):
        a.step()
        times.append(a.now)
    assert times == sorted(set(times))
    assert times[-1] - times[0] > 5.0


def test_peers_record_a_graceful_leave_as_left() -> None:
    a, b = Node(1, [2]), Node(2, [1])
    a.swim.leave(0.0)
    Wires([a, b]).deliver(a, a._record())
    assert b.state(1) is LEFT
    assert b.swim.member("n1").incarnation == 1  # type: ignore[union-attr]
    # A leaving member is not probed or suspected afterwards.
    b.run_until(100.0)
    assert b.state(1) is LEFT and b.swim.stats["probes_sent"] == 0


# -- joining -------------------------------------------------------------------------------


def join_attempts(effects: Iterable[tuple[float, Effect]]) -> list[tuple[float, str]]:
    return [(t, e.to) for t, e in effects if isinstance(e, PushPullWith) and e.join]


def test_join_asks_the_seeds_at_once_then_retries_with_backoff() -> None:
    a = Node(1)
    a.swim.join(0.0, [addr(9)])
    a._record()
    a.run_until(200.0)
    attempts = join_attempts(a.log)
    assert attempts[0] == (0.0, addr(9))
    assert {to for _, to in attempts} == {addr(9)}
    gaps = [round(b - a_, 6) for (a_, _), (b, _) in zip(attempts, attempts[1:])]
    expected = []
    backoff = LAN.probe_interval_s
    for _ in gaps:
        expected.append(backoff)
        backoff = min(2 * backoff, LAN.push_pull_interval_s)
    assert gaps == expected
    assert gaps[-1] == LAN.push_pull_interval_s


def test_join_stops_retrying_once_another_member_is_known() -> None:
    a = Node(1)
    a.swim.join(0.0, [addr(9), addr(8)])
    a._record()
    assert sorted(to for _, to in join_attempts(a.log)) == [addr(8), addr(9)]
    a.run_until(5.0)
    a.swim.merge(a.now, PushPull("n9", True, (Alive(0, meta(9)),)))
    count = len(join_attempts(a.log))
    a.run_until(500.0, respond=ack_pings_from({9}))
    assert len(join_attempts(a.log)) == count


def test_join_without_other_seeds_asks_nobody() -> None:
    a = Node(1)
    a.swim.join(0.0, [addr(1)])  # our own address
    a._record()
    a.run_until(100.0)
    assert join_attempts(a.log) == []


def test_joining_again_with_no_seeds_does_not_break_tick() -> None:
    a = Node(1)
    a.swim.join(0.0, [addr(9)])
    a.swim.join(0.0, [])
    a.run_until(10.0)


# -- push-pull -----------------------------------------------------------------------------


def test_merge_turns_a_remote_death_into_a_local_suspicion() -> None:
    a = Node(1, [2, 3, 4])
    remote = PushPull("n5", False, (
        Alive(0, meta(5)),
        Dead("n2", 0, "n5"),     # declared dead over there: only suspected here
        Dead("n3", 0, "n3"),     # left: final everywhere
        Suspect("n4", 0, "n5"),
        Alive(2, meta(6)),       # new to us
        Dead("n7", 0, "n5"),     # unknown: nothing to suspect
    ))
    a.swim.merge(0.0, remote)
    assert a.state(2) is SUSPECT and a.state(3) is LEFT and a.state(4) is SUSPECT
    assert a.state(5) is ALIVE and a.state(6) is ALIVE
    assert a.swim.member("n6").incarnation == 2  # type: ignore[union-attr]
    assert a.swim.member("n7") is None


def test_merge_of_a_death_about_self_is_refuted() -> None:
    a = Node(1, [2], incarnation=1)
    a.swim.merge(0.0, PushPull("n2", False, (Dead("n1", 1, "n2"),)))
    assert a.swim.incarnation == 2
    assert a.swim.member("n1").state is ALIVE  # type: ignore[union-attr]


def test_local_state_carries_every_member_and_round_trips() -> None:
    a = Node(1, [2, 3, 4, 5])
    a.apply(Suspect("n3", 0, "n2"), Dead("n4", 0, "n2"), Dead("n5", 0, "n5"))
    state = a.swim.local_state(join=True)
    assert state.source == "n1" and state.join is True
    by_id = {u.node_id: u for u in state.states}
    assert by_id["n1"] == Alive(0, meta(1)) and by_id["n2"] == Alive(0, meta(2))
    assert isinstance(by_id["n3"], Suspect)
    assert isinstance(by_id["n4"], Dead) and not by_id["n4"].left
    assert by_id["n5"] == Dead("n5", 0, "n5")
    b = Node(9)
    b.swim.merge(0.0, state)
    assert b.state(1) is ALIVE and b.state(2) is ALIVE
    # Claims about members b never knew are not enough to learn them.
    assert {m.node_id for m in b.swim.view().members} == {"n1", "n2", "n9"}


def test_push_pulls_are_scheduled_with_a_random_alive_member() -> None:
    a = Node(1, [2, 3])
    a.run_until(3 * LAN.push_pull_interval_s, respond=ack_pings_from({2, 3}))
    regular = [e.to for _, e in a.log if isinstance(e, PushPullWith) and not e.join]
    assert len(regular) >= 2
    assert set(regular) <= {addr(2), addr(3)}


# -- reaping -------------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["n3", "n2"], ids=["dead", "left"])
def test_dead_and_left_members_are_forgotten_after_reap_after_s(by: str) -> None:
    config = replace(LAN, reap_after_s=100.0)
    a = Node(1, [2, 3], config=config)
    a.now = 5.0
    a.apply(Dead("n2", 0, by))
    a.run_until(5.0 + 100.0 - 1e-6, respond=ack_pings_from({3}))
    assert a.swim.member("n2") is not None
    out = a.run_until(5.0 + 110.0 + 1e-6, respond=ack_pings_from({3}))
    assert a.swim.member("n2") is None
    assert "n2" not in {m.node_id for m in a.swim.view().members}
    (gone,) = [c for c in changes(out) if c.member.node_id == "n2"]
    assert gone.removed and gone.member.state is (LEFT if by == "n2" else DEAD)
    assert a.state(3) is ALIVE


def test_a_node_that_left_never_forgets_itself() -> None:
    config = replace(LAN, reap_after_s=100.0)
    a = Node(1, [2], config=config)
    a.swim.leave(0.0)
    a.run_until(250.0)
    assert a.swim.member("n1") is not None
    a.receive(addr(2), Ping(1, "n2", "n1"), (Alive(7, meta(1)),))
    assert a.swim.incarnation == 1


# -- piggybacking within the datagram budget -----------------------------------------------


def big_meta(rng: random.Random, i: int, tag_bytes: int) -> MemberMeta:
    node_id = f"{i:04d}-" + "".join(rng.choice("abcdefghij") for _ in range(59))
    tags = {f"t{k:02d}": "v" * (tag_bytes // 8) for k in range(8)}
    return MemberMeta(node_id, f"10.1.{i // 250}.{i % 250}:7946", f"10.1.{i // 250}.{i % 250}:80",
                      "zone-" + "z" * 50, rng.randint(1, 1000), MappingProxyType(tags))


def test_piggybacked_updates_never_overflow_a_datagram() -> None:
    rng = random.Random(21)
    me = big_meta(rng, 0, 600)
    config = LAN
    swim = Swim(me, config, random.Random(22), 0.0, sizer=WireSizer(me.node_id))
    peers = [big_meta(rng, i, rng.choice([0, 200, 600, 1000])) for i in range(1, 301)]
    for p in peers:
        assert update_size(Alive(0, p)) <= config.piggyback_budget_bytes
        swim.apply(0.0, Alive(rng.randint(0, 2**40), p))
    now, sent, updates_sent = 0.0, 0, 0
    long_addr = "h" * 290 + ".x:7946"
    while now < 30.0:
        now = max(now, swim.next_deadline())
        swim.tick(now)
        roll = rng.random()
        p = rng.choice(peers)
        if roll < 0.3:
            swim.receive(now, p.gossip_addr, Packet(Ping(rng.randint(0, 2**62), p.node_id,
                                                         me.node_id)))
        elif roll < 0.5:
            swim.receive(now, p.gossip_addr,
                         Packet(PingReq(rng.randint(0, 2**62), p.node_id, "x" * 64, long_addr)))
        elif roll < 0.7:
            q = rng.choice(peers)
            swim.receive(now, p.gossip_addr, Packet(None, (
                Suspect(q.node_id, 2**41, p.node_id), Dead(rng.choice(peers).node_id, 2**42,
                                                           p.node_id))))
        for effect in swim.drain():
            if not isinstance(effect, Send):
                continue
            packet = effect.packet
            sent += 1
            updates_sent += len(packet.updates)
            assert datagram_size(packet, sender=me.node_id) <= MAX_PACKET_BYTES
            buddy = packet.updates[:1] if isinstance(packet.message, Ping) and packet.updates \
                and isinstance(packet.updates[0], Suspect) \
                and packet.updates[0].node_id == packet.message.target else ()
            rest = packet.updates[len(buddy):]
            assert sum(update_size(u) for u in rest) <= config.piggyback_budget_bytes
            seal_packet(packet, key=b"k", sender=me.node_id, boot=1, counter=sent, now_ms=1)
    assert sent > 300 and updates_sent > sent  # it did piggyback, and plenty


def test_an_alive_too_big_to_piggyback_is_not_queued() -> None:
    """The driver refuses such metadata for itself; one heard from elsewhere spreads by
    push-pull only, instead of sitting in the queue forever (and stalling leave())."""
    tags = {f"k{i:02d}": "v" * 70 for i in range(16)}
    huge = MemberMeta("n9", addr(9), "10.0.0.9:80", tags=MappingProxyType(tags))
    assert update_size(Alive(0, huge)) > LAN.piggyback_budget_bytes
    a = Node(1, [2], sizer=WireSizer("n1"))
    a.run_until(10.0, respond=ack_pings_from({2}))
    a.apply(Alive(0, huge))
    assert a.state(9) is ALIVE
    assert any(isinstance(u, Alive) and u.node_id == "n9" for u in a.swim.local_state().states)
    out = a.run_until(20.0, respond=ack_pings_from({2, 9}))
    assert not any(isinstance(u, Alive) and u.node_id == "n9" for u in carried(out))
    assert a.swim.pending_updates == 0


# -- retransmission ------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 9, 10, 100])
def test_an_update_is_retransmitted_retransmit_mult_times_ceil_log10_n_plus_1(n: int) -> None:
    a = Node(1, range(2, n + 1))
    assert a.swim.view().members.__len__() == n
    a.receive(addr(2), Ping(0, "n2", "n1"), (Suspect("n1", 0, "n2"),))
    for seq in range(1, 2000):
        a.receive(addr(2), Ping(seq, "n2", "n1"))
    carrying = [s for _, s in a.log if isinstance(s, Send)
                and any(isinstance(u, Alive) and u.node_id == "n1" and u.incarnation == 1
                        for u in s.packet.updates)]
    assert len(carrying) == LAN.retransmit_mult * math.ceil(math.log10(n + 1))
    assert len(carrying) == LAN.retransmit_limit(n)


# -- deadlines -----------------------------------------------------------------------------


def random_update(rng: random.Random, ids: list[int]) -> Update:
    i = rng.choice(ids)
    inc = rng.randint(0, 6)
    kind = rng.randrange(4)
    if kind == 0:
        return Alive(inc, meta(i))
    if kind == 1:
        return Suspect(nid(i), inc, nid(rng.choice(ids)))
    return Dead(nid(i), inc, nid(rng.choice(ids + [i])))


def random_message(rng: random.Random, me: int, ids: list[int]) -> ProtocolMessage | None:
    kind = rng.randrange(6)
    seq = rng.randint(0, 40)
    src = nid(rng.choice(ids))
    if kind == 0:
        return Ping(seq, src, nid(me) if rng.random() < 0.8 else nid(rng.choice(ids)))
    if kind == 1:
        t = rng.choice(ids)
        return PingReq(seq, src, nid(t), addr(t))
    if kind == 2:
        return Ack(seq, src)
    if kind == 3:
        return Nack(seq, src)
    return None


@pytest.mark.parametrize("seed", range(6))
def test_next_deadline_is_always_after_now_after_a_tick(seed: int) -> None:
    """Random traffic, loss, merges, leaves, forged claims; a node that left stops 5 s later."""
    rng = random.Random(seed)
    config = [LAN, LOCAL, STEADY, replace(LAN, reap_after_s=20.0)][seed % 4]
    ids = list(range(1, 7))
    nodes = {i: Swim(meta(i), config, random.Random(seed * 100 + i), 0.0) for i in ids}
    for s in nodes.values():
        s.join(0.0, [addr(1)])
    stops: dict[int, float] = {}
    inflight: list[tuple[float, int, int, Packet]] = []
    now, ticks = 0.0, 0
    for _ in range(3000):
        for i, at in list(stops.items()):
            if now >= at and i in nodes:
                del nodes[i]
        live = sorted(nodes)
        if len(live) < 2:
            break
        if rng.random() < 0.5:
            i = min(live, key=lambda k: nodes[k].next_deadline())
            now = max(now, nodes[i].next_deadline())
        else:
            now += rng.choice([0.0, 0.001, rng.uniform(0, 0.5)])
            i = rng.choice(live)
        nodes[i].tick(now)
        ticks += 1
        assert nodes[i].next_deadline() > now, (seed, i, now)
        due = [x for x in inflight if x[0] <= now]
        inflight = [x for x in inflight if x[0] > now]
        for _, src, dst, packet in due:
            if dst in nodes:
                nodes[dst].receive(now, addr(src), packet)
        if rng.random() < 0.3:
            j = rng.choice(live)
            nodes[j].receive(now, addr(rng.choice(ids)),
                             Packet(random_message(rng, j, ids),
                                    tuple(random_update(rng, ids)
                                          for _ in range(rng.randrange(3)))))
        if rng.random() < 0.01:
            j, other = rng.choice(live), rng.choice(live)
            nodes[j].merge(now, nodes[other].local_state())
        if rng.random() < 0.002 and len(live) - len(stops) > 3:
            j = rng.choice(live)
            if j not in stops:
                nodes[j].leave(now)
                stops[j] = now + 5.0
        for k, node in nodes.items():
            for e in node.drain():
                if isinstance(e, Send) and rng.random() > 0.2:
                    dst = int(e.to.split(".")[3].split(":")[0])
                    inflight.append((now + rng.uniform(0, 0.01), k, dst, e.packet))
    assert ticks > 1000 and now > 30.0
