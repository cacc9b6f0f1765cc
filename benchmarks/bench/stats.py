"""What one phase measured: counts, latencies, and whose CPU it cost.

A benchmark on a shared 2-core machine is only as good as its account of the CPU:
next to the client's own use (``getrusage``: a saturated client is visible), each
phase records the CPU of the processes it serves from (the local cluster's nodes,
or nginx and its workers) and of the whole machine (``/proc/stat``), so the share
taken by other work, the noise, is printed with every figure.
"""

from __future__ import annotations

import os
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int, children: bool = False) -> float:
    """CPU seconds of one process (and of its reaped children), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    # fields[0] is the state (field 3): utime, stime, cutime, cstime are fields 14-17.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (nginx's workers), from /proc."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(p) for p in text.split()]


def machine_busy_s() -> tuple[float, float]:
    """(busy CPU seconds, all CPU seconds) of the whole machine since boot."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except FileNotFoundError:
        return 0.0, 0.0
    ticks = [int(x) for x in first[1:8]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    return (sum(ticks) - idle) / CLOCK_TICKS, sum(ticks) / CLOCK_TICKS


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuWatch:
    """CPU used over an interval by this client, by the served pids, and by everyone."""

    def __init__(self, server_pids: list[int]) -> None:
        self.server_pids = server_pids
        self._own = own_cpu_s()
        self._servers = self._server_cpu()
        self._machine = machine_busy_s()
        self._wall = time.monotonic()

    def _server_cpu(self) -> float:
        pids = list(self.server_pids)
        for pid in self.server_pids:
            pids.extend(child_pids(pid))
        return sum(process_cpu_s(pid) for pid in pids)

    def stop(self) -> dict[str, float]:
        """Percentages of one core over the interval (200 % is all of a 2-core machine)."""
        wall = max(time.monotonic() - self._wall, 1e-9)
        own = own_cpu_s() - self._own
        servers = self._server_cpu() - self._servers
        busy_now, _ = machine_busy_s()
        machine = busy_now - self._machine[0]
        figures = {"client_cpu_pct": 100 * own / wall, "machine_cpu_pct": 100 * machine / wall,
                   "client_cpu_s": own}
        if self.server_pids:  # else the servers are elsewhere, or their pids unknown
            figures["server_cpu_pct"] = 100 * servers / wall
            figures["other_cpu_pct"] = max(0.0, 100 * (machine - own - servers) / wall)
        return figures


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


@dataclass
class Result:
    """One row of the report: one operation of one phase against one target.

    ``ops`` counts successes only; ``errors`` counts failures of every kind, of which
    ``wrong`` are answers with the wrong data (a GET whose bytes differ from what was
    written, a 404 for a blob that exists, a listing out of order). ``items`` counts
    names listed. Rates are per second of the phase's wall time.
    """
    name: str
    op: str
    size: int
    concurrency: int
    target: str = "cluster"
    ops: int = 0
    errors: int = 0
    wrong: int = 0
    bytes: int = 0
    items: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    error_kinds: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)
    ratio: float | None = None
    ratio_basis: str = ""

    def record(self, ok: bool, latency_s: float, nbytes: int = 0, items: int = 0,
               error: str = "", wrong: bool = False) -> None:
        if ok:
            self.ops += 1
            self.bytes += nbytes
            self.items += items
            self.latencies_ms.append(latency_s * 1000)
        else:
            self.errors += 1
            self.wrong += wrong
            self.error_kinds[error or "error"] += 1

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds else 0.0

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0

    @property
    def key(self) -> str:
        """What identifies this row across runs (for ``compare``)."""
        return f"{self.target}:{self.name}:{self.size}:c{self.concurrency}"

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {"key": self.key, "name": self.name, "op": self.op, "target": self.target,
                "size": self.size, "concurrency": self.concurrency, "ops": self.ops,
                "errors": self.errors, "wrong_data": self.wrong, "bytes": self.bytes,
                "items": self.items, "seconds": round(self.seconds, 3),
                "ops_per_s": self.ops_per_s, "mb_per_s": self.mb_per_s,
                "items_per_s": self.items_per_s, "p50_ms": percentile(lat, 0.50),
                "p99_ms": percentile(lat, 0.99), "max_ms": lat[-1] if lat else 0.0,
                "error_kinds": dict(self.error_kinds.most_common(10)), **self.cpu,
                "ratio": self.ratio, "ratio_basis": self.ratio_basis}


def merged(name: str, parts: list[Result]) -> Result:
    """One row adding up ``parts`` (the operations of a mixed phase)."""
    first = parts[0]
    total = Result(name, name, first.size, first.concurrency, first.target,
                   seconds=first.seconds, cpu=dict(first.cpu))
    for part in parts:
        total.ops += part.ops
        total.errors += part.errors
        total.wrong += part.wrong
        total.bytes += part.bytes
        total.items += part.items
        total.latencies_ms.extend(part.latencies_ms)
        total.error_kinds.update(part.error_kinds)
    return total
