"""blobstore-placement: how evenly the ring spreads chunk copies, and how many move.

For each cluster size it places ``--chunks`` random chunk ids with R copies on
a ring of N equal nodes and prints:

* the load spread: copies on the busiest node over the mean (max/mean) and the
  standard deviation over the mean (std/mean);
* when one node joins (N+1) and when one leaves (N-1): the fraction of chunks
  that gain a new owner, next to the ideal R/(N+1) (resp. R/N: every chunk
  that had a copy on the leaving node), and the fraction of all copies that
  move, next to the ideal 1/(N+1) (resp. 1/N).

The ideal is what a perfect consistent hash would move: only the joining node's
new share, or only the leaving node's copies. Run: ``blobstore-placement``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass

from rich.console import Console
from rich.table import Table

from node.gossip.members import Member, MembershipView
from node.ring.ring import Ring


@dataclass(frozen=True)
class Result:
    nodes: int
    copies_per_node: float
    max_over_mean: float
    std_over_mean: float
    join_chunks_moved: float
    join_chunks_ideal: float
    join_copies_moved: float
    join_copies_ideal: float
    leave_chunks_moved: float
    leave_chunks_ideal: float
    leave_copies_moved: float
    leave_copies_ideal: float
    seconds: float


def ring_of(n: int, *, skip: str | None = None) -> Ring:
    members = tuple(Member(f"node-{i:04d}", f"h{i}:80", f"h{i}:7946")
                    for i in range(n) if f"node-{i:04d}" != skip)
    return Ring.build(MembershipView(members, version=1))


def place(ring: Ring, keys: list[bytes], r: int) -> list[frozenset[str]]:
    return [frozenset(ring.replicas_for(key, r)) for key in keys]


def moved(before: list[frozenset[str]], after: list[frozenset[str]]) -> tuple[float, float]:
    """(fraction of chunks whose owner set changed, fraction of copies that moved)."""
    chunks = sum(1 for a, b in zip(before, after) if a != b)
    copies = sum(len(b - a) for a, b in zip(before, after))
    total = sum(len(a) for a in before)
    return chunks / len(before), copies / total


def measure(n: int, chunks: int, r: int, seed: int) -> Result:
    started = time.perf_counter()
    rng = random.Random(seed)
    keys = [rng.randbytes(32) for _ in range(chunks)]
    base = place(ring_of(n), keys, r)
    load = Counter(node for owners in base for node in owners)
    counts = [load.get(f"node-{i:04d}", 0) for i in range(n)]
    mean = statistics.fmean(counts)
    joined = place(ring_of(n + 1), keys, r)
    join_chunks, join_copies = moved(base, joined)
    left = place(ring_of(n, skip=f"node-{n - 1:04d}"), keys, r) if n > 1 else base
    leave_chunks, leave_copies = moved(base, left)
    return Result(
        nodes=n, copies_per_node=mean, max_over_mean=max(counts) / mean,
        std_over_mean=statistics.pstdev(counts) / mean,
        join_chunks_moved=join_chunks, join_chunks_ideal=min(1.0, r / (n + 1)),
        join_copies_moved=join_copies,
        join_copies_ideal=1 / (n + 1),
        leave_chunks_moved=leave_chunks, leave_chunks_ideal=min(1.0, r / n),
        # With R >= N the survivors already hold every chunk: nothing needs to move.
        leave_copies_moved=leave_copies, leave_copies_ideal=1 / n if r < n else 0.0,
        seconds=time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="3,10,100,1000", help="cluster sizes")
    parser.add_argument("--chunks", type=int, default=100_000, help="chunk ids placed")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    results = [measure(int(n), args.chunks, args.replicas, args.seed)
               for n in args.nodes.split(",")]
    table = Table(title=f"placement of {args.chunks:,} chunks x {args.replicas} copies "
                        "(ideal in parentheses)")
    for column in ("nodes", "copies/node", "max/mean", "std/mean", "join: chunks moved",
                   "join: copies moved", "leave: chunks moved", "leave: copies moved"):
        table.add_column(column, justify="right")
    for res in results:
        table.add_row(
            str(res.nodes), f"{res.copies_per_node:,.0f}", f"{res.max_over_mean:.3f}",
            f"{res.std_over_mean:.3f}",
            f"{res.join_chunks_moved:.3f} ({res.join_chunks_ideal:.3f})",
            f"{res.join_copies_moved:.3f} ({res.join_copies_ideal:.3f})",
            f"{res.leave_chunks_moved:.3f} ({res.leave_chunks_ideal:.3f})",
            f"{res.leave_copies_moved:.3f} ({res.leave_copies_ideal:.3f})")
    Console(width=130).print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(res) for res in results], f, indent=2)


if __name__ == "__main__":
    main()
