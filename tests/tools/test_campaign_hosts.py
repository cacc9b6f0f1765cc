"""The campaign's hosts: namespaces really cut traffic one way, and are removed afterwards;
without privileges the runner falls back to loopback and names the faults it skips."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tools.campaign.faults import ALL_KINDS, DISK_FULL, NETWORK_KINDS, kinds_available
from tools.campaign.hosts import Loopback, Namespaces, make_hosts

#: Run inside a namespace: connect to ADDRESS:PORT over TCP, print "ok" or the error.
PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.0).close()
    print("ok")
except OSError as exc:
    print(type(exc).__name__)
"""
#: Run inside a namespace: accept connections on ADDRESS:PORT for a few seconds; say
#: "listening" once the socket is bound, so no probe races the bind.
LISTEN = """
import socket, sys, time
s = socket.socket(); s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8)
print("listening", flush=True)
s.settimeout(0.2)
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    try:
        s.accept()[0].close()
    except OSError:
        pass
"""

needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                reason="network namespaces need root and iproute2")


def test_without_namespaces_the_network_faults_are_skipped_and_said_so() -> None:
    kinds, skipped = kinds_available(partitions=False, disks=False)
    assert not set(kinds) & set(NETWORK_KINDS) and DISK_FULL not in kinds
    assert set(kinds) | set(NETWORK_KINDS) | {DISK_FULL} == set(ALL_KINDS)
    assert any("namespaces" in s for s in skipped) and any(DISK_FULL in s for s in skipped)
    hosts, why = make_hosts(["n1", "n2"], want_netns=False)
    assert isinstance(hosts, Loopback) and why
    ports = {(h.http_port, h.gossip_port) for h in hosts.hosts.values()}
    assert len(ports) == 2 and all(h.address == "127.0.0.1" for h in hosts.hosts.values())


def _probe(wrapper: tuple[str, ...], address: str, port: int) -> str:
    done = subprocess.run([*wrapper, sys.executable, "-c", PROBE, address, str(port)],
                          capture_output=True, text=True, timeout=20)
    return done.stdout.strip()


@needs_root
def test_a_cut_drops_one_direction_and_heal_restores_it() -> None:
    hosts = Namespaces(["a", "b"])
    names = list(hosts._namespaces)
    listeners = []
    try:
        a, b = hosts.hosts["a"], hosts.hosts["b"]
        assert a.address.startswith(("198.18.", "198.19.")) and a.address != b.address
        for host in (a, b):
            listener = subprocess.Popen(
                [*host.wrapper, sys.executable, "-c", LISTEN, host.address, "9000", "15"],
                stdout=subprocess.PIPE, text=True)
            listeners.append(listener)
            assert listener.stdout is not None
            assert listener.stdout.readline().strip() == "listening"
        assert _probe(a.wrapper, b.address, 9000) == "ok"
        hosts.cut("a", "b")
        assert _probe(a.wrapper, b.address, 9000) != "ok"  # a's packets to b are dropped
        assert _probe(b.wrapper, a.address, 9000) != "ok"  # TCP needs both ways
        hosts.heal()
        assert _probe(a.wrapper, b.address, 9000) == "ok"
        assert _probe(b.wrapper, a.address, 9000) == "ok"
        routes = subprocess.run([*a.wrapper, "ip", "route"], capture_output=True,
                                text=True).stdout
        assert "default" not in routes  # nothing is routed out
    finally:
        for proc in listeners:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        hosts.close()
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(name in left for name in names)
