"""The README's operations guide, procedure by procedure, on real node processes.

Each test runs one procedure as an operator would (the same flags, signals and
subcommands the README shows) and checks what the guide promises, with every
wait bounded; the measured times are printed (``-s``) and quoted in the guide:

* **add a node**: a fourth node started with ``--join`` becomes a member, is in
  every ring, is promoted to voter, takes its share of the chunk copies, and
  every blob reads back through it;
* **remove a node**: SIGTERM (a graceful leave) of the coordinator of four:
  every chunk is back to 3 copies on the 3 others, it stops being a voter after
  ``--voter-replace-s``, and writes and reads go on;
* **replace a disk**: a node's data dir is wiped and it starts again under its
  id: it rejoins fenced, is admitted, catches up by snapshot, and the healer
  refills its chunks;
* **back up and restore the metadata**: a backup taken from a serving node;
  later writes; every node's metadata destroyed (chunk files kept); ``restore``
  on one node, which starts as a new cluster of one that the others join:
  exactly the backup's blobs, users, containers, grants and tokens come back,
  and the chunks of the later blobs are collected;
* **upgrade one node at a time**: each node of three, in turn, SIGTERMed and
  started again with the same flags (fixed ports, as in production) while a
  client writes and reads: no acknowledged write lost, a bounded number of
  retried 503s per restart, every blob readable on every node afterwards.

Placement is checked from the chunk files in each data dir against the ring the
nodes build (``node.ring.ring.Ring`` over the live node ids).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from node.gossip.members import Member, MembershipView
from node.ring.ring import Ring
from node.testing.observe import (cluster_view, safe_request, wait_agreed_coordinator,
                                  wait_for)
from node.testing.process import NodeProcess, run_node_cli, start_joined
from tests.e2e.conftest import StartNode
from tests.e2e.helpers import rejoin_args

pytestmark = pytest.mark.e2e

KEY = {"BLOBSTORE_CLUSTER_KEY": "e2e-operations-cluster-key-0123456789"}
R = 3
CHUNK = 64 * 1024
#: The default inline_max: blobs up to this size live in their manifest, without chunks.
INLINE_MAX = 16 * 1024
#: Fast failure detection (probe every 0.2 s); a healing pass at least every 2 s besides the
#: one every ring change starts.
SETTINGS = ("--gossip-preset", "tests", "--chunk-size", "64KiB", "--replicas", str(R),
            "--heal-interval-s", "2s")
BOX = "ops"
#: Every convergence must happen within this long (most take a few seconds).
CONVERGE_S = 45.0

Nodes = dict[str, NodeProcess]
Blobs = dict[str, bytes]


# -- data ---------------------------------------------------------------------------------

def make_blobs(rng: random.Random, prefix: str, count: int) -> Blobs:
    """Every fourth blob small enough to be stored inline; the others 1-4 chunks."""
    return {f"{prefix}-{i}": rng.randbytes(
        rng.randint(100, INLINE_MAX) if i % 4 == 0 else
        rng.randint(1, 3) * CHUNK + rng.randint(1, CHUNK - 1)) for i in range(count)}


def chunk_ids_of(blobs: Blobs) -> set[str]:
    return {hashlib.sha256(data[i:i + CHUNK]).hexdigest() for data in blobs.values()
            if len(data) > INLINE_MAX for i in range(0, len(data), CHUNK)}


def blob_path(op: str, name: str, container: str = BOX) -> str:
    return f"/{op}?{urlencode({'container': container, 'blob': name})}"


def request_ok(node: NodeProcess, token: str, method: str, path: str, expected: int,
               **kwargs: Any) -> Any:
    status, body = safe_request(node, method, path, token=token, timeout_s=30.0, **kwargs)
    assert status == expected, (node.node_id, method, path, status, body)
    return body


def write_blobs(nodes: Iterable[NodeProcess], token: str, blobs: Blobs) -> None:
    """Each blob through the next node, round robin."""
    targets = list(nodes)
    for i, (name, data) in enumerate(blobs.items()):
        request_ok(targets[i % len(targets)], token, "POST", blob_path("put_data", name), 201,
                   body=data)


def read_all(nodes: Iterable[NodeProcess], token: str, blobs: Blobs,
             within_s: float = 20.0) -> int:
    """Every blob through every given node, byte for byte; a 503 (or a node not answering)
    is retried within ``within_s``. The retries."""
    retries = 0
    for node in nodes:
        for name, data in blobs.items():
            deadline = time.monotonic() + within_s
            while True:
                status, body = safe_request(node, "GET", blob_path("get_data", name),
                                            token=token, timeout_s=30.0)
                if status == 200:
                    assert body == data, (node.node_id, name, len(body), len(data))
                    break
                assert status in (0, 503) and time.monotonic() < deadline, \
                    (node.node_id, name, status, body)
                retries += 1
                time.sleep(0.1)
    return retries


# -- watching the cluster ------------------------------------------------------------------

def ring_of(node_ids: Iterable[str]) -> Ring:
    """The ring the nodes build from these live members (equal weights, no zones)."""
    return Ring.build(MembershipView(tuple(Member(n, "", "") for n in sorted(node_ids)), 1))


def holders(live: Iterable[NodeProcess]) -> dict[str, set[str]]:
    """chunk hex id -> the given nodes with a file of that name."""
    found: dict[str, set[str]] = {}
    for node in live:
        for hex_id in node.chunk_ids():
            found.setdefault(hex_id, set()).add(node.node_id)
    return found


def misplaced(live: Iterable[NodeProcess], chunks: set[str],
              expected: Callable[[str], set[str]]) -> list[str]:
    """How the chunk files on the given nodes differ from ``expected`` (first few)."""
    found = holders(live)
    return [f"{h[:12]} on {sorted(found.get(h, set()))}, expected {sorted(expected(h))}"
            for h in sorted(chunks) if found.get(h, set()) != expected(h)][:5]


def owners_among(node_ids: Iterable[str]) -> Callable[[str], set[str]]:
    ring = ring_of(node_ids)
    return lambda hex_id: set(ring.replicas_for(bytes.fromhex(hex_id), R))


def voters_of(node: NodeProcess, token: str) -> set[str]:
    return set(coordinator(node, token).get("voters", []))


def states(node: NodeProcess, token: str) -> dict[str, str]:
    return {m["node_id"]: m["state"] for m in cluster_view(node, token).get("members", [])}


def coordinator(node: NodeProcess, token: str) -> dict[str, Any]:
    return dict(cluster_view(node, token).get("coordinator") or {})


def every(nodes: Iterable[NodeProcess], check: Callable[[NodeProcess], bool]) -> bool:
    return all(check(n) for n in nodes)


def healing_idle(nodes: Iterable[NodeProcess], token: str) -> bool:
    """Every node's last healing pass found nothing missing and nothing in flight."""
    def idle(node: NodeProcess) -> bool:
        chunks = cluster_view(node, token).get("chunks", {})
        return (chunks.get("under_replicated"), chunks.get("being_repaired")) == (0, 0)
    return every(nodes, idle)


def metric(node: NodeProcess, name: str) -> float:
    status, body = safe_request(node, "GET", "/metrics")
    assert status == 200, (node.node_id, status)
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics of {node.node_id}")


def caught_up(node: NodeProcess, leader: NodeProcess, token: str) -> bool:
    """``node`` has applied about all the leader has committed (a few entries of slack:
    the collector and healer keep writing)."""
    return int(coordinator(node, token).get("applied_index", -1)) >= int(
        coordinator(leader, token).get("commit_index", 1 << 62)) - 5


def caught_up_voter(node: NodeProcess, leader: NodeProcess, token: str) -> bool:
    mine = coordinator(node, token)
    return mine.get("fenced") is False and node.node_id in mine.get("voters", []) and \
        caught_up(node, leader, token)


def start_cluster(start_node: StartNode, names: list[str], *extra: str) -> Nodes:
    """The first node alone, the others joining it; returns once all are voters and in
    every ring."""
    nodes = start_joined(lambda name, args: start_node(name, *args, env=KEY), names,
                         (*SETTINGS, *extra))
    token = nodes[names[0]].login()
    wait_for(f"{names} all voters and in every ring", lambda: every(
        nodes.values(), lambda n: sorted(coordinator(n, token).get("voters", [])) == names and
        sorted(cluster_view(n, token).get("ring", {}).get("nodes", [])) == names), 30.0)
    request_ok(nodes[names[0]], token, "POST", "/create_container", 201,
               json_body={"container": BOX})
    return nodes


def stopwatch() -> Callable[[], float]:
    """Seconds since this call: each milestone of a procedure is timed from its start."""
    started = time.monotonic()
    return lambda: time.monotonic() - started


def destroy_metadata(data_dir: Path) -> None:
    """A lost metadata disk: everything but the chunk files (``store/``) and ``node.json``."""
    for path in data_dir.iterdir():
        if path.name.startswith(("meta.sqlite3", "raft.sqlite3")):
            path.unlink()
    shutil.rmtree(data_dir / "snapshots", ignore_errors=True)


# -- add a node ---------------------------------------------------------------------------

def test_add_a_node(start_node: StartNode) -> None:
    rng = random.Random(1)
    nodes = start_cluster(start_node, ["n1", "n2", "n3"])
    token = nodes["n1"].login()
    blobs = make_blobs(rng, "add", 12)
    write_blobs(nodes.values(), token, blobs)
    chunks = chunk_ids_of(blobs)

    since = stopwatch()
    n4 = nodes["n4"] = start_node("n4", *SETTINGS, "--join", nodes["n1"].gossip_address,
                                  env=KEY)
    n4.wait_in_cluster(timeout_s=30.0)
    serving = since()
    wait_for("n4 alive for every node and in every ring", lambda: every(
        nodes.values(), lambda n: states(n, token).get("n4") == "alive" and
        "n4" in cluster_view(n, token).get("ring", {}).get("nodes", [])), 30.0)
    member = since()
    wait_for("n4 admitted and promoted to voter", lambda: "n4" in coordinator(
        nodes["n1"], token).get("voters", []) and coordinator(n4, token).get("fenced") is False,
        30.0)
    voter = since()
    owners = owners_among(nodes)
    wait_for("each chunk on exactly its 3 owners of four", lambda: not misplaced(
        nodes.values(), chunks, owners), CONVERGE_S,
        detail=lambda: misplaced(nodes.values(), chunks, owners))
    balanced = since()
    share = sum(1 for h in chunks if "n4" in owners(h)) / (R * len(chunks))
    assert 0.1 < share < 0.45, share  # ideal 1/4
    wait_for("n4 caught up", lambda: caught_up(
        n4, nodes[wait_agreed_coordinator(nodes.values())], token), 15.0)
    retries = read_all([n4], token, blobs)
    print(f"\nadd, from n4's start: serving {serving:.1f} s, alive in every ring "
          f"{member:.1f} s, a voter {voter:.1f} s, every chunk on its owners {balanced:.1f} "
          f"s (n4 holds {share:.3f} of {R * len(chunks)} copies); {len(blobs)} blobs read "
          f"through it ({retries} retries)")


# -- remove a node ------------------------------------------------------------------------

def test_remove_a_node(start_node: StartNode) -> None:
    rng = random.Random(2)
    names = ["n1", "n2", "n3", "n4"]
    nodes = start_cluster(start_node, names, "--voter-replace-s", "2s")
    token = nodes["n1"].login()
    blobs = make_blobs(rng, "remove", 12)
    write_blobs(nodes.values(), token, blobs)
    chunks = chunk_ids_of(blobs)
    wait_for("each chunk on its 3 owners of four", lambda: not misplaced(
        nodes.values(), chunks, owners_among(nodes)), CONVERGE_S)

    victim = wait_agreed_coordinator(nodes.values())  # the hardest one: it also hands over
    live = [n for name, n in nodes.items() if name != victim]
    since = stopwatch()
    assert nodes[victim].terminate() == 0
    exited = since()
    wait_for(f"{victim} left for every other node", lambda: every(
        live, lambda n: states(n, token).get(victim) == "left"), 15.0)
    left = since()
    wait_for("every chunk back to 3 copies, on the 3 live nodes", lambda: not misplaced(
        live, chunks, lambda h: {n.node_id for n in live}), CONVERGE_S,
        detail=lambda: misplaced(live, chunks, lambda h: {n.node_id for n in live}))
    copied = since()
    wait_for(f"{victim} no longer a voter anywhere", lambda: every(
        live, lambda n: voters_of(n, token) == {n.node_id for n in live}), 30.0)
    removed = since()
    wait_for("healing idle everywhere", lambda: healing_idle(live, token), CONVERGE_S)
    # Writes and reads go on.
    later = make_blobs(rng, "after-leave", 4)
    write_blobs(live, token, later)
    retries = read_all(live, token, {**blobs, **later})
    print(f"\nremove, from SIGTERM to the coordinator {victim}: exited 0 {exited:.1f} s, "
          f"left for all {left:.1f} s, every chunk on the 3 others {copied:.1f} s, no longer "
          f"a voter {removed:.1f} s (--voter-replace-s 2s); writes go on, every blob read "
          f"through the 3 ({retries} retries)")


# -- replace a disk -----------------------------------------------------------------------

def test_replace_a_disk(start_node: StartNode) -> None:
    rng = random.Random(3)
    # Snapshots every 10 entries: the log a replaced disk needs is long gone from every node.
    nodes = start_cluster(start_node, ["n1", "n2", "n3"], "--snapshot-every", "10")
    token = nodes["n1"].login()
    blobs = make_blobs(rng, "disk", 16)
    write_blobs(nodes.values(), token, blobs)
    chunks = chunk_ids_of(blobs)
    leader = wait_agreed_coordinator(nodes.values())
    wait_for("the log compacted", lambda: metric(
        nodes[leader], "blobstore_raft_snapshot_index") > 0, 15.0)

    victim = max(set(nodes) - {leader})
    node = nodes[victim]
    live = [n for name, n in nodes.items() if name != victim]
    assert node.kill() == -9  # the disk died under it
    shutil.rmtree(node.data_dir)
    logged = len(node.log_text())
    since = stopwatch()
    node.start(args=rejoin_args(node, live))  # same id, empty data dir
    node.wait_in_cluster(timeout_s=30.0)
    serving = since()
    assert "joining the cluster (fenced: no vote until admitted)" in node.log_text()[logged:]
    wait_for(f"{victim} admitted: a voter, not fenced, caught up",
             lambda: caught_up_voter(node, nodes[leader], token), 30.0)
    admitted = since()
    assert metric(node, "blobstore_raft_snapshots_installed_total") >= 1
    wait_for(f"the healer refills {victim}'s chunks", lambda: chunks <= node.chunk_ids(),
             CONVERGE_S, detail=lambda: len(chunks - node.chunk_ids()))
    refilled = since()
    for hex_id in chunks:
        assert hashlib.sha256(node.chunk_path(hex_id).read_bytes()).hexdigest() == hex_id
    retries = read_all([node], token, blobs)
    print(f"\nreplace a disk, from {victim}'s start on an empty dir: serving {serving:.1f} "
          f"s, admitted, a voter and caught up (by snapshot) {admitted:.1f} s, its "
          f"{len(chunks)} chunk copies back {refilled:.1f} s ({retries} read retries)")


# -- back up and restore the metadata -----------------------------------------------------

def test_back_up_and_restore_the_metadata(start_node: StartNode, tmp_path: Path) -> None:
    rng = random.Random(4)
    nodes = start_cluster(start_node, ["n1", "n2", "n3"])
    admin = nodes["n1"].login()
    n1 = nodes["n1"]
    request_ok(n1, admin, "POST", "/users", 201,
               json_body={"username": "alice", "password": "alice-password", "role": "user"})
    request_ok(n1, admin, "POST", "/grant_access", 204,
               json_body={"container": BOX, "username": "alice", "permission": "read"})
    alice = n1.login("alice", "alice-password")
    before = make_blobs(rng, "before", 12)
    write_blobs(nodes.values(), admin, before)

    # Online, from a follower (the node keeps serving), once it has applied every write.
    leader = nodes[wait_agreed_coordinator(nodes.values())]
    written = int(coordinator(leader, admin)["commit_index"])
    wait_for("n2 applied every write", lambda: int(coordinator(nodes["n2"], admin).get(
        "applied_index", -1)) >= written, 15.0)
    backup_file = tmp_path / "metadata-backup.sqlite3"
    result = run_node_cli(["backup", "--data-dir", str(nodes["n2"].data_dir),
                           "--out", str(backup_file)])
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["users"], info["containers"], info["grants"], info["blobs"]) == \
        (2, 1, 1, len(before)), info

    # Written after the backup: lost by the restore.
    after = make_blobs(rng, "after", 8)
    write_blobs(nodes.values(), admin, after)
    request_ok(n1, admin, "POST", "/create_container", 201, json_body={"container": "later"})
    request_ok(n1, admin, "POST", "/users", 201,
               json_body={"username": "bob", "password": "bob-password", "role": "user"})
    before_chunks, after_chunks = chunk_ids_of(before), chunk_ids_of(after) - \
        chunk_ids_of(before)

    # The disaster: every node's metadata is gone, the chunk files survived.
    for node in nodes.values():
        assert node.terminate() == 0
        destroy_metadata(node.data_dir)
    since = stopwatch()
    result = run_node_cli(["restore", "--data-dir", str(n1.data_dir),
                           "--from", str(backup_file)])
    assert result.returncode == 0, result.stderr
    restored = json.loads(result.stdout)
    assert restored["node_id"] == "n1" and restored["snapshot_index"] == info["applied_index"]
    # Collect garbage promptly, so the test sees the later blobs' chunks go.
    gc = ("--gc-grace-s", "1s", "--gc-interval-s", "1s")
    n1.start(args=[*SETTINGS, *gc])  # no --join: a new cluster of one
    for name in ("n2", "n3"):
        nodes[name].start(args=[*SETTINGS, *gc, "--join", n1.gossip_address])
    for node in nodes.values():
        node.wait_in_cluster(timeout_s=30.0)
    wait_for("three voters again", lambda: len(coordinator(n1, admin).get("voters", [])) == 3,
             30.0)
    back = since()

    # Exactly the backup's state, tokens included (same signing key, same epochs).
    retries = read_all(nodes.values(), admin, before)
    for name in after:
        request_ok(nodes["n3"], admin, "GET", blob_path("get_data", name), 404)
    body = request_ok(nodes["n2"], admin, "GET", "/list_containers", 200)
    assert [c["container"] for c in body["containers"]] == [BOX]
    body = request_ok(nodes["n3"], admin, "GET", "/users", 200)
    assert sorted(u["username"] for u in body["users"]) == ["admin", "alice"]
    read_all([nodes["n3"]], alice, dict(list(before.items())[:3]))  # her grant and token
    status, _ = safe_request(n1, "POST", "/auth", json_body={"username": "bob",
                                                             "password": "bob-password"})
    assert status == 401
    # The later blobs' chunks are garbage now: collected; the backup's stay on 3 nodes.
    wait_for("the chunks of the later blobs collected everywhere", lambda: not (
        after_chunks & set(holders(nodes.values()))), CONVERGE_S)
    collected = since()
    found = holders(nodes.values())
    assert all(len(found.get(h, set())) == R for h in before_chunks)
    print(f"\nbackup at applied index {info['applied_index']} ({info['blobs']} blobs); from "
          f"the restore's start: three voters serving {back:.1f} s, the {len(after_chunks)} "
          f"chunks of later blobs collected everywhere {collected:.1f} s ({retries} read "
          f"retries)")


# -- upgrade one node at a time -----------------------------------------------------------

#: A client operation (with its retries) that takes longer than this fails the test.
OP_BOUND_S = 20.0
#: At most this many 503s or refused connections while one node restarts (each is retried
#: on the next node, as a client of the cluster would).
RETRIES_PER_RESTART = 25


class Load(threading.Thread):
    """A light client load: PUT a new blob, GET an acknowledged one, through the nodes in
    turn; a 503 or a refused connection is retried (same name, same bytes: idempotent) on
    the next node, within ``OP_BOUND_S``."""

    def __init__(self, nodes: list[NodeProcess], token: str) -> None:
        super().__init__(daemon=True)
        self.nodes, self.token = nodes, token
        self.rng = random.Random(5)
        self.acked: Blobs = {}
        self.phase = "steady"
        #: Retried calls per phase, and how many of them were 503s (the rest: no answer).
        self.retried: dict[str, int] = {}
        self.unavailable: dict[str, int] = {}
        self.problems: list[str] = []
        self.ops = 0
        self.stopping = threading.Event()
        self._next = 0

    def run(self) -> None:
        try:
            while not self.stopping.is_set() and not self.problems:
                name = f"load-{len(self.acked)}"
                data = self.rng.randbytes(self.rng.choice((2000, 70_000, 150_000)))
                if self._call("POST", blob_path("put_data", name), 201, body=data) is None:
                    return
                self.acked[name] = data
                read = self.rng.choice(sorted(self.acked))
                got = self._call("GET", blob_path("get_data", read), 200)
                if got is not None and got != self.acked[read]:
                    self.problems.append(f"{read}: wrong bytes ({len(got)})")
                time.sleep(0.02)
        except Exception as exc:  # a crash of the load must fail the test, not hang it
            self.problems.append(repr(exc))

    def _call(self, method: str, path: str, expected: int, **kwargs: Any) -> Any:
        deadline = time.monotonic() + OP_BOUND_S
        while True:
            node = self.nodes[self._next % len(self.nodes)]
            status, body = safe_request(node, method, path, token=self.token, timeout_s=10.0,
                                        **kwargs)
            self.ops += 1
            if status == expected:
                return body
            self._next += 1
            if status not in (0, 503) or time.monotonic() > deadline:
                self.problems.append(f"{method} {path} on {node.node_id}: {status} {body!r}")
                return None
            self.retried[self.phase] = self.retried.get(self.phase, 0) + 1
            if status == 503:
                self.unavailable[self.phase] = self.unavailable.get(self.phase, 0) + 1
            time.sleep(0.05)


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def blobctl_cluster(node: NodeProcess, token: str, config_dir: Path) -> dict[str, Any]:
    """``blobctl cluster --json``, as the guide has the operator run it between nodes."""
    result = subprocess.run(
        [sys.executable, "-m", "tools.blobctl.cli", "cluster", "--json", "--url", node.url],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("BLOBCTL_")},
             "BLOBCTL_TOKEN": token, "BLOBCTL_CONFIG_DIR": str(config_dir)},
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_upgrade_one_node_at_a_time(start_node: StartNode, tmp_path: Path) -> None:
    names = ["n1", "n2", "n3"]
    ports = free_ports(6)
    http = dict(zip(names, ports[:3]))
    gossip = dict(zip(names, ports[3:]))
    nodes: Nodes = {}
    for name in names:  # each names the other two, as in the Procfile: any one can restart
        seeds = ",".join(f"127.0.0.1:{gossip[o]}" for o in names if o != name)
        nodes[name] = start_node(name, *SETTINGS, "--bootstrap-expect", "3", "--join", seeds,
                                 env=KEY, http_port=http[name], gossip_port=gossip[name])
    for node in nodes.values():
        node.wait_in_cluster(timeout_s=30.0)
    token = nodes["n1"].login()
    request_ok(nodes["n1"], token, "POST", "/create_container", 201,
               json_body={"container": BOX})

    load = Load(list(nodes.values()), token)
    load.start()
    timings = []
    try:
        wait_for("the load has written", lambda: len(load.acked) >= 10 or bool(load.problems),
                 30.0)
        for name in names:
            node = nodes[name]
            load.phase = f"restart {name}"
            acked_before = len(load.acked)
            stopping = time.monotonic()
            assert node.terminate() == 0, node.log_tail()
            starting = time.monotonic()
            # (the new software would be installed here)
            node.start()  # exactly the same command line
            node.wait_in_cluster(timeout_s=30.0)
            serving = time.monotonic()
            leader = wait_agreed_coordinator(nodes.values())
            wait_for(f"{name} alive everywhere, caught up, nothing to heal", lambda: (
                every(nodes.values(), lambda n: states(n, token).get(name) == "alive") and
                caught_up(node, nodes[leader], token) and
                healing_idle(nodes.values(), token)), CONVERGE_S)
            done = time.monotonic()
            view = blobctl_cluster(node, token, tmp_path / "blobctl")
            assert {m["node_id"]: m["state"] for m in view["members"]} == dict.fromkeys(
                names, "alive")
            assert all(h.get("status") == "ok" for h in view["member_health"].values()), view
            load.phase = "steady"
            assert not load.problems, load.problems
            timings.append(f"{name}: exited {starting - stopping:.1f} s after SIGTERM, "
                           f"serving {serving - starting:.1f} s after its start, alive "
                           f"everywhere, caught up and healed {done - serving:.1f} s later; "
                           f"{load.retried.get(f'restart {name}', 0)} retried calls "
                           f"({load.unavailable.get(f'restart {name}', 0)} of them 503s), "
                           f"{len(load.acked) - acked_before} writes acknowledged meanwhile")
        wait_for("a few more writes after the last restart",
                 lambda: len(load.acked) >= acked_before + 10 or bool(load.problems), 30.0)
    finally:
        load.stopping.set()
        load.join(timeout=OP_BOUND_S + 15)
    assert not load.is_alive() and not load.problems, load.problems
    for name in names:
        assert load.retried.get(f"restart {name}", 0) <= RETRIES_PER_RESTART, load.retried
    retries = read_all(nodes.values(), token, load.acked)
    # Writes acknowledged while a node was down got 2 copies; healing made them 3.
    assert not misplaced(nodes.values(), chunk_ids_of(load.acked), lambda h: set(names))
    print(f"\nupgrade: {len(load.acked)} acknowledged writes ({load.ops} calls), none lost, "
          f"every one read back on every node ({retries} retries)\n  " + "\n  ".join(timings))
