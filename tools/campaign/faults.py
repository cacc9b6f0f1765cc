"""The nemesis: a seeded schedule of faults, applied to the cluster and healed one by one.

``schedule`` turns a seed into a list of ``Planned`` faults: which kind, when,
for how long, against which nodes. Every kind the hosts allow appears once per
round, in a seeded order, so a short run still covers them all. ``Nemesis``
applies each at its time, holds it, heals it, and records what it did as a
``Done`` (with what it saw: a node that would not come back is a finding).

Faults never overlap, and the destructive ones (a wiped disk, corrupted chunk
files) wait until the cluster has healed from earlier damage: the contract
promises to survive ``replicas - 1`` lost copies, not any number of them at
once.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from node.testing.observe import coordinator_of
from node.testing.process import NodeStartError
from tools.campaign.cluster import Cluster, corrupt_files, fill_disk, free_disk

KILL = "kill"
PAUSE = "pause"
PARTITION = "partition-majority"
ISOLATE_COORDINATOR = "isolate-coordinator"
BRIDGE = "partition-bridge"
ONE_WAY = "one-way-loss"
DISK_FULL = "disk-full"
CORRUPT = "corrupt-chunks"
WIPE = "wipe-disk"

NETWORK_KINDS = (PARTITION, ISOLATE_COORDINATOR, BRIDGE, ONE_WAY)
ALL_KINDS = (KILL, PAUSE, *NETWORK_KINDS, DISK_FULL, CORRUPT, WIPE)
DESTRUCTIVE = (CORRUPT, WIPE)


@dataclass(frozen=True, slots=True)
class Planned:
    kind: str
    at: float  # seconds after the workload starts
    hold_s: float
    targets: tuple[str, ...]
    seed: int  # for choices made when it is applied (which chunk files)


@dataclass(slots=True)
class Done:
    kind: str
    targets: list[str]
    started: float
    healed: float | None = None
    note: str = ""
    skipped: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "targets": self.targets, "started": round(self.started, 3),
                "healed": None if self.healed is None else round(self.healed, 3),
                "note": self.note, "skipped": self.skipped}


def schedule(seed: int, names: list[str], kinds: tuple[str, ...], duration_s: float,
             gap_s: float = 4.0, hold_s: tuple[float, float] = (4.0, 9.0)) -> list[Planned]:
    """Faults for a workload of ``duration_s``: rounds of every kind in a seeded order,
    each held ``hold_s`` and followed by ``gap_s`` of calm, the last ending before the
    workload does."""
    rng = random.Random(f"campaign-schedule/{seed}")
    plan: list[Planned] = []
    at = gap_s
    while True:
        order = list(kinds)
        rng.shuffle(order)
        for kind in order:
            hold = round(rng.uniform(*hold_s), 1)
            if at + hold + gap_s > duration_s:
                return plan
            plan.append(Planned(kind, round(at, 1), hold, _targets(rng, kind, names),
                                rng.randrange(1 << 30)))
            at += hold + gap_s


def _targets(rng: random.Random, kind: str, names: list[str]) -> tuple[str, ...]:
    shuffled = rng.sample(names, len(names))
    if kind == PARTITION:  # the minority first; the rest is the majority
        return tuple(shuffled[:(len(names) - 1) // 2])
    if kind == BRIDGE:  # the bridge, then one side; the others are the other side
        return tuple(shuffled[:1 + (len(names) - 1) // 2])
    if kind == ONE_WAY:  # the node whose packets out are lost, or in ("in" marks it)
        return (shuffled[0], rng.choice(("out", "in")))
    if kind == ISOLATE_COORDINATOR:
        return ()  # whoever is coordinator when it starts
    return (shuffled[0],)


@dataclass
class Nemesis:
    cluster: Cluster
    clock: Callable[[], float]  # seconds since the workload began
    #: Waits up to the given seconds for a healed cluster; what was still wrong ([] if healed).
    healthy: Callable[[float], list[str]]
    done: list[Done] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    #: Nodes the nemesis has stopped on purpose (their exit is not a death of their own).
    stopped: set[str] = field(default_factory=set)

    def run(self, plan: list[Planned], end_s: float, stop: Callable[[], bool]) -> None:
        """Apply ``plan`` in order; a fault that would outlast ``end_s`` (the workload's
        end) is not started."""
        for fault in plan:
            while self.clock() < fault.at:
                if stop():
                    return
                time.sleep(0.1)
            if self.clock() + fault.hold_s > end_s:
                return
            self.check_alive()
            record = Done(fault.kind, list(fault.targets), self.clock())
            self.done.append(record)
            if fault.kind in DESTRUCTIVE:
                unhealed = self.healthy(60.0)
                if unhealed:
                    record.skipped, record.healed = True, self.clock()
                    record.note = (f"not healed from earlier damage in 60 s: {unhealed[0]} "
                                   f"(and {len(unhealed) - 1} more)")
                    continue
                record.note = f"after {self.clock() - record.started:.1f} s waiting to heal; "
            try:
                self.apply(fault, record)
            finally:
                self.heal_network()
                record.healed = self.clock()

    def apply(self, fault: Planned, record: Done) -> None:
        cluster, kind = self.cluster, fault.kind
        if kind == KILL:
            self._kill(fault.targets[0])
            time.sleep(fault.hold_s)
            self._restart(fault.targets[0], record)
        elif kind == PAUSE:
            node = cluster.nodes[fault.targets[0]]
            self.stopped.add(node.node_id)
            node.signal(signal.SIGSTOP)
            time.sleep(fault.hold_s)
            node.signal(signal.SIGCONT)
            self.stopped.discard(node.node_id)
        elif kind == WIPE:
            self._kill(fault.targets[0])
            cluster.wipe(fault.targets[0])
            time.sleep(1.0)
            self._restart(fault.targets[0], record)
        elif kind == DISK_FULL:
            data_dir = cluster.nodes[fault.targets[0]].data_dir
            record.note += f"{fill_disk(data_dir) >> 20} MiB of ballast"
            try:
                time.sleep(fault.hold_s)
            finally:
                free_disk(data_dir)
        elif kind == CORRUPT:
            self._corrupt(fault, record)
        else:
            self._partition(fault, record)
            time.sleep(fault.hold_s)

    def _partition(self, fault: Planned, record: Done) -> None:
        names, cut = self.cluster.names, self.cluster.hosts.cut
        if fault.kind == ONE_WAY:
            node, direction = fault.targets
            for other in names:
                if other != node:
                    cut(node, other) if direction == "out" else cut(other, node)
            return
        if fault.kind == ISOLATE_COORDINATOR:
            leader = next((c for n in self.cluster.running() if (c := coordinator_of(n))),
                          None) or names[0]
            record.targets = [leader]
            sides = [[leader], [n for n in names if n != leader]]
        elif fault.kind == PARTITION:
            sides = [list(fault.targets), [n for n in names if n not in fault.targets]]
        else:  # BRIDGE: targets[0] talks to both sides, which cannot talk to each other
            one = list(fault.targets[1:])
            sides = [one, [n for n in names if n not in fault.targets]]
        for a in sides[0]:
            for b in sides[1]:
                cut(a, b)
                cut(b, a)

    def _corrupt(self, fault: Planned, record: Done) -> None:
        node = self.cluster.nodes[fault.targets[0]]
        rng = random.Random(fault.seed)
        ids = sorted(node.chunk_ids())
        picked = rng.sample(ids, min(3, len(ids)))
        changed = corrupt_files([node.chunk_path(h) for h in picked],
                                [rng.randrange(1 << 20) for _ in picked])
        record.note += f"flipped a byte in {len(changed)} chunk files: " + \
            ", ".join(p.name[:12] for p in changed)

    def _kill(self, name: str) -> None:
        self.stopped.add(name)
        self.cluster.nodes[name].kill()

    def _restart(self, name: str, record: Done) -> None:
        node = self.cluster.nodes[name]
        try:
            node.start()
        except NodeStartError as exc:
            self.findings.append(f"{name} did not come back after {record.kind}: {exc}")
            record.note += "did not come back"
            return
        finally:
            self.stopped.discard(name)

    def heal_network(self) -> None:
        self.cluster.hosts.heal()

    def heal_all(self) -> None:
        """Undo whatever is still in effect: network cuts, a frozen node, ballast."""
        self.heal_network()
        for node in self.cluster.nodes.values():
            if node.running:
                node.signal(signal.SIGCONT)
            free_disk(node.data_dir)

    def check_alive(self) -> None:
        """A node that exited without the nemesis stopping it died on its own: a finding;
        it is restarted so that the campaign goes on."""
        for name, node in self.cluster.nodes.items():
            if name in self.stopped or node.running or node.returncode is None:
                continue
            self.findings.append(f"{name} died on its own (exit {node.returncode}) at "
                                 f"{self.clock():.1f} s:\n{node.log_tail(3000)}")
            try:
                node.start()
            except NodeStartError as exc:
                self.findings.append(f"{name} did not restart: {exc}")


def kinds_available(partitions: bool, disks: bool) -> tuple[tuple[str, ...], list[str]]:
    """The fault kinds these hosts allow, and the reasons for those left out."""
    skipped = []
    kinds = list(ALL_KINDS)
    if not partitions:
        kinds = [k for k in kinds if k not in NETWORK_KINDS]
        skipped.append(f"{', '.join(NETWORK_KINDS)}: no network namespaces")
    if not disks:
        kinds.remove(DISK_FULL)
        skipped.append(f"{DISK_FULL}: no tmpfs data dirs (needs root)")
    return tuple(kinds), skipped

