"""The cluster under attack: one ``NodeProcess`` per host, all started alike.

Every node is started with every other node in ``--join`` and
``--bootstrap-expect`` set to the cluster's size, so any node can be restarted,
or started on an empty data dir, with the same command line: there is no
special first node. Settings favour a short campaign: fast failure detection,
small chunks (so small blobs still span several), only the smallest blobs
inline (so both kinds of storage are attacked), a collector and a scrubber that
get round within seconds.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from node.testing.process import NodeProcess, flip_byte
from tools.campaign.hosts import DiskSlots, Host, Loopback, Namespaces
from tools.campaign.workload import CHUNK_SIZE, INLINE_MAX

CLUSTER_KEY = "campaign-cluster-key-0123456789abcdef"
SETTINGS = ("--gossip-preset", "tests", "--chunk-size", str(CHUNK_SIZE),
            "--inline-max", str(INLINE_MAX), "--heal-interval-s", "5s",
            "--gc-interval-s", "5s", "--gc-grace-s", "20s", "--scrub-interval-s", "5s",
            "--scrub-bytes-per-s", "64MiB", "--log-level", "info")


class Cluster:
    """Nodes named ``n1..nN`` on the given hosts, data under ``base``."""

    def __init__(self, base: Path, hosts: Namespaces | Loopback, replicas: int,
                 disks: DiskSlots | None) -> None:
        self.base = base
        self.hosts = hosts
        self.replicas = replicas
        self.disks = disks
        self.nodes: dict[str, NodeProcess] = {}
        for name, host in hosts.hosts.items():
            data_dir = disks.make(name) if disks is not None else base / name
            self.nodes[name] = NodeProcess(
                data_dir, name, args=self._args(name),
                env={"BLOBSTORE_CLUSTER_KEY": CLUSTER_KEY}, host=host.address,
                http_port=host.http_port, gossip_port=host.gossip_port, wrapper=host.wrapper,
                start_timeout_s=60.0)

    def _args(self, name: str) -> list[str]:
        others = [h.gossip for n, h in self.hosts.hosts.items() if n != name]
        return [*SETTINGS, "--replicas", str(self.replicas),
                "--bootstrap-expect", str(len(self.hosts.hosts)), "--join", ",".join(others)]

    @property
    def names(self) -> list[str]:
        return sorted(self.nodes)

    def host(self, name: str) -> Host:
        return self.hosts.hosts[name]

    def urls(self) -> dict[str, str]:
        """Every node's URL, up or not (a client of a dead node sees a refused connection)."""
        return {name: f"http://{h.address}:{h.http_port}" for name, h in self.hosts.hosts.items()}

    def start(self) -> None:
        """Start every node at once and wait until each names a coordinator."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda n: n.start(), self.nodes.values()))
        for node in self.nodes.values():
            node.wait_in_cluster(timeout_s=60.0)

    def running(self) -> list[NodeProcess]:
        return [n for n in self.nodes.values() if n.running]

    def wipe(self, name: str) -> None:
        """Empty a stopped node's data dir (a replaced disk); the mount point stays."""
        node = self.nodes[name]
        if node.running:
            raise RuntimeError(f"{name} is running; stop it before wiping its disk")
        for entry in os.scandir(node.data_dir):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()


def fill_disk(data_dir: Path) -> int:
    """Take every free byte of ``data_dir``'s filesystem with a ballast file; its size."""
    path = data_dir / "campaign.ballast"
    stat = os.statvfs(data_dir)
    free = stat.f_bavail * stat.f_frsize
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        taken = 0
        block = b"\0" * (1 << 20)
        while taken < free:
            try:
                taken += os.write(fd, block[: min(len(block), free - taken)])
            except OSError:
                break
    finally:
        os.close(fd)
    return taken


def free_disk(data_dir: Path) -> None:
    (data_dir / "campaign.ballast").unlink(missing_ok=True)


def corrupt_files(paths: Sequence[Path], offsets: Sequence[int]) -> list[Path]:
    """Flip one byte in each file (bit rot, at its offset modulo the file's size); the files
    that were changed (one gone or empty meanwhile is passed over)."""
    changed = []
    for path, offset in zip(paths, offsets):
        try:
            size = path.stat().st_size
            if size:
                flip_byte(path, offset % size)
                changed.append(path)
        except FileNotFoundError:
            continue
    return changed
