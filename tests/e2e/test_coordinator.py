"""The Raft-elected coordinator on real processes: three nodes on loopback.

Three nodes started with ``--bootstrap-expect 3`` form one Raft group of three
voters and keep the coordinator they elected while nothing fails. A SIGKILLed
leader is replaced while clients keep writing through the survivors (failover
measured from the kill to the first acknowledged write after it; writes in flight
at the crash are answered within the same bound, not after the whole meta
timeout), and no acknowledged write is lost, also not on the killed node once it
is restarted on its data dir. Without a quorum, writes and linearizable reads answer 503 within
``--meta-timeout-s`` and the cut-off leader steps down; a node coming back
restores the quorum. A SIGTERMed leader hands leadership over before it exits 0.

Measured figures are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from node.testing.process import NodeProcess, start_joined
from tests.e2e.conftest import StartNode
from node.testing.observe import (agreed_coordinator, coordinator_of, health, safe_request,
                                  wait_agreed_coordinator, wait_for)
from tests.e2e.helpers import rejoin_args

pytestmark = pytest.mark.e2e

KEY = {"BLOBSTORE_CLUSTER_KEY": "e2e-coordinator-cluster-key-0123456789"}
PRESET = ("--gossip-preset", "tests")
EXPECT = ("--bootstrap-expect", "3")
#: The default --election-timeout-s: a follower stands for election after 1 to 2 of these.
ELECTION_TIMEOUT_S = 0.8
#: The default --meta-timeout-s.
META_TIMEOUT_S = 5.0
#: The issue asks for a failover "within about two seconds": twice that, for a shared 2-core
#: machine, and still below META_TIMEOUT_S, so that clients that only get through after
#: their requests timed out do not count as a failover.
FAILOVER_BOUND_S = 4.0
MARGIN_S = 2.0
#: A probing client gives up on a request after this long and sends a new one.
PROBE_TIMEOUT_S = 0.5

Nodes = dict[str, NodeProcess]


# -- helpers ------------------------------------------------------------------------------

def coordinator_view(node: NodeProcess, token: str, retry_s: float = 10.0) -> dict[str, Any]:
    """The ``coordinator`` part of /cluster (its authentication reads linearizably, so it
    is retried while it answers 503)."""
    deadline = time.monotonic() + retry_s
    while True:
        status, body = safe_request(node, "GET", "/cluster", token=token, timeout_s=15.0)
        if status == 200:
            return dict(body["coordinator"])
        assert status == 503 and time.monotonic() < deadline, (node.node_id, status, body)
        time.sleep(0.1)


def container_names(node: NodeProcess, token: str, retry_s: float = 10.0) -> set[str]:
    """Every container (a linearizable read; retried while it answers 503)."""
    deadline = time.monotonic() + retry_s
    while True:
        status, body = safe_request(node, "GET", "/list_containers", token=token,
                                    timeout_s=15.0)
        if status == 200:
            return {c["container"] for c in body["containers"]}
        assert status == 503 and time.monotonic() < deadline, (node.node_id, status, body)
        time.sleep(0.1)


def create(node: NodeProcess, token: str, name: str, timeout_s: float = 15.0
           ) -> tuple[int, Any]:
    return safe_request(node, "POST", "/create_container", token=token,
                        json_body={"container": name}, timeout_s=timeout_s)


def create_eventually(node: NodeProcess, token: str, name: str, within_s: float = 15.0
                      ) -> int:
    """Create a container needed by the test, retrying while the answer is 503 (or no
    answer), bounded; the number of attempts (more than one is printed)."""
    deadline = time.monotonic() + within_s
    answers: list[int] = []
    while True:
        status, body = create(node, token, name)
        answers.append(status)
        if status == 201 or (status == 409 and len(answers) > 1):  # 409: an earlier try
            if len(answers) > 1:
                print(f"  creating {name} via {node.node_id} took answers {answers}")
            return len(answers)
        assert status in (0, 503) and time.monotonic() < deadline, (name, answers, body)
        time.sleep(0.1)


def start_three(start_node: StartNode, *extra: str) -> Nodes:
    """n1, then n2 and n3 (in parallel) joining it, all expecting three; waits until
    every node serves and names the same coordinator."""
    started = time.monotonic()
    nodes = start_joined(lambda name, args: start_node(name, *args, env=KEY),
                         ["n1", "n2", "n3"], (*PRESET, *EXPECT, *extra))
    leader = wait_agreed_coordinator(nodes.values())
    print(f"\n3 nodes started and agreed on coordinator {leader} "
          f"in {time.monotonic() - started:.1f} s")
    return nodes


@dataclass
class Outcome:
    name: str
    via: str
    started: float
    ended: float
    status: int  # 0: timeout or connection error
    detail: Any

    @property
    def acknowledged(self) -> bool:
        return self.status == 201


class Writers:
    """One client thread per node, each creating containers back to back until stopped or
    retired, at most ``max_s`` seconds or ``max_writes`` writes; every outcome is kept:
    201 is acknowledged, anything else leaves the outcome unknown."""

    def __init__(self, nodes: Iterable[NodeProcess], token: str, prefix: str, *,
                 max_s: float = 20.0, max_writes: int = 2000,
                 request_timeout_s: float = META_TIMEOUT_S + 5.0) -> None:
        self.token = token
        self.prefix = prefix
        self.max_s = max_s
        self.max_writes = max_writes
        self.request_timeout_s = request_timeout_s
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stops = {n.node_id: threading.Event() for n in nodes}
        self._threads = {n.node_id: threading.Thread(target=self._run, args=(n,), daemon=True)
                         for n in nodes}

    def __enter__(self) -> Writers:
        for t in self._threads.values():
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for node_id in self._threads:
            self.retire(node_id)

    def retire(self, node_id: str) -> None:
        """Stop writing through ``node_id`` (waits for its write in flight)."""
        self._stops[node_id].set()
        self._threads[node_id].join(timeout=self.request_timeout_s + 5.0)
        assert not self._threads[node_id].is_alive(), f"the writer via {node_id} is stuck"

    def _run(self, node: NodeProcess) -> None:
        deadline = time.monotonic() + self.max_s
        stop = self._stops[node.node_id]
        for i in range(self.max_writes):
            if stop.is_set() or time.monotonic() > deadline:
                return
            name = f"{self.prefix}-{node.node_id}-{i:05d}"
            started = time.monotonic()
            status, body = create(node, self.token, name, self.request_timeout_s)
            with self._lock:
                self.outcomes.append(Outcome(name, node.node_id, started, time.monotonic(),
                                             status, body))

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def acked_after(self, t: float) -> list[Outcome]:
        return [o for o in self.snapshot() if o.acknowledged and o.started >= t]

    def acknowledged(self) -> set[str]:
        return {o.name for o in self.snapshot() if o.acknowledged}

    def attempted(self) -> set[str]:
        return {o.name for o in self.snapshot()}

    def summary(self) -> str:
        by_status: dict[int, int] = {}
        for o in self.snapshot():
            by_status[o.status] = by_status.get(o.status, 0) + 1
        return f"{sum(by_status.values())} writes, by status {dict(sorted(by_status.items()))}"

    def report_around(self, t0: float, until: float, slow_s: float = 1.0) -> list[str]:
        """Writes that were not acknowledged or took longer than ``slow_s``, from ``t0``."""
        return [f"{o.name} via {o.via}: {o.status} after {o.ended - o.started:.2f} s "
                f"(started {o.started - t0:+.2f} s){error_message(o.detail)}"
                for o in self.snapshot()
                if o.ended >= t0 and o.started <= until
                and (not o.acknowledged or o.ended - o.started > slow_s)]


def error_message(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return f" {body['error'].get('message')!r}"
    return f" {body!r}" if isinstance(body, str) else ""


def probe_until_acknowledged(nodes: list[NodeProcess], token: str, prefix: str,
                             within_s: float = 15.0,
                             client_timeout_s: float = PROBE_TIMEOUT_S
                             ) -> tuple[float, list[Outcome]]:
    """A client that gives up on a request after ``client_timeout_s`` and sends a new one
    (alternating nodes) until one is acknowledged; (the time of that ack, every outcome)."""
    outcomes: list[Outcome] = []
    started = time.monotonic()
    for i in range(10_000):
        node = nodes[i % len(nodes)]
        t = time.monotonic()
        status, body = create(node, token, f"{prefix}-{i:05d}", client_timeout_s)
        outcomes.append(Outcome(f"{prefix}-{i:05d}", node.node_id, t, time.monotonic(),
                                status, body))
        if status == 201:
            return outcomes[-1].ended, outcomes
        assert time.monotonic() - started < within_s, \
            f"no write acknowledged within {within_s} s: {outcomes[-5:]}"
        time.sleep(0.02)
    raise AssertionError("probe: too many attempts")


class LeaderWatch:
    """Polls /health of ``nodes`` in a thread from now on: when they first all name one
    coordinator other than ``exclude``."""

    def __init__(self, nodes: list[NodeProcess], exclude: str, within_s: float = 15.0
                 ) -> None:
        self.seen_at: float | None = None
        self._thread = threading.Thread(target=self._run, args=(nodes, exclude, within_s),
                                        daemon=True)
        self._thread.start()

    def _run(self, nodes: list[NodeProcess], exclude: str, within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if agreed_coordinator(nodes) not in (None, exclude):
                self.seen_at = time.monotonic()
                return
            time.sleep(0.02)

    def result(self) -> float:
        self._thread.join(timeout=20.0)
        assert self.seen_at is not None, "no new coordinator named"
        return self.seen_at


def check_no_acknowledged_write_lost(nodes: Iterable[NodeProcess], token: str,
                                     acknowledged: set[str], attempted: set[str]) -> None:
    for node in nodes:
        listed = container_names(node, token)
        missing = acknowledged - listed
        assert not missing, (f"{node.node_id} lost {len(missing)} acknowledged writes: "
                             f"{sorted(missing)[:10]}")
        assert listed <= attempted, f"containers nobody created: {sorted(listed - attempted)}"


def check_coordinator_kept(nodes: Nodes, token: str, leader: str, idle_s: float = 3.0
                           ) -> None:
    """While idle for ``idle_s`` (about four election timeouts) and nothing fails, every
    node keeps naming ``leader``, and the term does not change."""
    term = coordinator_view(nodes[leader], token)["term"]
    seen: list[tuple[float, str, str | None]] = []
    started = time.monotonic()
    while time.monotonic() - started < idle_s:
        for name, node in nodes.items():
            named = coordinator_of(node)
            if named != leader:
                seen.append((round(time.monotonic() - started, 2), name, named))
        time.sleep(0.05)
    terms = {name: coordinator_view(node, token)["term"] for name, node in nodes.items()}
    print(f"idle for {idle_s} s with coordinator {leader} (term {term}): {len(seen)} other "
          f"answers; terms now {terms}")
    assert not seen, (f"the coordinator {leader} (term {term}) changed while idle: "
                      f"(seconds, node, named) {seen[:12]}; terms now {terms}")
    assert set(terms.values()) == {term}, terms


# -- tests --------------------------------------------------------------------------------

def test_three_nodes_form_one_coordinator_group_and_keep_it(start_node: StartNode) -> None:
    nodes = start_three(start_node)
    token = nodes["n2"].login()  # a login on one node is accepted by every node
    views: dict[str, dict[str, Any]] = {}

    def consistent() -> bool:  # the views are read one after another: retry (bounded)
        views.clear()
        views.update({name: coordinator_view(node, token) for name, node in nodes.items()})
        return len({(v["node_id"], v["term"]) for v in views.values()}) == 1

    wait_for("one consistent view of the coordinator", consistent, 10.0, interval_s=0.1)
    leader = views["n1"]["node_id"]
    assert leader in nodes, views
    assert [n for n, v in views.items() if v["this_node"] == "leader"] == [leader], views
    assert all(v["this_node"] == "follower" for n, v in views.items() if n != leader), views
    for name, v in views.items():
        assert v["voters"] == ["n1", "n2", "n3"], (name, v)
        assert v["learners"] == [], (name, v)
    assert set(views[leader]["match_index"]) == set(nodes) - {leader}, views
    # One cluster, bootstrapped once: a write anywhere is visible everywhere at once.
    for name, node in nodes.items():
        create_eventually(node, token, f"from-{name}")
    for node in nodes.values():
        assert container_names(node, token) == {f"from-{n}" for n in nodes}

    # Nothing fails, so nobody stands for election: the coordinator stays while idle.
    leader = wait_agreed_coordinator(nodes.values())
    check_coordinator_kept(nodes, token, leader)

    # The same once a coordinator was elected in an idle cluster: SIGKILL the leader (no
    # client traffic), the survivors elect another, which then stays.
    survivors = {name: node for name, node in nodes.items() if name != leader}
    killed_at = time.monotonic()
    assert nodes[leader].kill() == -signal.SIGKILL
    new_leader = wait_agreed_coordinator(survivors.values(), timeout_s=15.0, exclude=leader)
    print(f"idle cluster: leader {leader} SIGKILLed, the survivors named {new_leader} after "
          f"{time.monotonic() - killed_at:.2f} s")
    check_coordinator_kept(survivors, token, new_leader)


def test_leader_sigkill_fails_over_and_loses_no_acknowledged_write(
        start_node: StartNode) -> None:
    nodes = start_three(start_node)
    token = nodes["n1"].login()

    with Writers(nodes.values(), token, "w", max_s=25.0) as writers:
        wait_for("acknowledged writes before the kill",
                 lambda: len(writers.acknowledged()) >= 30, 10.0, interval_s=0.05)
        # Under load: the coordinator now, and its term (for the check below).
        old_name = wait_agreed_coordinator(nodes.values())
        old = nodes[old_name]
        old_term = coordinator_view(old, token)["term"]
        writers.retire(old_name)  # from now on, clients write through the survivors only
        survivors = [n for name, n in nodes.items() if name != old_name]
        killed_at = time.monotonic()
        assert old.kill() == -signal.SIGKILL
        leader_seen = LeaderWatch(survivors, exclude=old_name)
        # A client that does not wait on a request sent to a dead leader.
        probe_ack, probe = probe_until_acknowledged(survivors, token, "p")
        new_name = wait_agreed_coordinator(survivors, timeout_s=15.0, exclude=old_name)
        new_leader_s = leader_seen.result() - killed_at
        wait_for("an acknowledged write started after the kill",
                 lambda: bool(writers.acked_after(killed_at)), 15.0, interval_s=0.02)
        first_ack = min(writers.acked_after(killed_at), key=lambda o: o.ended)
        wait_for("writes under the new leader",
                 lambda: len(writers.acked_after(first_ack.ended)) >= 20, 10.0, interval_s=0.05)
    failover_s = probe_ack - killed_at
    writers_failover_s = first_ack.ended - killed_at
    print(f"leader {old_name} (term {old_term}) SIGKILLed; election timeout "
          f"{ELECTION_TIMEOUT_S} s: failover {failover_s:.2f} s (first acknowledged write of "
          f"a client retrying after {PROBE_TIMEOUT_S} s, {len(probe)} tries); survivors "
          f"named {new_name} after {new_leader_s:.2f} s; the continuous writers' first "
          f"acknowledged write {writers_failover_s:.2f} s after the kill "
          f"(via {first_ack.via}); {writers.summary()}")
    for line in writers.report_around(killed_at, first_ack.ended):
        print(f"  not acknowledged or slow: {line}")
    in_doubt = [o for o in writers.snapshot() + probe if not o.acknowledged]
    # Unacknowledged writes are 503 Unavailable or lost connections, nothing else (a 409
    # would be a retried write of the client's own name answered as a conflict).
    assert all(o.status in (0, 503) for o in in_doubt), in_doubt
    assert failover_s < FAILOVER_BOUND_S, (failover_s, probe)

    new_view = coordinator_view(nodes[new_name], token)
    assert new_view["term"] > old_term, new_view
    assert new_view["voters"] == ["n1", "n2", "n3"], new_view
    acknowledged = writers.acknowledged() | {o.name for o in probe if o.acknowledged}
    attempted = writers.attempted() | {o.name for o in probe}
    check_no_acknowledged_write_lost(survivors, token, acknowledged, attempted)
    committed = {o.name for o in in_doubt} & container_names(survivors[0], token)
    print(f"of {len(in_doubt)} writes in doubt, {len(committed)} committed after all")

    # The killed node comes back on its data dir and catches up.
    restarted_at = time.monotonic()
    old.start(args=rejoin_args(old, survivors))
    old.wait_in_cluster(timeout_s=30.0)
    wait_for(f"{old_name} lists every acknowledged container",
             lambda: acknowledged <= container_names(old, token), 20.0, interval_s=0.1)
    print(f"{old_name} restarted: lists all {len(acknowledged)} acknowledged containers "
          f"{time.monotonic() - restarted_at:.1f} s after its start")
    check_no_acknowledged_write_lost([old], token, acknowledged, attempted)
    leader = wait_agreed_coordinator(nodes.values(), timeout_s=10.0)  # the same, on all three
    view = coordinator_view(old, token)
    assert view["voters"] == ["n1", "n2", "n3"], view
    print(f"after the restart all three name {leader}")
    create_eventually(old, token, "after-restart")

    # Last (so that the checks above run whatever happens here): a write in flight at the
    # crash, or sent before the survivors knew of it, is answered within the failover bound
    # too, acknowledged or 503 if its outcome is unknown. No client of a cluster that has a
    # quorum again waits out the whole meta timeout.
    late = [o for o in writers.snapshot()
            if o.ended > killed_at and o.started < killed_at + new_leader_s
            and o.ended - killed_at >= FAILOVER_BOUND_S]
    assert not late, (
        f"the cluster took writes again {failover_s:.2f} s after the crash (new coordinator "
        f"after {new_leader_s:.2f} s), but writes in flight then were answered only after: "
        f"{writers.report_around(killed_at, first_ack.ended)}")


def test_without_a_quorum_writes_and_reads_answer_503_until_a_node_returns(
        start_node: StartNode) -> None:
    meta_timeout_s = 2.0
    nodes = start_three(start_node, "--meta-timeout-s", str(meta_timeout_s))
    token = nodes["n1"].login()
    before = {f"before-{i}" for i in range(3)}
    for name in sorted(before):
        create_eventually(nodes["n1"], token, name)
    # Keep the coordinator: it must notice by itself that it lost its quorum.
    leader_name = wait_agreed_coordinator(nodes.values())
    survivor = nodes[leader_name]
    victims = [n for name, n in nodes.items() if name != leader_name]
    for victim in victims:
        assert victim.kill() == -signal.SIGKILL
    lost_quorum_at = time.monotonic()
    # Watch the survivor's /health while the requests below wait for their timeout.
    stepped_down: list[float] = []

    def watch() -> None:
        deadline = lost_quorum_at + 3 * meta_timeout_s + 5.0
        while time.monotonic() < deadline:
            answer = health(survivor)
            if "coordinator" in answer and answer["coordinator"] is None:
                stepped_down.append(time.monotonic() - lost_quorum_at)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    started = time.monotonic()
    status, body = create(survivor, token, "lonely")
    write_s = time.monotonic() - started
    assert status == 503, (status, body)
    assert body["error"]["code"] == "Unavailable", body

    started = time.monotonic()
    status, body = safe_request(survivor, "GET", "/list_containers", token=token,
                                timeout_s=15.0)
    read_s = time.monotonic() - started
    assert status == 503, (status, body)
    assert body["error"]["code"] == "Unavailable", body

    watcher.join(timeout=3 * meta_timeout_s + 10.0)
    assert stepped_down, "the survivor still names a coordinator (no check-quorum step-down)"
    print(f"no quorum (meta timeout {meta_timeout_s} s): a write answered 503 after "
          f"{write_s:.2f} s, list_containers 503 after {read_s:.2f} s; the survivor "
          f"{leader_name} named no coordinator {stepped_down[0]:.2f} s after the kills")
    assert write_s < meta_timeout_s + MARGIN_S, write_s
    assert read_s < meta_timeout_s + MARGIN_S, read_s
    assert stepped_down[0] < 5.0, stepped_down

    # One node comes back: a quorum of two again, and writes are taken.
    back = victims[0]
    restarted_at = time.monotonic()
    back.start(args=rejoin_args(back, [survivor]))
    attempts = iter(range(1000))
    acknowledged: list[str] = []

    def write_succeeds() -> bool:
        name = f"after-{next(attempts)}"
        if create(survivor, token, name, 5.0)[0] == 201:
            acknowledged.append(name)
            return True
        return False

    wait_for("a write through the survivor succeeds", write_succeeds, 30.0, interval_s=0.1)
    print(f"{back.node_id} restarted: writes acknowledged again "
          f"{time.monotonic() - restarted_at:.1f} s after its start")
    back.wait_in_cluster(timeout_s=15.0)
    for node in (survivor, back):
        assert before | set(acknowledged) <= container_names(node, token)
    wait_agreed_coordinator([survivor, back], timeout_s=10.0)


def test_leader_sigterm_hands_leadership_over_and_exits_0(start_node: StartNode) -> None:
    nodes = start_three(start_node)
    token = nodes["n1"].login()

    with Writers(nodes.values(), token, "t", max_s=25.0) as writers:
        wait_for("acknowledged writes before the stop",
                 lambda: len(writers.acknowledged()) >= 30, 10.0, interval_s=0.05)
        old_name = wait_agreed_coordinator(nodes.values())
        old = nodes[old_name]
        old_term = coordinator_view(old, token)["term"]
        writers.retire(old_name)
        others = [n for name, n in nodes.items() if name != old_name]
        stopped_at = time.monotonic()
        old.signal(signal.SIGTERM)
        new_name = wait_agreed_coordinator(others, timeout_s=10.0, exclude=old_name)
        handover_s = time.monotonic() - stopped_at
        code = old.wait(30.0)
        exit_s = time.monotonic() - stopped_at
        wait_for("an acknowledged write started after the stop",
                 lambda: bool(writers.acked_after(stopped_at)), 10.0, interval_s=0.02)
        first_ack = min(writers.acked_after(stopped_at), key=lambda o: o.ended)
        wait_for("writes under the new leader",
                 lambda: len(writers.acked_after(first_ack.ended)) >= 20, 10.0, interval_s=0.05)
    print(f"leader {old_name} SIGTERMed: the others named {new_name} after "
          f"{handover_s:.3f} s; first acknowledged write after "
          f"{first_ack.ended - stopped_at:.3f} s; it exited {code} after {exit_s:.2f} s; "
          f"{writers.summary()}")
    for line in writers.report_around(stopped_at, first_ack.ended):
        print(f"  not acknowledged or slow: {line}")
    assert code == 0, old.log_tail()
    assert "handing leadership over" in old.log_text()
    # A handover does not wait out an election timeout (a follower waits 0.8 to 1.6 s).
    assert handover_s < ELECTION_TIMEOUT_S, handover_s
    in_doubt = [o for o in writers.snapshot() if not o.acknowledged]
    assert all(o.status in (0, 503) for o in in_doubt), in_doubt
    new_view = coordinator_view(nodes[new_name], token)
    assert new_view["term"] > old_term, new_view
    check_no_acknowledged_write_lost(others, token, writers.acknowledged(),
                                     writers.attempted())
