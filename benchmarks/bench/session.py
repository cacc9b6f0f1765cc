"""One benchmark run: the cluster, the limits, the phases in order, and the record.

``Session`` owns what a run needs across phases: the target (a local cluster it
started, or the given URLs), the token, the containers it created (one per *group*:
``data`` for the workloads, ``meta`` for the metadata-commit fill that LIST then
reads), the keyspaces (one per group and blob size) and every result. A phase that
reads or deletes blobs of a size nobody has written yet is preceded by an untimed
*prefill* of that size.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.bench import limits as lim
from benchmarks.bench.bodies import Bodies
from benchmarks.bench.cluster import BenchmarkError, create_container, delete_container
from benchmarks.bench.nginx import NginxError, find_nginx, install_nginx
from benchmarks.bench.report import LiveProgress, apply_ratios, client_cost
from benchmarks.bench.stats import Result
from benchmarks.bench.workloads import Keyspace, Phase, Target, run_phase

MiB = 1024 * 1024
#: Bytes an automatic prefill writes at most (64 MiB blobs: 4 of them).
PREFILL_BYTES = 256 * MiB


def default_prefill(size: int, concurrency: int) -> int:
    """Enough blobs that slots rarely wait for each other, within ``PREFILL_BYTES``."""
    return max(2 * concurrency, min(256, PREFILL_BYTES // max(size, 1)))


@dataclass
class Limits:
    disk: lim.DiskLimits | None = None
    sqlite: lim.SqliteLimits | None = None
    nginx: list[Result] = field(default_factory=list)
    nginx_note: str = ""


class Session:
    def __init__(self, target: Target, console: Console, *, seed: int = 0,
                 prefill: int | None = None) -> None:
        self.target = target
        self.console = console
        self.progress = LiveProgress(console)
        self.seed = seed
        self.prefill = prefill
        self.containers: dict[str, str] = {}
        self.keyspaces: dict[tuple[str, int], Keyspace] = {}
        self.results: list[Result] = []
        self.limits = Limits()
        self._phases = 0
        self.started_at = utc_now()

    async def keyspace(self, group: str, size: int) -> Keyspace:
        if group not in self.containers:
            self.containers[group] = await create_container(
                self.target.urls[0], self.target.token or "", f"bench-{group}")
        key = (group, size)
        if key not in self.keyspaces:
            prefix = "m" if group == "meta" else f"s{size}-"
            self.keyspaces[key] = Keyspace(self.containers[group],
                                           Bodies(size, seed=self.seed + size), prefix)
        return self.keyspaces[key]

    async def run(self, phase: Phase, group: str = "data") -> list[Result]:
        """Run one phase (after a prefill if it needs blobs); its rows are kept."""
        ks = await self.keyspace(group, phase.size)
        if phase.op in ("get", "range-get", "delete", "list") and not ks.written:
            count = self.prefill or default_prefill(phase.size, phase.concurrency)
            if phase.op == "delete" and phase.count:
                count = max(count, phase.count)
            fill = Phase("put", phase.size, phase.concurrency, 3600.0, count, name="prefill")
            self.console.print(f"prefill: {count} blobs of {phase.size} B", highlight=False)
            rows = await self._phase(fill, ks)
            if rows[0].errors:
                self.console.print(f"[yellow]prefill had {rows[0].errors} errors: "
                                   f"{dict(rows[0].error_kinds)}[/yellow]")
        rows = await self._phase(phase, ks)
        self.progress.phase_done(rows)
        self.results.extend(rows)
        return rows

    async def _phase(self, phase: Phase, ks: Keyspace) -> list[Result]:
        self._phases += 1
        return await run_phase(phase, self.target, ks, seed=self.seed + self._phases,
                               follow=self.progress.follow)

    async def measure_limits(self, data_dir: Path, nginx_points: list[tuple[int, int]], *,
                             nginx_duration_s: float, install: bool, disk_bytes: int,
                             nginx: bool = True) -> Limits:
        """Disk, sqlite, and nginx at each (size, concurrency) of ``nginx_points``."""
        out = self.limits
        self.console.print(f"limits: disk and sqlite on {data_dir} ...", highlight=False)
        out.disk = lim.measure_disk(data_dir, disk_bytes)
        out.sqlite = lim.measure_sqlite(data_dir)
        binary = find_nginx()
        if not nginx or not nginx_points:
            out.nginx_note = "not measured"
        elif binary is None and not install:
            out.nginx_note = ("skipped: nginx is not installed (run `blobstore-bench setup` "
                              "or pass --install-nginx)")
        else:
            try:
                binary = binary or install_nginx()
                self.console.print(f"limits: nginx ({binary}) at {nginx_points} ...",
                                   highlight=False)
                out.nginx = await lim.nginx_gets(nginx_points, nginx_duration_s, binary=binary,
                                                 follow=self.progress.follow)
                self.progress.phase_done(out.nginx)
            except NginxError as exc:
                out.nginx_note = f"skipped: {exc}"
        if out.nginx_note:
            self.console.print(f"[yellow]nginx {out.nginx_note}[/yellow]")
        return out

    def finish(self) -> None:
        apply_ratios(self.results, self.limits.disk, self.limits.sqlite, self.limits.nginx)

    async def cleanup(self) -> None:
        """Delete what this run wrote (for ``--url`` clusters that outlive the run)."""
        for (_, size), ks in self.keyspaces.items():
            if ks.written:
                phase = Phase("delete", size, 16, 3600.0, len(ks.written), name="cleanup")
                await self._phase(phase, ks)
        for name in self.containers.values():
            if not await delete_container(self.target.urls[0], self.target.token or "", name):
                self.console.print(f"[yellow]container {name} not deleted[/yellow]")

    def record(self, argv: list[str], cluster: dict[str, Any],
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything, for ``--json``."""
        limits = self.limits
        return {"tool": "blobstore-bench", "format": 1, "argv": argv,
                "started_at": self.started_at, "finished_at": utc_now(),
                "machine": machine_facts(), "cluster": cluster,
                "limits": {**lim.limits_json(limits.disk, limits.sqlite, limits.nginx,
                                             limits.nginx_note),
                           "client_cost": client_cost(limits.nginx)},
                "results": [r.summary() for r in self.results], **(extra or {})}


def machine_facts() -> dict[str, Any]:
    try:
        import aiohttp
        aiohttp_version = aiohttp.__version__
    except ImportError:
        aiohttp_version = None
    return {"cores": os.cpu_count(), "python": sys.version.split()[0],
            "platform": platform.platform(), "aiohttp": aiohttp_version,
            "git_commit": git_commit(), "load_average": os.getloadavg(),
            "nginx": find_nginx()}


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str | None:
    """The commit of the checkout this tool runs from ("+dirty" if it has changes)."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


__all__ = ["BenchmarkError", "Limits", "Session", "default_prefill", "machine_facts"]
