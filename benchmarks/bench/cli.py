"""blobstore-bench: load, limits and targets for the blob store, every read verified.

    blobstore-bench suite --cluster 3 --json suite.json       # the issue's targets (~5 min)
    blobstore-bench run --url http://127.0.0.1:8001 --workload put,get,range-get \\
        --size 1MiB --concurrency 8 --duration 20
    blobstore-bench limits --data-dir /srv/blobs              # disk, sqlite, nginx only
    blobstore-bench setup                                     # installs nginx (Debian)
    blobstore-bench compare before.json after.json

``run`` is the default command (``blobstore-bench --url ...`` works). ``--cluster N``
starts N real nodes in a temporary directory and stops them afterwards; ``--url``
(repeated or comma-separated) uses a running cluster, logging in as ``admin`` with
``--password`` (or BLOBSTORE_ADMIN_PASSWORD, or the development password).
Exit code: 0 when every operation succeeded, 1 when any failed (wrong data included),
2 for bad arguments or when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.bench import compare as cmp
from benchmarks.bench import suite as st
from benchmarks.bench.cluster import BenchmarkError, LocalCluster, default_password, login
from benchmarks.bench.nginx import NginxError, install_nginx
from benchmarks.bench.report import limits_table, noise_note, results_table
from benchmarks.bench.session import Session
from benchmarks.bench.workloads import OPS, Phase, Target
from node.config import parse_size
from node.testing.process import NodeStartError

COMMANDS = ("run", "suite", "limits", "setup", "compare")
#: Console width when the output is not a terminal.
WIDE = 180
PRESETS = {"small": 4 * 1024, "medium": 1024 * 1024, "large": 64 * 1024 * 1024}


def size_arg(value: str) -> int:
    try:
        return PRESETS.get(value) or parse_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a size: {value!r} ({exc})") from None


def workloads_arg(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in OPS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown workload {bad[0]!r}; one of {OPS}")
    return names


def target_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--cluster", type=int, metavar="N",
                       help="start a local cluster of N node processes (R=3)")
    where.add_argument("--url", action="append", default=[],
                       help="node URL of a running cluster (repeat, or comma-separated)")
    p.add_argument("--password", default=None, help="admin password for --url")
    p.add_argument("--dir", type=Path, help="where the local cluster's temp dir goes")
    p.add_argument("--keep", action="store_true", help="keep the local cluster's dir")
    p.add_argument("--data-dir", type=Path,
                   help="filesystem for the disk and sqlite limits (default: the cluster's)")
    p.add_argument("--install-nginx", action="store_true",
                   help="install nginx from Debian's packages if missing (needs root)")
    p.add_argument("--nginx-duration", type=float, default=5.0, help="seconds per nginx point")
    p.add_argument("--disk-bytes", type=size_arg, default=parse_size("256MiB"))
    p.add_argument("--cleanup", action="store_true",
                   help="delete the blobs and containers written (for --url clusters)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--request-timeout", type=float, default=120.0,
                   help="seconds a request may wait for the server before it is an error")
    p.add_argument("--json", type=Path, help="write everything to this file")
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(prog="blobstore-bench", description=doc.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(doc.split("\n")[1:]))
    sub = parser.add_subparsers(dest="command", required=True)
    common = target_options()
    run = sub.add_parser("run", parents=[common], help="run workloads in order")
    run.add_argument("--workload", type=workloads_arg, action="append",
                     help=f"one or more of {', '.join(OPS)} (default put,get)")
    run.add_argument("--size", type=size_arg, default=PRESETS["small"],
                     help="small (4KiB), medium (1MiB), large (64MiB) or a size like 256KiB")
    run.add_argument("--concurrency", type=int, default=16)
    run.add_argument("--duration", type=float, default=10.0, help="seconds per workload")
    run.add_argument("--count", type=int, help="operations per workload (whichever first)")
    run.add_argument("--prefill", type=int,
                     help="blobs written (untimed) before a read or delete workload")
    run.add_argument("--list-limit", type=int, default=1000)
    run.add_argument("--limits", action="store_true",
                     help="also measure the disk, sqlite and nginx limits for ratios")
    suite = sub.add_parser("suite", parents=[common], help="the issue's target set")
    suite.add_argument("--duration", type=float, default=15.0, help="seconds per PUT/GET")
    suite.add_argument("--large-count", type=int, default=32, help="64 MiB blobs written")
    suite.add_argument("--meta-blobs", type=int, default=100_000,
                       help="0-byte PUTs filling the LIST container")
    suite.add_argument("--meta-duration", type=float, default=120.0)
    suite.add_argument("--list-duration", type=float, default=20.0)
    suite.add_argument("--no-limits", action="store_true", help="skip the limits")
    limits = sub.add_parser("limits", parents=[common], help="only this machine's limits")
    limits.add_argument("--size", type=size_arg, action="append",
                        help="nginx sizes (default the suite's 4KiB, 1MiB, 64MiB)")
    limits.add_argument("--concurrency", type=int, action="append")
    sub.add_parser("setup", help="install nginx from Debian's packages")
    compare = sub.add_parser("compare", help="two JSON results side by side")
    compare.add_argument("files", type=Path, nargs=2)
    args = parser.parse_args(argv)
    if args.command in ("run", "suite", "limits"):
        args.url = [u.strip() for item in args.url for u in item.split(",") if u.strip()]
        if args.command != "limits" and not args.url and not args.cluster:
            parser.error("give --cluster N or --url URL")
        if args.cluster is not None and args.cluster < 1:
            parser.error("--cluster needs at least 1 node")
    if args.command == "run":
        args.workload = [w for group in (args.workload or [["put", "get"]]) for w in group]
        if args.size == 0 and any(w in ("range-get", "mixed") for w in args.workload):
            parser.error("range-get and mixed need a size above 0")
        if args.concurrency < 1 or args.duration <= 0:
            parser.error("--concurrency and --duration must be positive")
    return args


def plan_of(args: argparse.Namespace) -> list[tuple[Phase, str]]:
    if args.command == "suite":
        return st.phases(args.duration, args.large_count, args.meta_blobs,
                         args.meta_duration, args.list_duration)
    return [(Phase(w, args.size, args.concurrency, args.duration, args.count,
                   list_limit=args.list_limit), "data") for w in args.workload]


def nginx_points(args: argparse.Namespace, plan: list[tuple[Phase, str]]) -> list[
        tuple[int, int]]:
    if args.command == "limits":
        sizes = args.size or [s for s, _ in st.DATA_POINTS]
        concurrencies = args.concurrency or [c for _, c in st.DATA_POINTS]
        if len(concurrencies) == 1:
            concurrencies = concurrencies * len(sizes)
        return list(zip(sizes, concurrencies))
    points = [(p.size, p.concurrency) for p, _ in plan if p.op == "get" and p.size > 0]
    return list(dict.fromkeys(points))


async def session_main(args: argparse.Namespace, console: Console, target: Target,
                       data_dir: Path, cluster_facts: dict[str, Any],
                       argv: list[str]) -> dict[str, Any]:
    session = Session(target, console, seed=args.seed, prefill=getattr(args, "prefill", None))
    plan = plan_of(args) if args.command != "limits" else []
    wants_limits = (args.command == "limits" or (args.command == "suite" and not args.no_limits)
                    or (args.command == "run" and args.limits))
    if wants_limits:
        await session.measure_limits(data_dir, nginx_points(args, plan),
                                     nginx_duration_s=args.nginx_duration,
                                     install=args.install_nginx, disk_bytes=args.disk_bytes)
        console.print(limits_table(session.limits.disk, session.limits.sqlite,
                                   session.limits.nginx, session.limits.nginx_note))
    if args.command == "suite":
        await st.run_suite(session, plan)
    else:
        for phase, group in plan:
            await session.run(phase, group)
    session.finish()
    if session.results:
        console.print(results_table(session.results))
        console.print(noise_note(session.results), highlight=False)
    extra: dict[str, Any] = {}
    if args.command == "suite":
        meta = session.keyspaces.get(("meta", 0))
        verdicts = st.judge(session.results, None if meta is None else len(meta.written))
        console.print(st.targets_table(verdicts))
        extra["targets"] = verdicts
    if args.cleanup and target.token:
        await session.cleanup()
    return session.record(argv, cluster_facts, extra)


def run_command(args: argparse.Namespace, argv: list[str], console: Console) -> int:
    cluster: LocalCluster | None = None
    try:
        if args.cluster:
            console.print(f"starting a local cluster of {args.cluster} nodes ...")
            cluster = LocalCluster(args.cluster, parent=args.dir, keep=args.keep).start()
            urls, password, pids = cluster.urls, cluster.password, cluster.pids
            data_dir = args.data_dir or cluster.base
            console.print(f"cluster up: {', '.join(urls)} ({cluster.base})", highlight=False)
        else:
            urls, pids = args.url, []
            password = args.password or default_password()
            data_dir = args.data_dir or Path(tempfile.gettempdir())
        token = asyncio.run(login(urls[0], password)) if urls else None
        facts = {"local": cluster is not None, "nodes": len(urls), "urls": urls,
                 "replicas": cluster.replicas if cluster else None, "data_dir": str(data_dir)}
        target = Target(urls, token, "cluster", pids, args.request_timeout)
        record = asyncio.run(session_main(args, console, target, data_dir, facts, argv))
    except (BenchmarkError, NodeStartError, NginxError, OSError) as exc:
        console.print(f"[red]benchmark failed:[/red] {exc}", highlight=False)
        if cluster is not None:
            for name, tail in cluster.log_tails().items():
                console.print(f"--- last log lines of {name}", highlight=False)
                console.print(tail, markup=False, highlight=False)
        return 2
    finally:
        if cluster is not None:
            cluster.stop()
    if args.json:
        args.json.write_text(json.dumps(record, indent=2))
        console.print(f"wrote {args.json}", highlight=False)
    failures = sum(r["errors"] for r in record["results"])
    failures += sum(r["errors"] for r in record["limits"]["nginx"])
    return 1 if failures else 0


def compare_command(args: argparse.Namespace, console: Console) -> int:
    try:
        a, b = (cmp.load(path) for path in args.files)
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot compare:[/red] {exc}", highlight=False)
        return 2
    names = (str(args.files[0]), str(args.files[1]))
    console.print(cmp.results_table(a, b, names))
    console.print(cmp.limits_table(a, b))
    targets = cmp.targets_table(a, b)
    if targets is not None:
        console.print(targets)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["run", *argv]
    args = parse_args(argv)
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=WIDE)  # a log or a pipe: room for the whole table
    if args.command == "compare":
        return compare_command(args, console)
    if args.command == "setup":
        try:
            console.print(f"nginx: {install_nginx()}", highlight=False)
        except (NginxError, OSError) as exc:
            console.print(f"[red]setup failed:[/red] {exc}", highlight=False)
            return 2
        return 0
    return run_command(args, argv, console)


if __name__ == "__main__":
    sys.exit(main())
