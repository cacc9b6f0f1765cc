"""What the benchmark shows: live progress, the result tables, ratios to the limits.

The ratio of a result is its rate over the machine's own limit for the same work:
a GET's ops/s over nginx's ops/s for the same size and concurrency; a PUT of 1 MiB or
more, MB/s over the disk's sequential fsync'd write MB/s (a replicated PUT writes
every byte R times to this one disk, so 1/R is the ceiling on one machine); a smaller
PUT, ops/s over the disk's fsync'd 4 KiB writes/s; a 0-byte PUT (one metadata
commit), commits/s over raw sqlite commits/s.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from benchmarks.bench.limits import DiskLimits, SqliteLimits
from benchmarks.bench.stats import Result
from benchmarks.bench.workloads import Phase

MiB = 1024 * 1024


def human_size(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


class LiveProgress:
    """A live line per phase (ops, ops/s now, MB/s, errors, elapsed) while it runs, then a
    one-line summary that stays. Off when the console is not a terminal."""

    def __init__(self, console: Console) -> None:
        self.console = console

    async def follow(self, phase: Phase, results: dict[str, Result], started: float) -> None:
        if not self.console.is_terminal:
            return
        last_ops, last_at = 0, started
        with Live(console=self.console, refresh_per_second=4, transient=True) as live:
            while True:
                now = time.monotonic()
                ops = sum(r.ops for r in results.values())
                rate = (ops - last_ops) / max(now - last_at, 1e-9)
                last_ops, last_at = ops, now
                live.update(self.render(phase, results, now - started, rate))
                await asyncio.sleep(0.5)

    def render(self, phase: Phase, results: dict[str, Result], elapsed: float,
               rate: float) -> Group:
        ops = sum(r.ops for r in results.values())
        nbytes = sum(r.bytes for r in results.values())
        items = sum(r.items for r in results.values())
        errors = sum(r.errors for r in results.values())
        wrong = sum(r.wrong for r in results.values())
        done = elapsed / phase.duration_s if phase.duration_s else 0.0
        if phase.count:
            done = max(done, (ops + errors) / phase.count)
        line = Text(f"{phase.name} {human_size(phase.size)} c={phase.concurrency}  "
                    f"{elapsed:5.1f}/{phase.duration_s:.0f} s  ops {ops:,}  "
                    f"{rate:,.0f} ops/s now  {ops / max(elapsed, 1e-9):,.0f} ops/s  "
                    f"{nbytes / max(elapsed, 1e-9) / 1e6:,.1f} MB/s"
                    + (f"  {items / max(elapsed, 1e-9):,.0f} names/s" if items else "")
                    + f"  errors {errors}", style="red" if errors else "")
        if wrong:
            line.append(f"  WRONG DATA {wrong}", style="bold red")
        return Group(line, ProgressBar(total=1.0, completed=min(done, 1.0), width=60))

    def phase_done(self, rows: list[Result]) -> None:
        for row in rows:
            self.console.print(
                f"  {row.target} {row.name} {human_size(row.size)} c={row.concurrency}: "
                f"{row.ops:,} ops in {row.seconds:.1f} s, {row.ops_per_s:,.0f} ops/s, "
                f"{row.mb_per_s:,.1f} MB/s"
                + (f", {row.items_per_s:,.0f} names/s" if row.items else "")
                + f", {row.errors} errors ({row.wrong} wrong data)", highlight=False)


def apply_ratios(results: list[Result], disk: DiskLimits | None, db: SqliteLimits | None,
                 nginx: list[Result]) -> None:
    """Set each result's ratio to the machine's limit for the same work (see the module)."""
    ceilings = {(r.size, r.concurrency): r.ops_per_s for r in nginx if r.ops}
    for row in results:
        if row.target != "cluster":
            continue
        if row.op == "get" and (row.size, row.concurrency) in ceilings:
            row.ratio = row.ops_per_s / ceilings[(row.size, row.concurrency)]
            row.ratio_basis = "nginx GET ops/s"
        elif row.op == "put" and row.size >= MiB and disk and disk.write_mb_per_s:
            row.ratio = row.mb_per_s / disk.write_mb_per_s
            row.ratio_basis = "disk fsync'd write MB/s"
        elif row.op == "put" and row.size > 0 and disk and disk.small_fsyncs_per_s:
            row.ratio = row.ops_per_s / disk.small_fsyncs_per_s
            row.ratio_basis = "disk 4 KiB write+fsync/s"
        elif row.op == "put" and row.size == 0 and db and db.commits_per_s:
            row.ratio = row.ops_per_s / db.commits_per_s
            row.ratio_basis = "raw sqlite commits/s"


def results_table(results: list[Result], title: str = "results") -> Table:
    table = Table(title=title)
    columns = ("target", "op", "size", "c", "ops", "errors", "wrong data", "ops/s", "MB/s",
               "names/s", "p50 ms", "p99 ms", "max ms", "client CPU", "server CPU",
               "other CPU", "x limit")
    for column in columns:
        table.add_column(column, justify="left" if column in ("target", "op") else "right")
    for row in results:
        s = row.summary()
        table.add_row(row.target, row.name, human_size(row.size), str(row.concurrency),
                      f"{row.ops:,}", str(row.errors),
                      Text(str(row.wrong), style="bold red" if row.wrong else ""),
                      fmt(row.ops_per_s), fmt(row.mb_per_s, 1),
                      fmt(row.items_per_s) if row.items else "", fmt(s["p50_ms"], 1),
                      fmt(s["p99_ms"], 1), fmt(s["max_ms"], 1),
                      _pct(row.cpu.get("client_cpu_pct")), _pct(row.cpu.get("server_cpu_pct")),
                      _pct(row.cpu.get("other_cpu_pct")),
                      "" if row.ratio is None else f"{row.ratio:.2f}")
    return table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def noise_note(results: list[Result]) -> str:
    """How busy other work kept this machine during the phases: the noise in the figures."""
    cores = os.cpu_count() or 1
    ratios = ("ratios: GET / nginx GET at the same size and concurrency, PUT >= 1 MiB / disk "
              "MB/s, smaller PUT / disk 4 KiB fsyncs/s, 0-byte PUT / raw sqlite commits/s")
    others = [r.cpu["other_cpu_pct"] for r in results if "other_cpu_pct" in r.cpu]
    if others:
        return (f"other work on this machine (busy CPU not used by the client or the "
                f"servers) took {sum(others) / len(others):.0f} % of a core on average per "
                f"phase, up to {max(others):.0f} % ({cores} cores = {100 * cores} %); {ratios}")
    busy = [r.cpu["machine_cpu_pct"] for r in results if "machine_cpu_pct" in r.cpu]
    if busy:
        return (f"the servers' pids are unknown (--url), so their CPU and other work's cannot "
                f"be told apart: the machine was {sum(busy) / len(busy):.0f} % busy on "
                f"average ({cores} cores = {100 * cores} %); {ratios}")
    return ratios


def limits_table(disk: DiskLimits | None, db: SqliteLimits | None, nginx: list[Result],
                 nginx_note: str) -> Table:
    table = Table(title="this machine's limits (measured in this run)")
    table.add_column("limit")
    table.add_column("value", justify="right")
    if disk:
        table.add_row(f"disk: sequential write, 1 MiB writes, fsync at end "
                      f"({human_size(disk.bytes)})", f"{disk.write_mb_per_s:,.0f} MB/s")
        table.add_row("disk: 1 MiB writes, fsync after each",
                      f"{disk.write_fsync_each_mb_per_s:,.0f} MB/s")
        table.add_row("disk: 4 KiB write + fsync", f"{disk.small_fsyncs_per_s:,.0f} /s")
        table.add_row("disk: sequential read" + (" (cold)" if disk.read_cold else ""),
                      f"{disk.read_mb_per_s:,.0f} MB/s")
    if db:
        table.add_row("sqlite: single-row commits (WAL, synchronous=FULL)",
                      f"{db.commits_per_s:,.0f} /s")
    for row in nginx:
        cost = row.cpu.get("client_cpu_s", 0.0) / max(row.ops, 1) * 1e6
        table.add_row(f"nginx static GET {human_size(row.size)} c={row.concurrency} "
                      f"({row.errors} errors)",
                      f"{row.ops_per_s:,.0f} /s, {row.mb_per_s:,.0f} MB/s; client "
                      f"{cost:,.0f} us CPU/req")
    if nginx_note:
        table.add_row("nginx", nginx_note)
    return table


def client_cost(nginx: list[Result]) -> dict[str, Any]:
    """The client's CPU per request against nginx: what the load generator costs."""
    out = {}
    for row in nginx:
        per_req = row.cpu.get("client_cpu_s", 0.0) / max(row.ops, 1)
        out[f"{row.size}:c{row.concurrency}"] = {
            "us_cpu_per_request": per_req * 1e6,
            "requests_per_s_per_core": 1 / per_req if per_req else None,
            "mb_per_s_per_core": row.size / per_req / 1e6 if per_req else None}
    return out
