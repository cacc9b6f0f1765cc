"""The whole gossip stack (drivers, wire format, in-memory network) on trio's MockClock.

Each scenario runs in one ``trio.run`` under ``MockClock(autojump_threshold=0)``
from one seed (``node.testing.gossip_cluster``), prints what it measured (run
with -s), and names its seed and the command that replays it in every failure
message; ``GOSSIP_SIM_SEED=<seed>`` replaces every test's seed. Times are mock
seconds, the network a LAN (0.5-2 ms one way) and the preset LAN throughout.

``node.testing.swim_sim`` (tests/sim/test_swim_core.py) runs the same scenarios
on the SWIM core alone; these add the drivers' tasks and timers, HMAC-sealed
datagrams with replay protection, and push-pulls over streams.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from node.gossip.config import LAN, GossipConfig
from node.gossip.members import MemberState
from node.gossip.suspicion import suspicion_bounds
from node.testing.gossip_cluster import GossipCluster, Transition, derive_key, run_cluster

pytestmark = pytest.mark.sim

T = TypeVar("T")

ALIVE, SUSPECT, DEAD, LEFT = (MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD,
                              MemberState.LEFT)
DEFAULT_SEED = 1
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Sim:
    """A test's seed, and how to replay it."""

    seed: int
    nodeid: str

    @property
    def replay(self) -> str:
        return (f"seed={self.seed}; replay: GOSSIP_SIM_SEED={self.seed} "
                f".venv/bin/pytest -s '{self.nodeid}'")

    def why(self, message: str) -> str:
        return f"{message} [{self.replay}]"

    def run(self, scenario: Callable[[GossipCluster], Awaitable[T]], *,
            seed: int | None = None, **options: Any) -> T:
        """``run_cluster`` with this seed; whatever it raises carries the replay command."""
        try:
            return run_cluster(self.seed if seed is None else seed, scenario, **options)
        except BaseException as exc:
            exc.add_note(self.replay)
            raise


@pytest.fixture
def sim(request: pytest.FixtureRequest) -> Sim:
    return Sim(int(os.environ.get("GOSSIP_SIM_SEED", DEFAULT_SEED)), request.node.nodeid)


def detection_bound_s(n: int, config: GossipConfig = LAN) -> float:
    """From a crash to dead in every view, at most: the first failed probe within 10
    periods (P(nobody probes it for 10 periods) ~ e^-10), the longest suspicion (a lone
    one, never confirmed), the final check (one probe period at the worst awareness),
    then the death's dissemination: log2(n) gossip rounds, generously doubled, times 4."""
    _, longest = suspicion_bounds(n, config.probe_interval_s, config.suspicion_mult,
                                  config.suspicion_max_mult)
    final_check_s = config.probe_interval_s * config.awareness_max
    return (10 * config.probe_interval_s + longest + final_check_s
            + 2 * math.log2(n) * config.gossip_interval_s * 4)


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def everyone_sees(cluster: GossipCluster, member: int, *states: MemberState) -> bool:
    """Every running member but ``member`` has it in one of ``states``."""
    return all(state in states for state in cluster.states(member).values())


def side_sees(cluster: GossipCluster, observers: Iterable[int], members: Iterable[int],
              state: MemberState) -> bool:
    members = list(members)
    for i in observers:
        view = {m.node_id: m.state for m in cluster.nodes[i].gossip.view.members}
        if any(view.get(cluster.node_id(j)) is not state for j in members):
            return False
    return True


# -- joining ---------------------------------------------------------------------------


def test_a_cluster_started_at_once_converges_to_one_view(sim: Sim) -> None:
    n, limit_s = 100, 120.0

    async def scenario(cluster: GossipCluster) -> tuple[float | None, Counter[str]]:
        await cluster.start_all(n)
        elapsed = await cluster.wait_until(cluster.converged, limit_s, poll_s=0.1)
        return elapsed, cluster.stats()

    elapsed, stats = sim.run(scenario)
    print(f"\n[seed {sim.seed}] {n} nodes started at once, all joining through n0: one view "
          f"after {seconds(elapsed)}; {stats['push_pulls']} push-pulls done, "
          f"{stats['push_pulls_failed']} failed, {stats['datagrams_sent']} datagrams sent")
    assert elapsed is not None, sim.why(f"{n} nodes have no single view after {limit_s} s")


# -- failure detection -----------------------------------------------------------------


def test_a_crashed_node_is_declared_dead_by_every_member_within_the_bound(sim: Sim) -> None:
    n, crashes = 50, 3
    bound_s = detection_bound_s(n)

    async def scenario(cluster: GossipCluster) -> list[tuple[int, float | None, float | None]]:
        await cluster.start_all(n)
        assert await cluster.wait_until(cluster.converged, 60.0), sim.why("no start")
        # One victim after another, each from the live ones, chosen by the seed.
        found = []
        for victim in cluster.rng("victims").sample(range(1, n), crashes):
            crashed_at = trio.current_time()
            cluster.crash(victim)
            dead_s = await cluster.wait_until(
                partial(everyone_sees, cluster, victim, DEAD), bound_s, poll_s=0.1)
            suspected = [t.at_s - crashed_at for t in cluster.transitions
                         if t.member == cluster.node_id(victim) and t.at_s >= crashed_at]
            found.append((victim, min(suspected, default=None), dead_s))
            await trio.sleep(10.0)
        return found

    found = sim.run(scenario, track=True)
    print(f"\n[seed {sim.seed}] crashes in {n} nodes (bound {bound_s:.1f} s):")
    for crashed, (victim, suspected_s, dead_s) in enumerate(found, start=1):
        print(f"  n{victim}: first suspected after {seconds(suspected_s)}, dead in all "
              f"{n - crashed} live views after {seconds(dead_s)}")
    times = [dead_s for _, _, dead_s in found if dead_s is not None]
    if times:
        print(f"  median {statistics.median(times):.1f} s, max {max(times):.1f} s")
    for victim, _, dead_s in found:
        assert dead_s is not None, sim.why(
            f"n{victim} not dead in every view within {bound_s:.1f} s")


# 20% loss keeps every queue busy (about 8 times the datagrams of a quiet cluster), so
# that run is shorter, to keep the default run's wall time down: in 30 s it still sees
# about 60 suspicions raised (2,700 suspect events in views, 240 refutations), and every
# suspicion raised in the first 20 s has outlived its shortest timeout (7 s at 50 nodes).
# The campaign (--run-slow) runs it for 60 s as well: twice the suspicions.
@pytest.mark.parametrize(("loss", "run_s"), [
    (0.05, 120.0), (0.20, 30.0), pytest.param(0.20, 60.0, marks=pytest.mark.slow)])
def test_no_live_member_is_declared_dead_under_packet_loss(sim: Sim, loss: float,
                                                           run_s: float) -> None:
    n = 50

    async def scenario(cluster: GossipCluster
                       ) -> tuple[Counter[str], list[str], list[Transition]]:
        await cluster.start_all(n)
        await trio.sleep(run_s)
        views = cluster.views()
        problems = [f"{observer} sees {m.node_id} {m.state.value}"
                    for observer, view in views.items() for m in view.values()
                    if m.state in (DEAD, LEFT)]
        problems += [f"{observer} knows {len(view)} of {n}"
                     for observer, view in views.items() if len(view) != n]
        return cluster.stats(), problems, cluster.transitions

    stats, problems, transitions = sim.run(scenario, track=True, drop_rate=loss)
    suspect_events = sum(1 for t in transitions if t.state is SUSPECT)
    deaths = [t for t in transitions if t.state in (DEAD, LEFT)]
    print(f"\n[seed {sim.seed}] {loss:.0%} loss, {n} nodes, {run_s:.0f} s, no crash: "
          f"{stats['suspicions_raised']} suspicions raised, {suspect_events} suspect events "
          f"in views, {stats['suspicions_refuted']} refutations, {stats['final_checks']} "
          f"final checks ({stats['final_checks_answered']} answered), "
          f"{len(deaths)} false deaths")
    assert deaths == [], sim.why(f"live members declared dead: {deaths[:5]}")
    assert problems == [], sim.why(f"views at the end: {problems[:5]}")


# -- partitions, restarts, leaving -----------------------------------------------------


# Each half declares the other dead, then one view must come back: a push-pull with a
# dead member (every reconnect_every-th) crosses the healed split and the refutations
# spread. The same happens at 20 nodes as at 40 (seed 1: split after 20 s, one view 60 s
# after healing, against 19 s and 87 s) for a third of the time, so the default run
# splits 20 (test_swim_core splits 40 on the core alone) and the campaign also splits 40.
@pytest.mark.parametrize("n", [20, pytest.param(40, marks=pytest.mark.slow)])
def test_a_healed_partition_ends_in_one_view(sim: Sim, n: int) -> None:
    west, east = range(n // 2), range(n // 2, n)

    async def scenario(cluster: GossipCluster) -> tuple[float | None, float | None]:
        await cluster.start_all(n)
        assert await cluster.wait_until(cluster.converged, 60.0), sim.why("no start")
        cluster.partition(west, east)
        split_s = await cluster.wait_until(
            lambda: side_sees(cluster, west, east, DEAD) and side_sees(cluster, east, west,
                                                                       DEAD),
            300.0, poll_s=0.5)
        cluster.heal()
        healed_s = await cluster.wait_until(cluster.converged, 600.0, poll_s=0.5)
        return split_s, healed_s

    split_s, healed_s = sim.run(scenario)
    print(f"\n[seed {sim.seed}] {n} nodes split {len(west)}/{len(east)}: each side saw the "
          f"other dead after {seconds(split_s)}; one view {seconds(healed_s)} after healing")
    assert split_s is not None, sim.why("the sides did not declare each other dead in 300 s")
    assert healed_s is not None, sim.why("views still differ 600 s after healing")


def test_a_restarted_node_refutes_its_death_with_a_higher_incarnation(sim: Sim) -> None:
    n, victim = 20, 7
    bound_s = detection_bound_s(n)

    @dataclass
    class Outcome:
        dead_s: float | None = None
        dead_at: frozenset[int] = frozenset()   # incarnations it was declared dead at
        back_s: float | None = None
        own: int = -1                           # the new life's incarnation
        seen: frozenset[int] = frozenset()      # ... and the one the others have

    async def scenario(cluster: GossipCluster) -> Outcome:
        out = Outcome()
        name = cluster.node_id(victim)
        await cluster.start_all(n)
        assert await cluster.wait_until(cluster.converged, 60.0), sim.why("no start")
        cluster.crash(victim)
        out.dead_s = await cluster.wait_until(lambda: everyone_sees(cluster, victim, DEAD),
                                              bound_s, poll_s=0.1)
        if out.dead_s is None:
            return out
        out.dead_at = frozenset(v[name].incarnation for v in cluster.views().values())
        node = await cluster.restart(victim)
        out.back_s = await cluster.wait_until(cluster.converged, 60.0, poll_s=0.1)
        out.own = node.gossip.swim.incarnation
        out.seen = frozenset(v[name].incarnation for v in cluster.views().values())
        return out

    out = sim.run(scenario)
    print(f"\n[seed {sim.seed}] n{victim} crashed: dead everywhere after {seconds(out.dead_s)} "
          f"at incarnation {sorted(out.dead_at)}; restarted at incarnation 0: alive "
          f"everywhere after {seconds(out.back_s)}, at incarnation {out.own} "
          f"(in the views: {sorted(out.seen)})")
    assert out.dead_s is not None, sim.why(f"n{victim} not dead everywhere in {bound_s:.1f} s")
    assert out.back_s is not None, sim.why(f"n{victim} not alive everywhere 60 s after restart")
    assert out.own > max(out.dead_at), sim.why(f"incarnation {out.own} after {out.dead_at}")
    assert out.seen == {out.own}, sim.why(f"views disagree: {out.seen}")


def test_a_node_restarted_before_anyone_noticed_takes_over_its_old_entry(sim: Sim) -> None:
    """A replaced disk: the node is killed and back at once, at incarnation 0 and with other
    tags, while every view still has it alive at a higher incarnation (its tags changed a
    few times in its first life, each at a new incarnation). Its old Alive must not shadow
    the new life: it refutes with an incarnation above the old one, everyone adopts its new
    tags, and nobody declares it dead."""
    n, victim = 10, 3

    @dataclass
    class Outcome:
        old: int = -1                           # its incarnation in every view before
        back_s: float | None = None
        own: int = -1
        seen: frozenset[int] = frozenset()
        tags: frozenset[tuple[tuple[str, str], ...]] = frozenset()
        states: frozenset[MemberState] = frozenset()

    async def scenario(cluster: GossipCluster) -> Outcome:
        out = Outcome()
        name = cluster.node_id(victim)
        await cluster.start_all(n)
        assert await cluster.wait_until(cluster.converged, 60.0), sim.why("no start")
        first = cluster.nodes[victim].gossip
        for tags in ({"raft": "new"}, {"raft": "member"}, {"raft": "member", "group": "g"}):
            first.set_tags(tags)
        assert await cluster.wait_until(lambda: {v[name].incarnation for v in
                                                 cluster.views().values()} == {3}, 30.0)
        out.old = 3
        began = trio.current_time()
        node = await cluster.restart(victim)
        node.gossip.set_tags({"raft": "new", "expect": "1"})

        def adopted() -> bool:
            views = cluster.views()
            return cluster.converged() and all(
                dict(v[name].tags) == {"raft": "new", "expect": "1"} for v in views.values())
        out.back_s = await cluster.wait_until(adopted, 30.0, poll_s=0.05)
        out.own = node.gossip.swim.incarnation
        views = cluster.views().values()
        out.seen = frozenset(v[name].incarnation for v in views)
        out.states = frozenset(t.state for t in cluster.transitions
                               if t.member == name and t.observer != name and t.at_s >= began)
        return out

    out = sim.run(scenario, track=True)
    print(f"\n[seed {sim.seed}] n{victim} (alive at incarnation {out.old} everywhere) restarted "
          f"at once at incarnation 0 with new tags: its new life in every view after "
          f"{seconds(out.back_s)}, at incarnation {out.own} (in the views: {sorted(out.seen)});"
          f" states the others saw meanwhile: {sorted(s.value for s in out.states)}")
    assert out.back_s is not None, sim.why(f"n{victim}'s new life not adopted in 30 s")
    assert out.own > out.old and out.seen == {out.own}, sim.why(
        f"incarnation {out.own} after {out.old}; views: {out.seen}")
    assert DEAD not in out.states, sim.why("the restarted node was declared dead")


def test_a_graceful_leave_ends_as_left_everywhere(sim: Sim) -> None:
    n, leaver = 20, 4
    after_s = detection_bound_s(n)  # long enough for any suspicion of it to have ended

    async def scenario(cluster: GossipCluster
                       ) -> tuple[float | None, list[Transition], dict[str, Any]]:
        await cluster.start_all(n)
        assert await cluster.wait_until(cluster.converged, 60.0), sim.why("no start")
        began = trio.current_time()
        await cluster.leave(leaver, timeout_s=5.0)
        await trio.sleep(after_s)
        name = cluster.node_id(leaver)
        seen = [t for t in cluster.transitions
                if t.member == name and t.observer != name and t.at_s >= began]
        lefts = [t.at_s - began for t in seen if t.state is LEFT]
        everywhere_s = max(lefts) if len(lefts) == n - 1 else None
        return everywhere_s, seen, cluster.states(leaver)

    everywhere_s, seen, states = sim.run(scenario, track=True)
    print(f"\n[seed {sim.seed}] n{leaver} left {n} nodes: left in every view "
          f"{seconds(everywhere_s)} after it began to leave; what the others saw: "
          f"{dict(Counter(t.state.value for t in seen))}; {after_s:.0f} s later: "
          f"{dict(Counter(s.value if s else None for s in states.values()))}")
    assert set(states.values()) == {LEFT}, sim.why(f"final states {states}")
    assert not [t for t in seen if t.state is DEAD], sim.why(f"declared dead: {seen}")
    assert everywhere_s is not None, sim.why(f"not exactly one 'left' per member: {seen}")


# -- the wire: keys, duplicates, reordering --------------------------------------------


def test_a_node_with_the_wrong_key_never_becomes_a_member(sim: Sim) -> None:
    n, intruder = 10, 10

    async def scenario(cluster: GossipCluster) -> dict[str, Any]:
        await cluster.start_all(n)
        assert await cluster.wait_until(cluster.converged, 60.0), sim.why("no start")
        # It believes in every member (as if from an earlier life), so it pings and
        # gossips to them, and it keeps asking n0 to let it join.
        node = await cluster.start(intruder, key=derive_key(cluster.seed, "wrong"),
                                   preload=range(n), member=False)
        await trio.sleep(60.0)
        cluster.crash(intruder)
        await trio.sleep(1.0)  # its last datagrams land
        members, its = cluster.stats(range(n)), cluster.stats([intruder])
        return {"converged": cluster.converged(range(n)),
                "knowing": [o for o, v in cluster.views().items()
                            if cluster.node_id(intruder) in v],
                "sent": node.transport.packets_sent, "accepted": its["datagrams_accepted"],
                "bad_mac": members["bad_mac"], "rejected": members["push_pulls_rejected"]}

    out = sim.run(scenario)
    print(f"\n[seed {sim.seed}] wrong key, 60 s: the intruder sent {out['sent']} datagrams; "
          f"the members counted {out['bad_mac']} bad_mac and rejected {out['rejected']} "
          f"push-pulls; it accepted {out['accepted']} datagrams; members that know it: "
          f"{out['knowing']}")
    assert out["knowing"] == [], sim.why(f"members that know the intruder: {out['knowing']}")
    assert out["converged"], sim.why("the members lost their single view")
    assert out["sent"] > 0 and out["bad_mac"] == out["sent"], sim.why(
        f"the intruder sent {out['sent']} datagrams, bad_mac counted {out['bad_mac']}")
    assert out["rejected"] > 0, sim.why("its join push-pulls were not rejected")
    assert out["accepted"] == 0, sim.why(f"the intruder accepted {out['accepted']} datagrams")


def test_duplicated_and_reordered_datagrams_do_no_harm(sim: Sim) -> None:
    n, run_s, duplicate_rate = 30, 60.0, 0.2
    delay_s = (0.0005, 0.05)  # a spread 100 times the minimum: datagrams overtake each other

    async def scenario(cluster: GossipCluster) -> tuple[bool, Counter[str], int, int, int]:
        await cluster.start_all(n)
        await trio.sleep(run_s)
        net = cluster.network
        suspected = sum(1 for t in cluster.transitions if t.state is not ALIVE)
        return (cluster.converged(), cluster.stats(), net.stats.packets_duplicated,
                net.packets_in_flight, suspected)

    converged, stats, duplicated, in_flight, suspected = sim.run(
        scenario, track=True, duplicate_rate=duplicate_rate, delay_s=delay_s)
    print(f"\n[seed {sim.seed}] {duplicate_rate:.0%} duplicated, delays {delay_s} s, "
          f"{n} nodes, {run_s:.0f} s: {duplicated} duplicates sent, {stats['replayed']} "
          f"replays counted ({in_flight} datagrams in flight), {stats['datagrams_accepted']} "
          f"accepted, {suspected} suspect/dead/left events, "
          f"{stats['stale'] + stats['malformed']} stale or malformed")
    assert converged, sim.why("no single view")
    assert suspected == 0, sim.why(f"{suspected} suspect, dead or left events")
    assert stats["replayed"] > 0, sim.why("no replay counted")
    # Every duplicate that has landed was refused as a replay, and nothing else was.
    assert duplicated - in_flight <= stats["replayed"] <= duplicated, sim.why(
        f"duplicates {duplicated}, in flight {in_flight}, replays {stats['replayed']}")
    assert stats["stale"] == stats["malformed"] == 0, sim.why("stale or malformed datagrams")


# -- cost ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cost:
    n: int
    settled_s: float | None
    datagrams: float            # per node per protocol period
    datagram_bytes: float       # per node per protocol period
    push_pull_bytes: float      # one exchange (a full state each way), on average


# The joins' dissemination to settle before the window grows as N^2 log N (every node
# piggybacks every join about 4 log10(N) times): 200 nodes take twice as long as 10, 50
# and 100 together, so they are in the campaign (--run-slow); the default run still sees
# the cost stay flat over a tenfold growth, and test_swim_core checks the core up to 200.
@pytest.mark.parametrize("sizes", [
    (10, 50, 100), pytest.param((10, 50, 100, 200), marks=pytest.mark.slow)],
    ids=["up-to-100", "up-to-200"])
def test_messages_and_bytes_per_node_per_period_stay_flat_as_the_cluster_grows(
        sim: Sim, sizes: tuple[int, ...]) -> None:
    window_s = 20.0
    periods = window_s / LAN.probe_interval_s

    async def measure(n: int, cluster: GossipCluster) -> Cost:
        await cluster.start_all(n)

        def quiet() -> bool:  # one view, and the news of every join gossiped out
            return cluster.converged() and not any(
                node.gossip.swim.pending_updates for node in cluster.nodes.values())

        settled_s = await cluster.wait_until(quiet, 120.0, poll_s=0.5)
        before = cluster.stats()
        await trio.sleep(window_s)
        delta = cluster.stats() - before
        per = n * periods
        streamed = delta["bytes_out"] - delta["datagram_bytes_sent"]
        return Cost(n, settled_s, delta["datagrams_sent"] / per,
                    delta["datagram_bytes_sent"] / per, streamed / max(1, delta["push_pulls"]))

    costs = [sim.run(partial(measure, n)) for n in sizes]
    # Push-pulls (anti-entropy: a full state each way) are shown apart: each node starts
    # one every push_pull_interval(N), so their cost per node grows as N / log N by design.
    print(f"\n[seed {sim.seed}] per node per protocol period, over {window_s:.0f} s once the "
          "joins settled; push-pulls amortized over their interval:")
    print("nodes  settled  datagrams  datagram bytes | push-pull bytes  every  "
          "bytes/node/period")
    for c in costs:
        interval_s = LAN.push_pull_interval(c.n)
        amortized = c.push_pull_bytes / interval_s * LAN.probe_interval_s
        print(f"{c.n:5d}  {seconds(c.settled_s):>7}  {c.datagrams:9.2f}  "
              f"{c.datagram_bytes:14.0f} | {c.push_pull_bytes:15.0f}  {interval_s:3.0f} s  "
              f"{amortized:17.0f}")
    for c in costs:
        assert c.settled_s is not None, sim.why(f"{c.n} nodes did not settle in 120 s")
    for name in ("datagrams", "datagram_bytes"):
        values = [getattr(c, name) for c in costs]
        assert max(values) / min(values) < 1.5, sim.why(f"{name} per node per period {values}")


# -- determinism -----------------------------------------------------------------------


async def mixed_faults(cluster: GossipCluster) -> tuple[str, int]:
    """A bit of everything (loss, duplicates, delays, a crash, a restart, a leave, a
    partition); the fingerprint of the run and how many view changes it saw."""
    n = 12
    await cluster.start_all(n)
    await trio.sleep(5.0)
    cluster.crash(3)
    await trio.sleep(15.0)
    await cluster.restart(3)
    await cluster.leave(5, timeout_s=2.0)
    cluster.partition(range(6), range(6, n))
    await trio.sleep(10.0)
    cluster.heal()
    await trio.sleep(5.0)
    return cluster.fingerprint(), len(cluster.transitions)


MIXED_FAULTS: dict[str, Any] = {"track": True, "drop_rate": 0.05, "duplicate_rate": 0.05,
                "delay_s": (0.0005, 0.02)}


def test_the_same_seed_replays_the_same_run(sim: Sim) -> None:
    first = sim.run(mixed_faults, **MIXED_FAULTS)
    again = sim.run(mixed_faults, **MIXED_FAULTS)
    other = sim.run(mixed_faults, seed=sim.seed + 1, **MIXED_FAULTS)
    # A replay runs in a new process, where hashes and object ids differ.
    elsewhere = subprocess.run(
        [sys.executable, __file__, str(sim.seed)], cwd=REPO, check=True, capture_output=True,
        text=True, env={**os.environ, "PYTHONHASHSEED": str(sim.seed + 12345)}).stdout.split()
    print(f"\n[seed {sim.seed}] fingerprint {first[0][:16]} ({first[1]} view changes); "
          f"again: {again[0][:16]}; in another process: {elsewhere[0][:16]}; "
          f"seed {sim.seed + 1}: {other[0][:16]}")
    assert again == first, sim.why("the same seed gave two different runs")
    assert elsewhere == [first[0], str(first[1])], sim.why("another process gave another run")
    assert other[0] != first[0], sim.why("another seed gave the same run")


if __name__ == "__main__":
    # The replay of ``mixed_faults`` in a process of its own (used by the test above).
    fingerprint, changes = run_cluster(int(sys.argv[1]), mixed_faults, **MIXED_FAULTS)
    print(fingerprint, changes)
