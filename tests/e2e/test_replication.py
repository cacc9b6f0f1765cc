"""Replication and healing on real processes: five nodes, R = 3, 64 KiB chunks.

One campaign, in three steps on one cluster (a cluster start costs seconds):

a. Blobs written through several nodes; the coordinator and one other node
   (picked with a seeded random) are SIGKILLed. Every blob reads back
   byte-identical through every survivor; once the survivors declare the two
   dead, every chunk is back to 3 copies, which on 3 live nodes means on all
   of them, and every chunk file hashes to its name.
b. The two come back on their data dirs: every chunk ends on exactly the 3
   owners the ring names, the surplus copies are dropped.
c. A sixth node joins: it ends with about a sixth of the copies, every chunk on
   exactly its 3 owners.

Copies are counted from the chunk files in each live node's data dir
(``<data_dir>/store/chunks/<hex[0:2]>/<hex>``), owners are computed with
``node.ring.ring.Ring`` over the live node ids, as the nodes do. Measured times
are printed (run with ``-s``); ``E2E_SEED=N`` replays a choice of victims and data.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from node.gossip.members import Member, MembershipView
from node.ring.ring import Ring
from node.testing.process import NodeProcess, start_joined
from tests.e2e.conftest import StartNode
from node.testing.observe import cluster_view, wait_agreed_coordinator, wait_for
from tests.e2e.helpers import client, create_container, get, put, rejoin_args

pytestmark = pytest.mark.e2e

KEY = {"BLOBSTORE_CLUSTER_KEY": "e2e-replication-cluster-key-0123456789"}
R = 3
CHUNK = 64 * 1024
#: Fast failure detection (probe every 0.2 s), and a healing pass at least every 2 s as a
#: backstop to the pass every ring change starts.
SETTINGS = ("--gossip-preset", "tests", "--chunk-size", "64KiB", "--replicas", str(R),
            "--heal-interval-s", "2s")
BOX = "heal"
BLOBS = 8
#: Each step's convergence must happen within this long (it takes about a second).
CONVERGE_S = 45.0

Nodes = dict[str, NodeProcess]
#: chunk hex id -> the live nodes holding a file of that name
Holders = dict[str, set[str]]


# -- helpers ------------------------------------------------------------------------------

def member_states(node: NodeProcess, token: str) -> dict[str, str]:
    return {m["node_id"]: m["state"] for m in cluster_view(node, token).get("members", [])}


def ring_nodes(node: NodeProcess, token: str) -> set[str]:
    return set(cluster_view(node, token).get("ring", {}).get("nodes", []))


def ring_of(node_ids: Iterable[str]) -> Ring:
    """The ring the nodes build from these live members (equal weights, no zones)."""
    members = tuple(Member(n, "", "") for n in sorted(node_ids))
    return Ring.build(MembershipView(members, version=1))


def holders(live: Iterable[NodeProcess]) -> Holders:
    """Which live nodes hold a chunk file of each name (names only: cheap to poll)."""
    found: Holders = {}
    for node in live:
        for hex_id in node.chunk_ids():
            found.setdefault(hex_id, set()).add(node.node_id)
    return found


def placement_problems(found: Holders, chunks: set[str],
                       expected: Callable[[str], set[str]]) -> list[str]:
    """Every way the files on disk differ from ``expected`` holders (first few)."""
    problems = [f"{h[:12]} on {sorted(found.get(h, set()))}, expected {sorted(expected(h))}"
                for h in sorted(chunks) if found.get(h, set()) != expected(h)]
    problems += [f"{h[:12]} is no chunk of ours (on {sorted(found[h])})"
                 for h in sorted(set(found) - chunks)]
    return problems


def check_files_hash_to_names(live: Iterable[NodeProcess]) -> int:
    """Read back every chunk file of every live node; the number of files checked."""
    checked = 0
    for node in live:
        for hex_id in node.chunk_ids():
            data = node.chunk_path(hex_id).read_bytes()
            assert hashlib.sha256(data).hexdigest() == hex_id, (node.node_id, hex_id)
            checked += 1
    return checked


def chunk_ids_of(data: bytes) -> set[str]:
    return {hashlib.sha256(data[i:i + CHUNK]).hexdigest() for i in range(0, len(data), CHUNK)}


def read_all(nodes: Iterable[NodeProcess], token: str, blobs: dict[str, str],
             within_s: float = 20.0) -> tuple[int, float]:
    """Every blob through every given node, byte-identical (by SHA-256). A 503 (no
    coordinator yet, after it was killed) is retried, bounded; (retries, seconds)."""
    started = time.monotonic()
    retries = 0
    for node in nodes:
        with client(node, token) as c:
            for name, sha in blobs.items():
                deadline = time.monotonic() + within_s
                while True:
                    try:
                        r = get(c, BOX, name)
                    except httpx.TransportError as exc:
                        status, body = 0, repr(exc)
                    else:
                        status, body = r.status_code, r.text if r.status_code != 200 else ""
                        if status == 200:
                            assert hashlib.sha256(r.content).hexdigest() == sha, \
                                (node.node_id, name, len(r.content))
                            break
                    assert status in (0, 503) and time.monotonic() < deadline, \
                        (node.node_id, name, status, body[:300])
                    retries += 1
                    time.sleep(0.1)
    return retries, time.monotonic() - started


def start_five(start_node: StartNode) -> Nodes:
    """n1, then n2..n5 in parallel joining it; five voters from the start."""
    return start_joined(lambda name, args: start_node(name, *args, env=KEY),
                        [f"n{i}" for i in range(1, 6)], (*SETTINGS, "--bootstrap-expect", "5"))


def healing_counters(live: Iterable[NodeProcess], token: str) -> dict[str, tuple[int, int]]:
    """(under_replicated, being_repaired) as each live node's /cluster reports them."""
    out: dict[str, tuple[int, int]] = {}
    for node in live:
        chunks = cluster_view(node, token).get("chunks", {})
        out[node.node_id] = (chunks.get("under_replicated", -1),
                             chunks.get("being_repaired", -1))
    return out


# -- the campaign -------------------------------------------------------------------------

def test_two_crashes_heal_to_three_copies_restarts_to_the_owners_and_a_join_takes_a_sixth(
        start_node: StartNode) -> None:
    seed = int(os.environ.get("E2E_SEED") or random.randrange(2**31))
    print(f"\nreplication seed: E2E_SEED={seed}")
    rng = random.Random(seed)
    started = time.monotonic()
    nodes = start_five(start_node)
    token = nodes["n1"].login()
    wait_for("every node has all five in its ring",
             lambda: all(ring_nodes(n, token) == set(nodes) for n in nodes.values()), 30.0)
    print(f"5 nodes up in {time.monotonic() - started:.1f} s")

    # Blobs of 1..3 MiB and an odd tail (about 16 MiB, some 250 chunks), written round-robin
    # through every node.
    blobs: dict[str, str] = {}
    chunks: set[str] = set()
    with client(nodes["n1"], token) as c:
        create_container(c, BOX)
    names = sorted(nodes)
    for i in range(BLOBS):
        data = rng.randbytes(rng.randint(1 << 20, 3 << 20) + rng.randint(1, CHUNK - 1))
        with client(nodes[names[i % len(names)]], token) as c:
            r = put(c, BOX, f"blob-{i}", data)
        assert r.status_code == 201, r.text
        blobs[f"blob-{i}"] = hashlib.sha256(data).hexdigest()
        chunks |= chunk_ids_of(data)
    ring5 = ring_of(nodes)

    def owners5(hex_id: str) -> set[str]:
        return set(ring5.replicas_for(bytes.fromhex(hex_id), R))

    # Written to exactly the owners (no node was down).
    assert not placement_problems(holders(nodes.values()), chunks, owners5)
    print(f"{len(blobs)} blobs, {len(chunks)} chunks written")

    # -- a. SIGKILL the coordinator and one other node ----------------------------------
    leader = wait_agreed_coordinator(nodes.values())
    victims = [leader, rng.choice(sorted(set(nodes) - {leader}))]
    live = {name: n for name, n in nodes.items() if name not in victims}
    killed_at = time.monotonic()
    for name in victims:
        assert nodes[name].kill() == -signal.SIGKILL
    alive3 = set(live)
    with ThreadPoolExecutor(1) as pool:  # reads go on while the survivors detect and heal
        reads = pool.submit(read_all, live.values(), token, blobs)
        wait_for(f"{victims} dead for every survivor", lambda: all(
            all(member_states(n, token).get(v) == "dead" for v in victims)
            for n in live.values()), 30.0, interval_s=0.05)
        declared_at = time.monotonic()
        took = wait_for("every chunk on the 3 live nodes",
                        lambda: not placement_problems(holders(live.values()), chunks,
                                                       lambda h: alive3),
                        CONVERGE_S, detail=lambda: placement_problems(
                            holders(live.values()), chunks, lambda h: alive3)[:5])
        retries, read_s = reads.result(timeout=120.0)
    print(f"killed {victims} (coordinator {leader}): every blob read back through "
          f"{sorted(live)} in {read_s:.1f} s ({retries} retried 503s)")
    print(f"{victims} declared dead by all survivors {declared_at - killed_at:.1f} s after "
          f"the kill; every chunk back to 3 live copies {took:.1f} s later")
    wait_for("the survivors report nothing under-replicated or being repaired",
             lambda: set(healing_counters(live.values(), token).values()) == {(0, 0)},
             CONVERGE_S, detail=lambda: healing_counters(live.values(), token))
    print(f"  /cluster under_replicated 0 everywhere {time.monotonic() - declared_at:.1f} s "
          f"after the deaths were seen")
    checked = check_files_hash_to_names(live.values())
    assert checked == R * len(chunks)

    # -- b. the two come back: exactly the owners hold each chunk -----------------------
    restarted_at = time.monotonic()
    with ThreadPoolExecutor(len(victims)) as pool:
        list(pool.map(lambda name: nodes[name].start(
            args=rejoin_args(nodes[name], live.values())), victims))
    for name in victims:
        nodes[name].wait_in_cluster(timeout_s=30.0)
    wait_for("every node has all five in its ring again",
             lambda: all(ring_nodes(n, token) == set(nodes) for n in nodes.values()), 30.0)
    in_ring_s = time.monotonic() - restarted_at
    took = wait_for("exactly the owners hold each chunk",
                    lambda: not placement_problems(holders(nodes.values()), chunks, owners5),
                    CONVERGE_S, detail=lambda: placement_problems(
                        holders(nodes.values()), chunks, owners5)[:5])
    dropped = sum(cluster_view(n, token)["chunks"]["surplus_dropped"] for n in nodes.values())
    print(f"{victims} restarted, in every ring {in_ring_s:.1f} s after their start; exactly "
          f"the owners hold each chunk {took:.1f} s later ({dropped} surplus copies dropped)")
    assert dropped > 0
    read_all([nodes[v] for v in victims], token, blobs)

    # -- c. a sixth node joins: it takes about a sixth of the copies --------------------
    joined_at = time.monotonic()
    nodes["n6"] = start_node("n6", *SETTINGS, "--join", nodes["n1"].gossip_address, env=KEY)
    nodes["n6"].wait_in_cluster(timeout_s=30.0)
    wait_for("every node has all six in its ring",
             lambda: all(ring_nodes(n, token) == set(nodes) for n in nodes.values()), 30.0)
    in_ring_s = time.monotonic() - joined_at
    ring6 = ring_of(nodes)

    def owners6(hex_id: str) -> set[str]:
        return set(ring6.replicas_for(bytes.fromhex(hex_id), R))

    took = wait_for("each chunk on exactly its 3 owners of six",
                    lambda: not placement_problems(holders(nodes.values()), chunks, owners6),
                    CONVERGE_S, detail=lambda: placement_problems(
                        holders(nodes.values()), chunks, owners6)[:5])
    found = holders(nodes.values())
    share = sum(1 for h in chunks if "n6" in found[h]) / (R * len(chunks))
    print(f"n6 joined, in every ring {in_ring_s:.1f} s after its start; rebalanced {took:.1f} "
          f"s later: it holds {share:.3f} of all copies (ideal {1 / 6:.3f}, "
          f"{len(chunks)} chunks)")
    assert 0.08 < share < 0.30, share
    assert all(len(found[h]) == R for h in chunks)
    wait_for("every node reports nothing under-replicated or being repaired",
             lambda: set(healing_counters(nodes.values(), token).values()) == {(0, 0)},
             CONVERGE_S, detail=lambda: healing_counters(nodes.values(), token))
    assert check_files_hash_to_names(nodes.values()) == R * len(chunks)
    read_all([nodes["n6"]], token, blobs)
    print(f"whole campaign {time.monotonic() - started:.1f} s")
