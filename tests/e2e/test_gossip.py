"""Membership on real processes: five nodes on loopback gossiping over UDP and TCP.

One SIGKILLed node is declared dead by all others, one SIGTERMed node leaves
(``left``, not ``dead``), and restarted nodes rejoin as alive with a higher
incarnation. The nodes run the ``tests`` gossip preset (probe every 0.2 s).
"""

from __future__ import annotations

import time

import pytest

from node.gossip.config import TESTS
from node.gossip.suspicion import suspicion_bounds
from node.testing.observe import wait_for
from node.testing.process import NodeProcess
from tests.e2e.conftest import StartNode

pytestmark = pytest.mark.e2e

KEY = {"BLOBSTORE_CLUSTER_KEY": "e2e-gossip-cluster-key-0123456789"}
PRESET = ("--gossip-preset", "tests")


def detection_bound_s(n: int) -> float:
    """As in the simulations: first suspicion, the longest suspicion, the final check,
    then dissemination; tripled for a shared 2-core machine running five processes."""
    _, longest = suspicion_bounds(n, TESTS.probe_interval_s, TESTS.suspicion_mult,
                                  TESTS.suspicion_max_mult)
    return 3 * (10 * TESTS.probe_interval_s + longest
                + TESTS.probe_interval_s * TESTS.awareness_max + 2.0)


def states(node: NodeProcess, token: str) -> dict[str, tuple[str, int]]:
    status, body = node.request("GET", "/cluster", token=token)
    assert status == 200, body
    return {m["node_id"]: (m["state"], m["incarnation"]) for m in body["members"]}


def test_five_processes_agree_on_crashes_leaves_and_restarts(start_node: StartNode) -> None:
    first = start_node("n1", *PRESET, env=KEY)
    nodes = {"n1": first}
    for i in range(2, 6):
        nodes[f"n{i}"] = start_node(f"n{i}", *PRESET, "--join", first.gossip_address,
                                    env=KEY)
    for node in nodes.values():
        node.wait_in_cluster()
    # One cluster, one metadata store: a token from one node works on every other.
    token = first.login()
    tokens = {name: token for name in nodes}

    def everyone_sees(expected: dict[str, str], observers: list[str]) -> bool:
        return all({k: v[0] for k, v in states(nodes[o], tokens[o]).items()} == expected
                   for o in observers)

    all_alive = {name: "alive" for name in nodes}
    took = wait_for("five nodes see five alive", lambda: everyone_sees(all_alive, list(nodes)),
                    30)
    print(f"\n5 processes converged {took:.1f} s after the last start")
    assert all(nodes[n].request("GET", "/health")[1]["members"] == 5 for n in nodes)

    incarnation_before = states(first, tokens["n1"])["n5"][1]
    nodes["n5"].kill()
    bound = detection_bound_s(5)
    took = wait_for("n5 dead everywhere after SIGKILL",
                    lambda: everyone_sees({**all_alive, "n5": "dead"}, ["n1", "n2", "n3", "n4"]),
                    bound)
    print(f"SIGKILLed n5 declared dead by all 4 others after {took:.1f} s (bound {bound:.1f} s)")

    assert nodes["n4"].terminate() == 0
    took = wait_for("n4 left everywhere after SIGTERM",
                    lambda: everyone_sees({**all_alive, "n5": "dead", "n4": "left"},
                                          ["n1", "n2", "n3"]), 10)
    print(f"SIGTERMed n4 seen as left by all 3 others after {took:.1f} s")
    assert "left" in {states(nodes[o], tokens[o])["n4"][0] for o in ("n1", "n2", "n3")}

    for name in ("n5", "n4"):
        nodes[name].start(args=[*PRESET, "--join", first.gossip_address])
        tokens[name] = nodes[name].login()
    took = wait_for("restarted nodes alive everywhere",
                    lambda: everyone_sees(all_alive, list(nodes)), 30)
    print(f"restarted n4 and n5 alive everywhere after {took:.1f} s")
    assert states(first, tokens["n1"])["n5"][1] > incarnation_before


def test_a_node_with_another_cluster_key_cannot_join(start_node: StartNode) -> None:
    first = start_node("n1", *PRESET, env=KEY)
    second = start_node("n2", *PRESET, "--join", first.gossip_address,
                        env={"BLOBSTORE_CLUSTER_KEY": "some-other-cluster-key-0123456789"})
    time.sleep(3.0)  # many protocol periods at 0.2 s
    assert first.request("GET", "/health")[1]["members"] == 1
    assert second.request("GET", "/health")[1]["members"] == 1
    status, metrics = first.request("GET", "/metrics")
    assert status == 200
    rejected = [float(line.split()[-1]) for line in metrics.decode().splitlines()
                if line.startswith("blobstore_gossip_push_pulls_rejected_total ")]
    assert rejected and rejected[0] >= 1, metrics.decode()[-3000:]
