"""``blobstore-bench compare A.json B.json``: two runs side by side, with the change.

Rows are matched by the result's key (target, name, size, concurrency); a row in only
one file is shown with the other side empty. For rates a positive change is better;
for latencies the sign is flipped in colour only (a lower p99 shows green).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from benchmarks.bench.report import human_size


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or data.get("tool") != "blobstore-bench":
        raise ValueError(f"{path} is not a blobstore-bench JSON result")
    return data


def change(a: float | None, b: float | None, higher_is_better: bool = True) -> Text:
    if a is None or b is None:
        return Text("")
    if a == 0:
        return Text("new" if b else "0 %")
    pct = 100 * (b - a) / a
    better = pct > 0 if higher_is_better else pct < 0
    style = "" if abs(pct) < 5 else ("green" if better else "red")
    return Text(f"{pct:+.1f} %", style=style)


def _num(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def rate_of(row: dict[str, Any]) -> tuple[str, float]:
    """The headline rate of a row: names/s for LIST, MB/s for 1 MiB and up, else ops/s."""
    if row.get("items"):
        return "names/s", row["items_per_s"]
    if row["size"] >= 1024 * 1024:
        return "MB/s", row["mb_per_s"]
    return "ops/s", row["ops_per_s"]


def results_table(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str]) -> Table:
    rows_a = {r["key"]: r for r in a.get("results", []) + a.get("limits", {}).get("nginx", [])}
    rows_b = {r["key"]: r for r in b.get("results", []) + b.get("limits", {}).get("nginx", [])}
    table = Table(title=f"A = {names[0]}   B = {names[1]}")
    for column in ("result", "unit", "A", "B", "change", "p99 A", "p99 B", "change",
                   "errors A", "errors B"):
        table.add_column(column, justify="left" if column == "result" else "right")
    for key in list(rows_a) + [k for k in rows_b if k not in rows_a]:
        ra, rb = rows_a.get(key), rows_b.get(key)
        some = ra or rb
        assert some is not None
        unit, _ = rate_of(some)
        va = rate_of(ra)[1] if ra else None
        vb = rate_of(rb)[1] if rb else None
        pa = ra["p99_ms"] if ra else None
        pb = rb["p99_ms"] if rb else None
        label = (f"{some['target']} {some['name']} {human_size(some['size'])} "
                 f"c={some['concurrency']}")
        table.add_row(label, unit, _num(va, 1), _num(vb, 1), change(va, vb), _num(pa, 1),
                      _num(pb, 1), change(pa, pb, higher_is_better=False),
                      "" if ra is None else str(ra["errors"]),
                      "" if rb is None else str(rb["errors"]))
    return table


def limits_table(a: dict[str, Any], b: dict[str, Any]) -> Table:
    table = Table(title="limits")
    for column in ("limit", "A", "B", "change"):
        table.add_column(column, justify="left" if column == "limit" else "right")
    picks = (("disk write MB/s (fsync at end)", "disk", "write_mb_per_s"),
             ("disk 4 KiB write+fsync /s", "disk", "small_fsyncs_per_s"),
             ("disk read MB/s", "disk", "read_mb_per_s"),
             ("sqlite commits/s", "sqlite", "commits_per_s"))
    for label, group, field in picks:
        va = ((a.get("limits") or {}).get(group) or {}).get(field)
        vb = ((b.get("limits") or {}).get(group) or {}).get(field)
        table.add_row(label, _num(va), _num(vb), change(va, vb))
    return table


def targets_table(a: dict[str, Any], b: dict[str, Any]) -> Table | None:
    ta = {t["label"]: t for t in a.get("targets", [])}
    tb = {t["label"]: t for t in b.get("targets", [])}
    if not ta and not tb:
        return None
    table = Table(title="targets")
    for column in ("target", "goal", "A", "B", "change"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for label in list(ta) + [k for k in tb if k not in ta]:
        some = ta.get(label) or tb[label]
        va = ta.get(label, {}).get("value")
        vb = tb.get(label, {}).get("value")
        digits = 2 if some["metric"] == "ratio" else 1
        sign = ">=" if some["higher_is_better"] else "<"

        table.add_row(label, f"{sign} {some['goal']:,}", _mark(ta.get(label), va, digits),
                      _mark(tb.get(label), vb, digits),
                      change(va, vb, higher_is_better=some["higher_is_better"]))
    return table


def _mark(verdict: dict[str, Any] | None, value: float | None, digits: int) -> Text:
    if value is None or verdict is None:
        return Text("")
    return Text(f"{value:,.{digits}f}", style="green" if verdict.get("passed") else "red")
