"""SWIM core scenarios in the discrete-event simulator (node.testing.swim_sim).

Each test prints what it measured (run with -s) and names its seed in failure
messages; SwimSim(seed, ...) with the same arguments replays the run.
"""

from __future__ import annotations

import math
import statistics

import pytest

from node.gossip.config import LAN
from node.gossip.members import MemberState
from node.gossip.suspicion import suspicion_bounds
from node.testing.swim_sim import SwimSim

pytestmark = pytest.mark.sim


def start_cluster(sim: SwimSim, n: int) -> set[str]:
    seed = sim.address(0)
    for i in range(n):
        sim.add(i, [seed] if i else [])
    return {f"n{i}" for i in range(n)}


def detection_bound_s(n: int) -> float:
    """First suspicion within 10 periods (P(no prober) ~ e^-10), the longest suspicion,
    the final check (one probe period at the worst awareness), then dissemination:
    log2(n) gossip rounds, generously doubled."""
    _, longest = suspicion_bounds(n, LAN.probe_interval_s, LAN.suspicion_mult,
                                  LAN.suspicion_max_mult)
    final_check = LAN.probe_interval_s * LAN.awareness_max
    return (10 * LAN.probe_interval_s + longest + final_check
            + 2 * math.log2(n) * LAN.gossip_interval_s * 4)


@pytest.mark.parametrize("n", [100])
def test_a_cluster_started_at_once_converges_to_one_view(n: int) -> None:
    sim = SwimSim(seed=1, config=LAN)
    everyone = start_cluster(sim, n)
    for second in range(1, 121):
        sim.run_for(1.0)
        if sim.converged(everyone):
            print(f"\n{n} nodes converged after {second} s of protocol time")
            return
    pytest.fail(f"no single view after 120 s; {sim.replay_hint()}")


def test_a_crashed_node_is_declared_dead_by_every_member_within_the_bound() -> None:
    n, times = 50, []
    for seed in range(5):
        sim = SwimSim(seed=seed, config=LAN)
        everyone = start_cluster(sim, n)
        sim.run_for(30.0)
        assert sim.converged(everyone), sim.replay_hint()
        victim = sim.rng.randrange(1, n)
        crashed_at = sim.now
        sim.crash(victim)
        bound = detection_bound_s(n)
        while sim.now - crashed_at < bound:
            sim.run_for(0.25)
            if all(s is MemberState.DEAD for s in sim.states(f"n{victim}").values()):
                break
        else:
            pytest.fail(f"n{victim} not dead everywhere within {bound:.1f} s; "
                        f"{sim.replay_hint()}")
        times.append(sim.now - crashed_at)
    print(f"\ndetection by all {n - 1} members: median {statistics.median(times):.1f} s, "
          f"max {max(times):.1f} s (bound {detection_bound_s(n):.1f} s)")


@pytest.mark.parametrize("loss", [0.05, 0.20])
def test_no_live_member_is_declared_dead_under_packet_loss(loss: float) -> None:
    n = 50
    sim = SwimSim(seed=7, config=LAN, loss=loss)
    everyone = start_cluster(sim, n)
    sim.run_for(120.0)
    deaths = [(t, who, e.member.node_id) for t, who, e in sim.events
              if e.member.state is MemberState.DEAD]
    suspicions = sum(1 for _, _, e in sim.events if e.member.state is MemberState.SUSPECT)
    refuted = sum(node.stats["suspicions_refuted"] for node in sim.nodes.values())
    print(f"\n{loss:.0%} loss, {n} nodes, 120 s: {suspicions} suspicion events, "
          f"{refuted} refutations, {len(deaths)} false deaths")
    assert deaths == [], f"live members declared dead: {deaths[:5]}; {sim.replay_hint()}"
    for observer, view in sim.views().items():
        # Under constant loss some suspicions are always in flight; none may end in death.
        assert set(view) == everyone, (observer, sim.replay_hint())
        assert not {k for k, s in view.items() if s in (MemberState.DEAD, MemberState.LEFT)}


def test_a_healed_partition_ends_in_one_view() -> None:
    n = 40
    sim = SwimSim(seed=3, config=LAN)
    everyone = start_cluster(sim, n)
    sim.run_for(30.0)
    sim.partition(set(range(n // 2)), set(range(n // 2, n)))
    sim.run_for(120.0)
    view = sim.views()["n0"]
    assert view[f"n{n - 1}"] is MemberState.DEAD, "the other side was declared dead"
    healed_at = sim.now
    sim.heal()
    for _ in range(600):
        sim.run_for(1.0)
        if sim.converged(everyone):
            print(f"\none view {sim.now - healed_at:.0f} s after the partition healed")
            return
    pytest.fail(f"views still differ 600 s after healing; {sim.replay_hint()}")


def test_a_restarted_node_refutes_its_death_with_a_higher_incarnation() -> None:
    n = 20
    sim = SwimSim(seed=5, config=LAN)
    everyone = start_cluster(sim, n)
    sim.run_for(30.0)
    sim.crash(7)
    sim.run_for(detection_bound_s(n))
    assert all(v["n7"] is MemberState.DEAD for k, v in sim.views().items()), sim.replay_hint()
    dead_incarnation = sim.nodes[sim.address(0)].member("n7").incarnation  # type: ignore[union-attr]
    sim.add(7, [sim.address(0)])
    for _ in range(60):
        sim.run_for(1.0)
        if sim.converged(everyone):
            break
    else:
        pytest.fail(f"n7 not alive everywhere again; {sim.replay_hint()}")
    assert sim.nodes[sim.address(0)].member("n7").incarnation > dead_incarnation  # type: ignore[union-attr]


def test_a_graceful_leave_is_left_not_dead() -> None:
    n = 20
    sim = SwimSim(seed=11, config=LAN)
    start_cluster(sim, n)
    sim.run_for(30.0)
    sim.leave(4)
    sim.run_for(0.5)
    sim.crash(4)
    sim.run_for(30.0)
    states = {v["n4"] for k, v in sim.views().items()}
    assert states == {MemberState.LEFT}, f"{states}; {sim.replay_hint()}"


def test_messages_per_node_per_period_stay_flat_as_the_cluster_grows() -> None:
    rows = []
    for n in (10, 50, 100, 200):
        sim = SwimSim(seed=n, config=LAN)
        start_cluster(sim, n)
        sim.run_for(60.0)
        before_packets = sum(sim.stats.packets.values())
        before_bytes = sum(sim.stats.bytes.values())
        sim.run_for(60.0)
        periods = 60.0 / LAN.probe_interval_s
        packets = (sum(sim.stats.packets.values()) - before_packets) / n / periods
        size = (sum(sim.stats.bytes.values()) - before_bytes) / n / periods
        rows.append((n, packets, size))
    print("\nnodes  packets/node/period  bytes/node/period")
    for n, packets, size in rows:
        print(f"{n:5d}  {packets:19.2f}  {size:17.0f}")
    counts = [p for _, p, _ in rows]
    assert max(counts) / min(counts) < 1.5, rows
