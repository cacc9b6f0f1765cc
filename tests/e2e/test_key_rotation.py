"""Rotating the cluster key (README, "Rotating the cluster key") on real processes.

Three nodes under a light client load go through the README's three steps,
one node restarted (SIGTERM, start) at a time: 1) the new key accepted
(``BLOBSTORE_CLUSTER_KEYS_ACCEPTED``), 2) the new key current and the old one
accepted, 3) the old key dropped. After every restart the cluster has its three
members and a coordinator, and a write through the restarted node and one
through another (each chunk to all three nodes over RPC) succeed, so nodes that
sign with different keys work together. At the end no acknowledged write is
lost, and the old key is refused: an RPC handshake with it fails on every node,
and a gossip datagram sealed with it is dropped as a bad MAC, while one sealed
with the new key is accepted once and then dropped as a replay.
"""

from __future__ import annotations

import hashlib
import random
import socket
import threading
import time
from typing import Any

import pytest
import trio

from node.gossip.messages import Packet
from node.gossip.wire import seal_packet
from node.rpc.channel import ChannelError, connect_channel
from node.testing.observe import health, safe_request, wait_for
from node.testing.process import NodeProcess, start_joined
from tests.e2e.conftest import StartNode
from tests.e2e.helpers import rejoin_args

pytestmark = pytest.mark.e2e

OLD = "rotation-old-cluster-key-0123456789"
NEW = "rotation-new-cluster-key-0123456789"
ARGS = ("--gossip-preset", "tests", "--chunk-size", "64KiB", "--replicas", "3")
NAMES = ("n1", "n2", "n3")
#: The README's steps: (current key, accepted keys), each applied to every node in turn.
STEPS = ((OLD, NEW), (NEW, OLD), (NEW, None))
BLOB_BYTES = 100 * 1024  # two chunks: every write goes to every node over RPC


def body(i: int) -> bytes:
    return random.Random(i).randbytes(BLOB_BYTES)


class Load:
    """One client thread writing new blobs through the running nodes, round robin, with a
    pause between writes; it records what was acknowledged (201)."""

    def __init__(self, nodes: dict[str, NodeProcess], token: str) -> None:
        self.nodes = nodes
        self.token = token
        self.acknowledged: dict[str, str] = {}
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        for i in range(100_000):  # bounded; stopped long before
            if self._stop.wait(0.1):
                return
            node = list(self.nodes.values())[i % len(self.nodes)]
            if not node.running:
                continue
            name = f"load-{i}"
            status, answer = safe_request(node, "POST", f"/put_data?container=rot&blob={name}",
                                          token=self.token, body=body(i), timeout_s=10)
            if status == 201:
                self.acknowledged[name] = str(answer["etag"])
            else:
                self.failed += 1


def write(node: NodeProcess, token: str, name: str, i: int) -> None:
    """A write through ``node`` that must succeed (503s retried for a few seconds: a
    restart may still be settling)."""
    outcomes: list[Any] = []

    def stored() -> bool:
        status, answer = safe_request(node, "POST", f"/put_data?container=rot&blob={name}",
                                      token=token, body=body(i), timeout_s=10)
        outcomes.append((status, answer))
        return status == 201
    wait_for(f"a write through {node.node_id}", stored, 10.0, interval_s=0.2,
             detail=lambda: outcomes[-3:])


def all_members(nodes: dict[str, NodeProcess]) -> bool:
    views = [health(node) for node in nodes.values()]
    return all(v.get("status") == "ok" and v.get("members") == 3 and v.get("coordinator")
               for v in views)


def metric(node: NodeProcess, series: str) -> float:
    status, text = node.request("GET", "/metrics")
    assert status == 200
    for line in text.decode().splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no {series} in /metrics")


async def handshake(address: str, key: str) -> bool:
    host, port = address.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    try:
        with trio.fail_after(5):
            channel = await connect_channel(stream, key.encode(), "rotation-test")
        await channel.aclose()
        return True
    except ChannelError:
        return False
    finally:
        await trio.aclose_forcefully(stream)


def datagram(key: str, counter: int) -> bytes:
    return seal_packet(Packet(None), key=key.encode(), sender="rotation-test", boot=7,
                       counter=counter, now_ms=int(time.time() * 1000))


def test_the_cluster_key_rotates_with_one_restart_at_a_time_under_load(
        start_node: StartNode) -> None:
    env = {"BLOBSTORE_CLUSTER_KEY": OLD}
    nodes = start_joined(lambda name, args: start_node(name, *args, env=env), NAMES, ARGS)
    token = nodes["n1"].login()
    assert safe_request(nodes["n1"], "POST", "/create_container", token=token,
                        json_body={"container": "rot"})[0] == 201
    started = time.monotonic()
    checked = 0
    per_step: list[int] = []
    with Load(nodes, token) as load:
        for step, (current, accepted) in enumerate(STEPS, start=1):
            for name, node in nodes.items():
                others = [n for n in nodes.values() if n is not node]
                assert node.terminate() == 0, node.log_tail()
                node.start(args=rejoin_args(node, others),
                           env={"BLOBSTORE_CLUSTER_KEY": current,
                                "BLOBSTORE_CLUSTER_KEYS_ACCEPTED": accepted})
                wait_for(f"step {step}, {name} restarted: 3 members, a coordinator",
                         lambda: all_members(nodes), 30.0,
                         detail=lambda: [health(n) for n in nodes.values()])
                for through in (node, others[0]):
                    checked += 1
                    write(through, token, f"check-{checked}", 10_000_000 + checked)
            per_step.append(len(load.acknowledged) - sum(per_step))
            print(f"\nstep {step} done {time.monotonic() - started:.1f} s in: "
                  f"{len(load.acknowledged)} writes acknowledged, {load.failed} not")
    # The load went on through every step (a refused key would have stopped the writes:
    # each needs all three nodes).
    assert all(count > 0 for count in per_step), (per_step, load.failed)

    # Nothing acknowledged was lost: every blob reads back whole from every node.
    expected = {**load.acknowledged}
    expected.update({f"check-{i}": hashlib.md5(body(10_000_000 + i)).hexdigest()
                     for i in range(1, checked + 1)})
    for node in nodes.values():
        for name, etag in expected.items():
            status, data = node.request("GET", f"/get_data?container=rot&blob={name}",
                                        token=token)
            assert status == 200 and hashlib.md5(data).hexdigest() == etag, (node.node_id,
                                                                              name, status)

    # The old key is refused on both channels; the new one works.
    for node in nodes.values():
        assert not trio.run(handshake, node.gossip_address, OLD), node.node_id
        assert trio.run(handshake, node.gossip_address, NEW), node.node_id
    n1 = nodes["n1"]
    series = 'blobstore_gossip_datagrams_dropped_total{reason="%s"}'
    before = {reason: metric(n1, series % reason) for reason in ("bad_mac", "replayed")}
    host, port = n1.gossip_address.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(datagram(OLD, 1), (host, int(port)))
        fresh = datagram(NEW, 2)
        sock.sendto(fresh, (host, int(port)))
        sock.sendto(fresh, (host, int(port)))  # captured and sent again
    wait_for("the old key's datagram dropped, the new key's replay dropped",
             lambda: metric(n1, series % "bad_mac") == before["bad_mac"] + 1
             and metric(n1, series % "replayed") == before["replayed"] + 1, 5.0)
    print(f"rotation of 3 nodes (9 restarts) took {time.monotonic() - started:.1f} s; "
          f"{len(expected)} acknowledged writes all read back from every node")
