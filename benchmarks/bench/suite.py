"""The issue's target set in one run (``blobstore-bench suite``), each result judged.

Phases, in order (durations are options; each phase also stops at its count):

1. the limits: disk, sqlite, nginx at 4 KiB c=16, 1 MiB c=8, 64 MiB c=2;
2. 4 KiB PUT then GET at c=16; 1 MiB PUT then GET at c=8; 64 MiB PUT then GET at
   c=2 (each GET reads what its PUT wrote);
3. metadata commits: 0-byte PUTs from 64 concurrent writers, each one metadata
   commit, filling a fresh container toward ``--meta-blobs`` (100,000) blobs;
4. LIST of that container page by page (limit 1000), one reader, names/s.

Targets are those of the 3-node, R=3 cluster on a 2-core machine with the client on
the same machine; the OpenStack Swift figures were measured there with aiohttp at the
same concurrency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.table import Table
from rich.text import Text

from benchmarks.bench.report import human_size
from benchmarks.bench.session import Session
from benchmarks.bench.stats import Result
from benchmarks.bench.workloads import Phase

KiB, MiB = 1024, 1024 * 1024
SMALL, MEDIUM, LARGE = 4 * KiB, MiB, 64 * MiB
#: (size, concurrency) of the PUT/GET pairs; nginx is measured at the same points.
DATA_POINTS = ((SMALL, 16), (MEDIUM, 8), (LARGE, 2))
META_CONCURRENCY = 64
LIST_LIMIT = 1000


@dataclass(frozen=True)
class Goal:
    """One target: ``metric`` of the result named ``name`` (size, concurrency)."""
    label: str
    name: str
    size: int
    concurrency: int
    metric: str  # a key of Result.summary()
    goal: float
    higher_is_better: bool = True
    swift: float | None = None
    unit: str = ""

    def passed(self, value: float) -> bool:
        return value >= self.goal if self.higher_is_better else value < self.goal


GOALS = (
    Goal("4 KiB PUT c=16", "put", SMALL, 16, "ops_per_s", 500, swift=105, unit="ops/s"),
    Goal("4 KiB PUT c=16 p99", "put", SMALL, 16, "p99_ms", 100, False, unit="ms"),
    Goal("4 KiB GET c=16", "get", SMALL, 16, "ops_per_s", 1400, swift=545, unit="ops/s"),
    Goal("4 KiB GET c=16 p99", "get", SMALL, 16, "p99_ms", 100, False, unit="ms"),
    Goal("1 MiB PUT c=8", "put", MEDIUM, 8, "mb_per_s", 220, swift=75, unit="MB/s"),
    Goal("1 MiB GET c=8", "get", MEDIUM, 8, "mb_per_s", 500, swift=245, unit="MB/s"),
    Goal("64 MiB PUT c=2", "put", LARGE, 2, "mb_per_s", 250, swift=170, unit="MB/s"),
    Goal("64 MiB GET c=2", "get", LARGE, 2, "mb_per_s", 550, swift=275, unit="MB/s"),
    Goal("LIST page by page (limit 1000)", "list", 0, 1, "items_per_s", 20000,
         unit="names/s"),
    Goal("metadata commits, 64 writers, / raw sqlite", "meta-put", 0, META_CONCURRENCY,
         "ratio", 0.5, unit="x sqlite"),
)


def phases(duration_s: float, large_count: int, meta_blobs: int, meta_duration_s: float,
           list_duration_s: float) -> list[tuple[Phase, str]]:
    """The suite's phases with the container group each one uses."""
    plan: list[tuple[Phase, str]] = []
    for size, concurrency in DATA_POINTS:
        count = large_count if size == LARGE else None
        plan.append((Phase("put", size, concurrency, duration_s, count), "data"))
        plan.append((Phase("get", size, concurrency, duration_s), "data"))
    plan.append((Phase("put", 0, META_CONCURRENCY, meta_duration_s, meta_blobs,
                       name="meta-put"), "meta"))
    plan.append((Phase("list", 0, 1, list_duration_s, list_limit=LIST_LIMIT), "meta"))
    return plan


async def run_suite(session: Session, plan: list[tuple[Phase, str]]) -> None:
    for phase, group in plan:
        session.console.rule(f"{phase.name} {human_size(phase.size)} c={phase.concurrency}")
        await session.run(phase, group)


def judge(results: list[Result], listed_blobs: int | None) -> list[dict[str, Any]]:
    """Each goal with the measured value (None if its phase did not run) and pass/miss."""
    found = {(r.name, r.size, r.concurrency): r for r in results if r.target == "cluster"}
    verdicts = []
    for goal in GOALS:
        row = found.get((goal.name, goal.size, goal.concurrency))
        value = None if row is None else row.summary().get(goal.metric)
        note = ""
        if goal.name == "list" and listed_blobs is not None:
            note = f"container of {listed_blobs:,} blobs"
        if row is not None and goal.metric == "ratio" and row.ratio is None:
            note = f"{row.ops_per_s:,.0f} commits/s; the sqlite limit was not measured"
        if row is not None and row.errors:
            note = (note + "; " if note else "") + f"{row.errors} errors"
        verdicts.append({"label": goal.label, "metric": goal.metric, "unit": goal.unit,
                         "value": value, "goal": goal.goal,
                         "higher_is_better": goal.higher_is_better, "swift": goal.swift,
                         "passed": None if value is None else goal.passed(value),
                         "vs_swift": (value / goal.swift if value is not None and goal.swift
                                      else None),
                         "ratio_to_limit": None if row is None or goal.metric == "p99_ms"
                         else row.ratio,
                         "ratio_basis": "" if row is None else row.ratio_basis,
                         "note": note})
    return verdicts


def targets_table(verdicts: list[dict[str, Any]]) -> Table:
    table = Table(title="targets (3 nodes, R=3, 2 cores, client on the same machine)")
    for column in ("target", "measured", "goal", "", "Swift", "x Swift", "x limit", "note"):
        table.add_column(column, justify="left" if column in ("target", "note") else "right")
    for v in verdicts:
        value, unit = v["value"], v["unit"]
        digits = 2 if v["metric"] == "ratio" else (1 if v["metric"] == "p99_ms" else 0)
        sign = ">=" if v["higher_is_better"] else "<"
        if v["passed"] is None:
            verdict = Text("not run", style="dim")
        else:
            verdict = Text("pass" if v["passed"] else "MISS",
                           style="green" if v["passed"] else "bold red")
        table.add_row(v["label"],
                      "-" if value is None else f"{value:,.{digits}f} {unit}",
                      f"{sign} {v['goal']:,.{digits}f}", verdict,
                      "-" if v["swift"] is None else f"{v['swift']:,.0f}",
                      "-" if v["vs_swift"] is None else f"{v['vs_swift']:.2f}",
                      "-" if v["ratio_to_limit"] is None else f"{v['ratio_to_limit']:.2f}",
                      v["note"])
    return table
