"""``blobstore-campaign``: attack a real cluster with seeded faults and judge what survived.

One run: make the hosts (network namespaces, or loopback where that is not
allowed), give each node a small tmpfs data dir where mounts are allowed,
start the cluster, create the containers, then run the clients for
``--duration`` seconds while the nemesis applies its seeded schedule. Then
undo every fault, wait for the cluster to heal, read everything back through
every node and judge (``checks``). Prints the rich report, writes
``report.json`` and the client history (``history.jsonl``) to ``--out``, and
exits 0 only when the verdict passes. The same seed replays the same schedule
and the same client choices (timing still varies: it is a real cluster).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from node.testing.process import NodeProcess
from tools.campaign import checks
from tools.campaign.cluster import Cluster
from tools.campaign.faults import ALL_KINDS, Nemesis, kinds_available, schedule
from tools.campaign.hosts import DiskSlots, can_mount, make_hosts
from tools.campaign.report import Report
from tools.campaign.workload import History, Settings, blob_names, run_clients

CONTAINERS = ("alpha", "bravo", "charlie")


@dataclass(frozen=True)
class Options:
    seed: int = 1
    duration_s: float = 120.0
    nodes: int = 5
    replicas: int = 3
    clients: int = 6
    kinds: tuple[str, ...] = ALL_KINDS
    netns: bool = True
    disk_mib: int = 256
    #: How long each fault is held (a seeded uniform draw) and the calm after it.
    hold_s: tuple[float, float] = (4.0, 9.0)
    gap_s: float = 4.0
    heal_timeout_s: float = 180.0
    out: Path | None = None

    def command(self) -> str:
        parts = ["blobstore-campaign", "--seed", str(self.seed), "--duration",
                 f"{self.duration_s:g}", "--nodes", str(self.nodes), "--replicas",
                 str(self.replicas), "--clients", str(self.clients)]
        if (self.hold_s, self.gap_s) != (Options.hold_s, Options.gap_s):
            parts += ["--hold", f"{self.hold_s[0]:g},{self.hold_s[1]:g}", "--gap",
                      f"{self.gap_s:g}"]
        if self.kinds != ALL_KINDS:
            parts += ["--faults", ",".join(self.kinds)]
        if not self.netns:
            parts.append("--loopback")
        return shlex.join(parts)


def run(options: Options, console: Console | None = None) -> Report:
    console = console or Console(stderr=True)
    out = options.out or Path(tempfile.mkdtemp(prefix="blobstore-campaign-"))
    out.mkdir(parents=True, exist_ok=True)
    names = [f"n{i + 1}" for i in range(options.nodes)]
    hosts, fallback = make_hosts(names, options.netns)
    disks = DiskSlots(out / "disks", options.disk_mib) if can_mount() else None
    kinds, skipped = kinds_available(hosts.partitions, disks is not None)
    if fallback:
        skipped.insert(0, fallback)
    kinds = tuple(k for k in kinds if k in options.kinds)
    cluster: Cluster | None = None
    try:
        cluster = Cluster(out / "nodes", hosts, options.replicas, disks)
        console.print(f"campaign seed {options.seed}: {options.nodes} nodes on {hosts.kind} "
                      f"hosts, data in {out}")
        cluster.start()
        return _attack(options, cluster, kinds, skipped, out, console, hosts.kind)
    finally:
        if cluster is not None:
            cluster.close()
        if disks is not None:
            disks.close()
        hosts.close()


def _attack(options: Options, cluster: Cluster, kinds: tuple[str, ...], skipped: list[str],
            out: Path, console: Console, host_kind: str) -> Report:
    first = cluster.nodes[cluster.names[0]]
    token = first.login()
    for container in CONTAINERS:
        _create_container(first, token, container)
    history = History()
    settings = Settings(CONTAINERS, clients=options.clients)
    plan = schedule(options.seed, cluster.names, kinds, options.duration_s, options.gap_s,
                    options.hold_s)
    nemesis = Nemesis(cluster, history.now,
                      lambda limit: checks.wait_healed(cluster, token, history,
                                                       list(CONTAINERS), limit,
                                                       counters=False)[1])
    stop = threading.Event()
    clients = run_clients(options.seed, history, settings, cluster.urls, token,
                          options.duration_s, stop)
    console.print(f"{len(plan)} faults planned over {options.duration_s:g} s: "
                  f"{', '.join(f.kind for f in plan)}")
    try:
        nemesis.run(plan, options.duration_s, stop.is_set)
        while any(t.is_alive() for t in clients) and \
                history.now() < options.duration_s + settings.timeout_s + 5:
            time.sleep(0.2)
    finally:
        stop.set()
        nemesis.heal_all()
        for thread in clients:
            thread.join(timeout=settings.timeout_s + 5)
    for name, node in cluster.nodes.items():  # a node left down by a failed restart
        if not node.running:
            nemesis.stopped.discard(name)
    nemesis.check_alive()
    heal_s, unhealed = checks.wait_healed(cluster, token, history, list(CONTAINERS),
                                          options.heal_timeout_s)
    last = max((f.healed or 0.0 for f in nemesis.done), default=0.0)
    heal_from_last = None if heal_s is None else history.now() - last
    verdict = checks.Verdict()
    reads = checks.final_reads(cluster, token, history, blob_names(settings))
    listings = checks.final_listings(cluster, token, CONTAINERS, verdict)
    checks.judge(history, reads, listings, verdict)
    checks.check_linearizable(history, reads, list(CONTAINERS), verdict, timeout_s=120.0)
    with open(out / "history.jsonl", "w") as f:
        for call in history.calls:
            f.write(json.dumps(call.as_json()) + "\n")
    report = Report(options.seed, options.command(), host_kind, options.nodes,
                    options.replicas, options.duration_s, skipped, history, nemesis.done,
                    nemesis.findings, verdict, heal_from_last, unhealed)
    report.write(out / "report.json")
    report.show(console)
    console.print(f"report: {out / 'report.json'}; history: {out / 'history.jsonl'}")
    return report


def _create_container(node: NodeProcess, token: str, name: str) -> None:
    status, body = node.request("POST", "/create_container", token=token,
                                json_body={"container": name})
    if status != 201:
        raise RuntimeError(f"could not create container {name}: {status} {body!r}")


def parse_args(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="blobstore-campaign", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Options()  # the defaults live there alone
    p.add_argument("--seed", type=int, default=d.seed, help="seeds the faults and the clients")
    p.add_argument("--duration", type=float, default=d.duration_s,
                   help=f"seconds of workload under faults (default {d.duration_s:g})")
    p.add_argument("--nodes", type=int, default=d.nodes)
    p.add_argument("--replicas", type=int, default=d.replicas)
    p.add_argument("--clients", type=int, default=d.clients, help="concurrent client threads")
    p.add_argument("--faults", default=",".join(d.kinds),
                   help=f"comma-separated fault kinds (default all: {','.join(ALL_KINDS)})")
    p.add_argument("--hold", default=f"{d.hold_s[0]:g},{d.hold_s[1]:g}",
                   help="MIN,MAX seconds each fault is held")
    p.add_argument("--gap", type=float, default=d.gap_s, help="seconds of calm after each fault")
    p.add_argument("--loopback", action="store_true",
                   help="run every node on 127.0.0.1 (no partitions) even where "
                        "namespaces could be made")
    p.add_argument("--disk-mib", type=int, default=d.disk_mib, help="each node's tmpfs size")
    p.add_argument("--out", type=Path, help="where data, logs and the report go "
                                            "(default: a new temporary directory)")
    a = p.parse_args(argv)
    kinds = tuple(k for k in a.faults.split(",") if k)
    unknown = set(kinds) - set(ALL_KINDS)
    if unknown:
        p.error(f"unknown fault kinds: {', '.join(sorted(unknown))}")
    try:
        low, high = (float(x) for x in a.hold.split(","))
    except ValueError:
        p.error(f"--hold wants MIN,MAX seconds, not {a.hold!r}")
    return Options(seed=a.seed, duration_s=a.duration, nodes=a.nodes, replicas=a.replicas,
                   clients=a.clients, kinds=kinds, netns=not a.loopback,
                   disk_mib=a.disk_mib, hold_s=(low, high), gap_s=a.gap, out=a.out)


def main(argv: list[str] | None = None) -> int:
    report = run(parse_args(argv))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
