"""The campaign's report: a rich summary on the terminal and the same facts as JSON."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tools.campaign.checks import Verdict
from tools.campaign.faults import Done
from tools.campaign.workload import History


@dataclass
class Report:
    seed: int
    command: str
    hosts: str
    nodes: int
    replicas: int
    duration_s: float
    skipped_kinds: list[str]
    history: History
    faults: list[Done]
    findings: list[str]
    verdict: Verdict
    heal_s: float | None
    unhealed: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict.passed and not self.findings and self.heal_s is not None

    def outcomes(self) -> dict[str, dict[str, int]]:
        counts: dict[str, Counter[str]] = {}
        for call in self.history.calls:
            counts.setdefault(call.kind, Counter())[call.outcome] += 1
        return {kind: dict(c) for kind, c in sorted(counts.items())}

    def as_json(self) -> dict[str, Any]:
        applied = [f for f in self.faults if not f.skipped]
        return {
            "passed": self.passed,
            "seed": self.seed,
            "replay": self.command,
            "hosts": self.hosts,
            "nodes": self.nodes,
            "replicas": self.replicas,
            "workload_s": self.duration_s,
            "skipped_fault_kinds": self.skipped_kinds,
            "operations": self.outcomes(),
            "unknown_outcomes": sum(c.outcome == "unknown" for c in self.history.calls),
            "acked_writes": sum(c.kind == "put" and c.status == 201
                                for c in self.history.calls),
            "acked_writes_lost": self.verdict.acked_writes_lost,
            "faults": [f.as_json() for f in self.faults],
            "faults_by_kind": dict(Counter(f.kind for f in applied)),
            "last_fault_healed_s": max((f.healed or 0.0 for f in applied), default=None),
            "heal_after_last_fault_s": None if self.heal_s is None else round(self.heal_s, 2),
            "unhealed": self.unhealed,
            "linearizability": self.verdict.linearizability,
            "linearizability_parts": self.verdict.parts_checked,
            "linearizability_detail": self.verdict.linearizability_detail,
            "violations": self.verdict.violations + self.history.violations,
            "findings": self.findings,
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n")

    def show(self, console: Console) -> None:
        data = self.as_json()
        ops = Table(title="Operations by outcome")
        for column in ("kind", "ok", "fail", "unknown"):
            ops.add_column(column, justify="left" if column == "kind" else "right")
        for kind, counts in data["operations"].items():
            ops.add_row(kind, *(str(counts.get(o, 0)) for o in ("ok", "fail", "unknown")))
        console.print(ops)
        faults = Table(title=f"Faults ({self.hosts} hosts)")
        for column in ("at s", "kind", "targets", "healed s", "note"):
            faults.add_column(column)
        for f in self.faults:
            faults.add_row(f"{f.started:.1f}", f.kind + (" (skipped)" if f.skipped else ""),
                           ",".join(f.targets),
                           "" if f.healed is None else f"{f.healed:.1f}", f.note[:60])
        console.print(faults)
        for reason in self.skipped_kinds:
            console.print(f"[yellow]fault kinds not run[/]: {reason}")
        heal = "never" if self.heal_s is None else f"{self.heal_s:.1f} s"
        console.print(f"acknowledged writes: {data['acked_writes']}, lost: "
                      f"{data['acked_writes_lost']}; unknown outcomes: "
                      f"{data['unknown_outcomes']}; healthy again {heal} after the last fault")
        console.print(f"linearizability: {data['linearizability']} "
                      f"({data['linearizability_parts']} parts)")
        for problem in self.unhealed[:10]:
            console.print(f"[red]not healed[/]: {problem}")
        for text in (data["violations"] + self.findings)[:30]:
            console.print(f"[red]violation[/]: {text[:2000]}")
        if self.verdict.linearizability_detail:
            console.print(self.verdict.linearizability_detail[:4000])
        colour, word = ("green", "PASSED") if self.passed else ("red", "FAILED")
        console.print(f"[bold {colour}]{word}[/] seed {self.seed}; replay: {self.command}")
