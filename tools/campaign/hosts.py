"""The campaign's hosts: one network namespace per node on a private bridge, or loopback.

``Namespaces`` builds, inside this machine's sandbox, a bridge in the root
namespace with the address ``198.18.X.1/24`` and one namespace per node, joined
to it by a veth pair and addressed ``198.18.X.(10+i)``. The range 198.18.0.0/15
is reserved for network testing; no namespace gets a default route, so nothing
is routed out. The runner itself (the clients) stays in the root namespace and
reaches every node over the bridge, like a control network that partitions do
not touch. Partitions are blackhole routes inside the namespaces: a route in
A's namespace to B's address drops what A sends to B (one way); both
directions make a full cut. ``close`` removes everything it made.

``Loopback`` is the fallback where namespaces cannot be made (no privileges):
every node on 127.0.0.1 with its own fixed ports, and no partitions.

Each node's data dir can also be a small tmpfs of its own (``DiskSlots``), so
the full-disk fault can fill exactly one node's disk.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HTTP_PORT = 8080
GOSSIP_PORT = 7946


class HostError(RuntimeError):
    """A namespace, link, route or mount could not be made."""


@dataclass(frozen=True, slots=True)
class Host:
    """Where one node runs: its address, ports and the command it runs under."""

    name: str
    address: str
    http_port: int
    gossip_port: int
    wrapper: tuple[str, ...] = ()

    @property
    def gossip(self) -> str:
        return f"{self.address}:{self.gossip_port}"


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise HostError(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


class Loopback:
    """Every node on 127.0.0.1 with ports fixed for the run (so restarts keep them)."""

    kind = "loopback"
    partitions = False

    def __init__(self, names: Sequence[str]) -> None:
        self.hosts = {name: Host(name, "127.0.0.1", _free_port(socket.SOCK_STREAM),
                                 _free_port(socket.SOCK_DGRAM)) for name in names}

    def cut(self, src: str, dst: str) -> None:
        raise HostError("loopback hosts cannot be partitioned")

    def heal(self) -> None:
        """Nothing to heal: loopback has no partitions."""

    def close(self) -> None:
        """Nothing was made."""


class Namespaces:
    """One network namespace per node on a private bridge; see the module docstring."""

    kind = "netns"
    partitions = True

    def __init__(self, names: Sequence[str]) -> None:
        tag = secrets.token_hex(3)
        self._bridge = f"bsb{tag}"
        self._namespaces: list[str] = []
        self._cuts: set[tuple[str, str]] = set()
        subnet = _free_subnet()
        self.gateway = f"{subnet}.1"
        self.hosts: dict[str, Host] = {}
        try:
            _run("ip", "link", "add", self._bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self._bridge)
            _run("ip", "link", "set", self._bridge, "up")
            for i, name in enumerate(names):
                ns = f"blobstore-{tag}-{name}"
                veth = f"bsv{tag}{i}"
                _run("ip", "netns", "add", ns)
                self._namespaces.append(ns)
                _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0",
                     "netns", ns)
                _run("ip", "link", "set", veth, "master", self._bridge, "up")
                address = f"{subnet}.{10 + i}"
                inside = ("ip", "netns", "exec", ns)
                _run(*inside, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
                _run(*inside, "ip", "link", "set", "eth0", "up")
                _run(*inside, "ip", "link", "set", "lo", "up")
                self.hosts[name] = Host(name, address, HTTP_PORT, GOSSIP_PORT, inside)
        except BaseException:
            self.close()
            raise

    def cut(self, src: str, dst: str) -> None:
        """Drop everything ``src`` sends to ``dst`` (one direction)."""
        if (src, dst) in self._cuts:
            return
        _run(*self.hosts[src].wrapper, "ip", "route", "add", "blackhole",
             f"{self.hosts[dst].address}/32")
        self._cuts.add((src, dst))

    def heal(self) -> None:
        """Remove every cut."""
        for src, dst in sorted(self._cuts):
            _run(*self.hosts[src].wrapper, "ip", "route", "del", "blackhole",
                 f"{self.hosts[dst].address}/32", check=False)
        self._cuts.clear()

    def close(self) -> None:
        for ns in self._namespaces:  # deleting a namespace deletes its veth pair too
            _run("ip", "netns", "del", ns, check=False)
        self._namespaces.clear()
        _run("ip", "link", "del", self._bridge, check=False)


def make_hosts(names: Sequence[str], want_netns: bool = True) -> tuple[Namespaces | Loopback,
                                                                       str]:
    """Namespaces if they can be made here, else loopback; and why it fell back ("")."""
    if not want_netns:
        return Loopback(names), "loopback asked for"
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return Loopback(names), "network namespaces need root and iproute2"
    try:
        return Namespaces(names), ""
    except HostError as exc:
        return Loopback(names), f"network namespaces could not be made: {exc}"


class DiskSlots:
    """A tmpfs of ``size_mib`` per node as its data dir, so one node's disk can fill up."""

    def __init__(self, base: Path, size_mib: int) -> None:
        self.base = base
        self.size_mib = size_mib
        self._mounts: list[Path] = []

    def make(self, name: str) -> Path:
        path = self.base / name
        path.mkdir(parents=True, exist_ok=True)
        _run("mount", "-t", "tmpfs", "-o", f"size={self.size_mib}m,mode=0700", "tmpfs",
             str(path))
        self._mounts.append(path)
        return path

    def close(self) -> None:
        for path in self._mounts:
            _run("umount", "-l", str(path), check=False)
        self._mounts.clear()


def can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_subnet() -> str:
    """A 198.18.X or 198.19.X /24 that no route of this machine uses yet."""
    routes = _run("ip", "-4", "route", "show", "table", "all", check=False).stdout
    for _ in range(100):
        first = 18 + secrets.randbelow(2)
        subnet = f"198.{first}.{1 + secrets.randbelow(254)}"
        if f"{subnet}." not in routes:
            return subnet
    raise HostError("no free /24 in 198.18.0.0/15")
