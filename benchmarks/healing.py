"""blobstore-healing: how long a real cluster takes to re-replicate after a crash.

    blobstore-healing --total 2GiB --json healing.json

Starts ``--nodes`` real node processes (``R = --replicas``, ``--chunk-size``
chunks, the default heal settings: healing runs on every ring change, and
otherwise only every 10 minutes) in a temporary directory, uploads ``--total``
bytes of random blobs of ``--blob-size`` (``--concurrency`` uploads at a time,
round-robin over the nodes), checks that every chunk has exactly R copies on
its owners, then SIGKILLs one node that is not the coordinator (chosen with
``--seed``) and measures:

* when the survivors declare it dead (the first and the last of them);
* when every chunk is back to R copies on live nodes (chunk files counted by
  name in each survivor's data dir, every ``--poll-s``);
* when ``GET /cluster`` on every survivor reports ``under_replicated`` 0 and
  nothing ``being_repaired``.

It prints a table with those times, the upload throughput, the healing
throughput (bytes of the copies made, over the time from the first declaration
of death to the last copy) and the copies the healers sent (more than were made
if several holders send the same chunk); every blob is then read back through
the survivors and compared (``--no-read-back`` skips that). ``--json FILE``
writes the same figures. Blob contents are one random block per run with each
chunk stamped with its blob and chunk number, so no two chunks are alike and
generating 2 GiB costs a memory copy rather than 10 s of ``os.urandom``.

Every wait is bounded (``--start-timeout-s``, ``--upload-timeout-s``,
``--heal-timeout-s``); the node processes are killed by pid and the directory
removed at the end (``--keep`` keeps it, with the node logs). Exit code 0 when
the cluster healed and every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote

import trio
from rich.console import Console
from rich.table import Table

from benchmarks.httpclient import Connection
from node.config import parse_size
from node.gossip.members import Member, MembershipView
from node.ring.ring import Ring
from node.testing.observe import cluster_view, safe_request, wait_agreed_coordinator, wait_for
from node.testing.process import NodeProcess, start_joined

PASSWORD = "healing-benchmark-password"
CONTAINER = "healing"
#: Bytes at the start of every chunk that make it unique: blob index, chunk index.
STAMP = 16
console = Console()


class BenchmarkFailed(Exception):
    """A check failed or a wait ran out; the message says which."""


@dataclass
class Blob:
    name: str
    size: int
    md5: str
    chunks: list[tuple[str, int]]  # (hex id, size) in order


@dataclass
class Figures:
    """What one run measured; seconds are from the kill unless named otherwise."""
    nodes: int
    replicas: int
    chunk_size: int
    blob_size: int
    blobs: int = 0
    bytes: int = 0
    chunks: int = 0
    copies: int = 0
    start_s: float = 0.0
    upload_s: float = 0.0
    upload_mb_per_s: float = 0.0
    placement_verified_s: float = 0.0
    coordinator: str = ""
    victim: str = ""
    victim_copies: int = 0
    dead_first_s: float | None = None
    dead_all_s: float | None = None
    copies_restored_s: float | None = None
    counters_zero_s: float | None = None
    copies_made: int = 0
    bytes_made: int = 0
    heal_s: float | None = None  # from the first declaration of death to the last copy
    heal_mb_per_s: float | None = None
    copies_sent_by_healers: int = 0
    surplus_dropped: int = 0
    read_back_mb_per_s: float | None = None
    read_back_errors: int = 0
    problems: list[str] = field(default_factory=list)


# -- the data -------------------------------------------------------------------------------

def blob_pieces(block: memoryview, index: int, chunk_size: int) -> Iterator[memoryview | bytes]:
    """Blob ``index``: the random block, each chunk's first bytes replaced by a stamp."""
    for number, offset in enumerate(range(0, len(block), chunk_size)):
        end = min(offset + chunk_size, len(block))
        stamp = (index.to_bytes(8, "big") + number.to_bytes(8, "big"))[:end - offset]
        yield stamp
        yield block[offset + len(stamp):end]


def describe(block: memoryview, index: int, chunk_size: int) -> Blob:
    """The blob's MD5 (its etag) and chunk ids, as the nodes will compute them."""
    md5 = hashlib.md5()
    chunks: list[tuple[str, int]] = []
    pieces = blob_pieces(block, index, chunk_size)
    for stamp in pieces:
        rest = next(pieces)
        digest = hashlib.sha256(stamp)
        digest.update(rest)
        md5.update(stamp)
        md5.update(rest)
        chunks.append((digest.hexdigest(), len(stamp) + len(rest)))
    return Blob(f"blob-{index:05d}", len(block), md5.hexdigest(), chunks)


# -- the cluster ----------------------------------------------------------------------------

def start_cluster(base: Path, args: argparse.Namespace, key: str) -> dict[str, NodeProcess]:
    settings = ["--replicas", str(args.replicas), "--bootstrap-expect", str(args.nodes),
                "--chunk-size", str(args.chunk_size), "--gossip-preset", args.gossip_preset]
    env: dict[str, str | None] = {"BLOBSTORE_CLUSTER_KEY": key}
    names = [f"n{i}" for i in range(1, args.nodes + 1)]
    nodes = {name: NodeProcess(base / name, name, env=env, admin_password=PASSWORD,
                               start_timeout_s=args.start_timeout_s) for name in names}
    return start_joined(lambda name, flags: nodes[name].start(args=flags), names, settings,
                        timeout_s=args.start_timeout_s)


def owners_of(node_ids: Iterable[str], chunks: Iterable[str], replicas: int
              ) -> dict[str, frozenset[str]]:
    """Each chunk's owners on the ring of these live nodes (equal weights, no zones)."""
    ring = Ring.build(MembershipView(tuple(Member(n, "", "") for n in sorted(node_ids)), 1))
    return {h: frozenset(ring.replicas_for(bytes.fromhex(h), replicas)) for h in chunks}


def copies_by_chunk(nodes: Iterable[NodeProcess]) -> dict[str, set[str]]:
    """Chunk hex id -> the given nodes holding a file of that name (names only)."""
    found: dict[str, set[str]] = {}
    for node in nodes:
        for hex_id in node.chunk_ids():
            found.setdefault(hex_id, set()).add(node.node_id)
    return found


# -- the phases -----------------------------------------------------------------------------

async def upload_all(nodes: list[NodeProcess], token: str, block: memoryview, count: int,
                     args: argparse.Namespace) -> list[Blob]:
    """Upload ``count`` blobs, ``args.concurrency`` at a time; each one's etag is checked."""
    blobs: list[Blob] = []
    indices = iter(range(count))
    auth = [("Authorization", f"Bearer {token}"),
            ("Content-Type", "application/octet-stream")]

    async def worker(slot: int) -> None:
        conn = Connection(nodes[slot % len(nodes)].url)
        try:
            for index in indices:
                blob = await trio.to_thread.run_sync(describe, block, index, args.chunk_size)
                target = f"/put_data?container={CONTAINER}&blob={quote(blob.name)}"
                reply = await conn.request("POST", target, auth,
                                           blob_pieces(block, index, args.chunk_size),
                                           content_length=blob.size)
                if reply.status != 201:
                    raise BenchmarkFailed(f"PUT {blob.name}: {reply.status} "
                                          f"{reply.body[:300]!r}")
                etag = json.loads(reply.body)["etag"].strip('"')
                if etag != blob.md5:
                    raise BenchmarkFailed(f"PUT {blob.name}: etag {etag}, expected {blob.md5}")
                blobs.append(blob)
        finally:
            await conn.aclose()

    with trio.fail_after(args.upload_timeout_s):
        async with trio.open_nursery() as nursery:
            for slot in range(args.concurrency):
                nursery.start_soon(worker, slot)
    return blobs


async def read_back(nodes: list[NodeProcess], token: str, blobs: list[Blob],
                    concurrency: int, timeout_s: float) -> tuple[float, int]:
    """Every blob through the given nodes (round-robin), MD5-checked: (seconds, errors)."""
    todo = iter(enumerate(blobs))
    errors = 0
    auth = [("Authorization", f"Bearer {token}")]

    async def worker(slot: int) -> None:
        nonlocal errors
        conn = Connection(nodes[slot % len(nodes)].url)
        try:
            for _, blob in todo:
                target = f"/get_data?container={CONTAINER}&blob={quote(blob.name)}"
                try:
                    reply = await conn.request("GET", target, auth, keep_body=False)
                except (OSError, ConnectionError, trio.BrokenResourceError):
                    errors += 1
                    await conn.aclose()
                    continue
                if reply.status != 200 or reply.md5 != blob.md5 or reply.length != blob.size:
                    errors += 1
        finally:
            await conn.aclose()

    started = trio.current_time()
    with trio.fail_after(timeout_s):
        async with trio.open_nursery() as nursery:
            for slot in range(concurrency):
                nursery.start_soon(worker, slot)
    return trio.current_time() - started, errors


def measure_healing(nodes: dict[str, NodeProcess], victim: str, token: str,
                    sizes: dict[str, int], figures: Figures, args: argparse.Namespace) -> None:
    """Kill ``victim`` and time the death, the copies and the counters (bounded)."""
    survivors = [n for name, n in nodes.items() if name != victim]
    before = copies_by_chunk(survivors)
    missing_before = {h: args.replicas - len(before.get(h, ())) for h in sizes}
    figures.victim_copies = len(nodes[victim].chunk_ids())
    killed_at = time.monotonic()
    nodes[victim].signal(signal.SIGKILL)
    nodes[victim].wait(10.0)
    deadline = killed_at + args.heal_timeout_s
    next_files = killed_at
    seen_dead: set[str] = set()
    while True:
        now = time.monotonic()
        since = now - killed_at
        if figures.dead_all_s is None:
            for node in survivors:
                if node.node_id in seen_dead:
                    continue
                members = cluster_view(node, token).get("members", [])
                if any(m["node_id"] == victim and m["state"] == "dead" for m in members):
                    seen_dead.add(node.node_id)
                    if figures.dead_first_s is None:
                        figures.dead_first_s = since
            if len(seen_dead) == len(survivors):
                figures.dead_all_s = since
        if figures.copies_restored_s is None and now >= next_files:
            next_files = now + args.poll_s
            found = copies_by_chunk(survivors)
            if all(len(found.get(h, ())) >= args.replicas for h in sizes):
                figures.copies_restored_s = since
        if figures.copies_restored_s is not None:
            views = [cluster_view(n, token).get("chunks", {}) for n in survivors]
            if all(v.get("under_replicated") == 0 and v.get("being_repaired") == 0
                   for v in views):
                figures.counters_zero_s = since
                break
        if now > deadline:
            counters = {n.node_id: cluster_view(n, token).get("chunks") for n in survivors}
            figures.problems.append(
                f"not healed within {args.heal_timeout_s:.0f} s of the kill: dead seen by "
                f"{sorted(seen_dead)}, copies restored at {figures.copies_restored_s}, "
                f"counters {counters}")
            break
        time.sleep(0.1)
    figures.copies_made = sum(m for m in missing_before.values() if m > 0)
    figures.bytes_made = sum(sizes[h] * m for h, m in missing_before.items() if m > 0)
    if figures.copies_restored_s is not None and figures.dead_first_s is not None:
        figures.heal_s = figures.copies_restored_s - figures.dead_first_s
        figures.heal_mb_per_s = figures.bytes_made / max(figures.heal_s, 1e-9) / 1e6
    views = [cluster_view(n, token).get("chunks", {}) for n in survivors]
    figures.copies_sent_by_healers = sum(v.get("healed", 0) for v in views)
    figures.surplus_dropped = sum(v.get("surplus_dropped", 0) for v in views)


def check_placement(nodes: dict[str, NodeProcess], sizes: dict[str, int], replicas: int,
                    timeout_s: float) -> float:
    """Wait until every chunk is on exactly its owners and nothing else is on disk."""
    owners = owners_of(nodes, sizes, replicas)
    wrong: list[str] = []

    def placed() -> bool:
        found = copies_by_chunk(nodes.values())
        wrong[:] = [f"{h[:12]} on {sorted(found.get(h, ()))}, owners {sorted(owners[h])}"
                    for h in sizes if found.get(h, set()) != owners[h]]
        wrong.extend(f"{h[:12]} is no chunk of ours" for h in set(found) - set(sizes))
        return not wrong

    return wait_for("every chunk on exactly its owners", placed, timeout_s, 0.5,
                    detail=lambda: wrong[:5])


def run(base: Path, args: argparse.Namespace, nodes: dict[str, NodeProcess]) -> Figures:
    figures = Figures(args.nodes, args.replicas, args.chunk_size, args.blob_size)
    count = max(1, -(-args.total // args.blob_size))
    started = time.monotonic()
    nodes.update(start_cluster(base, args, secrets.token_hex(24)))
    first = nodes["n1"]
    token = first.login(password=PASSWORD)
    status, body = safe_request(first, "POST", "/create_container", token=token,
                                json_body={"container": CONTAINER})
    if status != 201:
        raise BenchmarkFailed(f"create_container: {status} {body!r}")
    figures.start_s = time.monotonic() - started
    console.print(f"{args.nodes} nodes up in {figures.start_s:.1f} s ({base})")

    block = memoryview(os.urandom(args.blob_size))
    console.print(f"uploading {count} blobs of {args.blob_size} B, {args.concurrency} at a "
                  f"time ...")
    started = time.monotonic()
    blobs = trio.run(upload_all, list(nodes.values()), token, block, count, args)
    figures.upload_s = time.monotonic() - started
    figures.blobs = len(blobs)
    figures.bytes = sum(b.size for b in blobs)
    figures.upload_mb_per_s = figures.bytes / figures.upload_s / 1e6
    sizes = {h: size for b in blobs for h, size in b.chunks}
    figures.chunks = len(sizes)
    figures.copies = args.replicas * len(sizes)
    console.print(f"uploaded {figures.bytes} B in {figures.upload_s:.1f} s "
                  f"({figures.upload_mb_per_s:.0f} MB/s); checking placement ...")
    figures.placement_verified_s = check_placement(nodes, sizes, args.replicas, 60.0)

    figures.coordinator = wait_agreed_coordinator(nodes.values(), timeout_s=30.0)
    rng = random.Random(args.seed)
    victim = rng.choice(sorted(set(nodes) - {figures.coordinator}))
    figures.victim = victim
    console.print(f"SIGKILL {victim} (coordinator {figures.coordinator}); healing ...")
    measure_healing(nodes, victim, token, sizes, figures, args)
    if figures.problems:
        return figures
    survivors = [n for name, n in nodes.items() if name != victim]
    found = copies_by_chunk(survivors)
    over = [h for h in sizes if len(found.get(h, ())) != args.replicas]
    if over:
        figures.problems.append(f"{len(over)} chunks without exactly {args.replicas} live "
                                f"copies after healing, e.g. {over[:3]}")
    if args.read_back:
        seconds, errors = trio.run(read_back, survivors, token, blobs, args.concurrency,
                                   args.upload_timeout_s)
        figures.read_back_mb_per_s = figures.bytes / seconds / 1e6
        figures.read_back_errors = errors
        if errors:
            figures.problems.append(f"{errors} blobs did not read back intact")
    return figures


# -- output ---------------------------------------------------------------------------------

def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def show(f: Figures) -> None:
    table = Table(title=f"healing after one SIGKILL: {f.nodes} nodes, R = {f.replicas}, "
                        f"{f.chunk_size // 1024} KiB chunks")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("cluster start", fmt_s(f.start_s)),
        ("uploaded", f"{f.blobs} blobs x {f.blob_size / 2**20:.0f} MiB = "
                     f"{f.bytes / 2**20:.0f} MiB"),
        ("upload time", fmt_s(f.upload_s)),
        ("upload throughput (client bytes)", f"{f.upload_mb_per_s:.1f} MB/s"),
        ("upload throughput (copies written)", f"{f.upload_mb_per_s * f.replicas:.1f} MB/s"),
        ("chunks / copies on their owners", f"{f.chunks} / {f.copies}"),
        ("coordinator / killed", f"{f.coordinator} / {f.victim} "
                                 f"({f.victim_copies} copies)"),
        ("declared dead: first survivor", fmt_s(f.dead_first_s)),
        ("declared dead: all survivors", fmt_s(f.dead_all_s)),
        ("every chunk back to R live copies", fmt_s(f.copies_restored_s)),
        ("/cluster under_replicated 0 everywhere", fmt_s(f.counters_zero_s)),
        ("healing time (first death seen to last copy)", fmt_s(f.heal_s)),
        ("copies made / bytes", f"{f.copies_made} / {f.bytes_made / 2**20:.0f} MiB"),
        ("healing throughput (copies made)",
         "-" if f.heal_mb_per_s is None else f"{f.heal_mb_per_s:.1f} MB/s"),
        ("copies sent by the healers", str(f.copies_sent_by_healers)),
        ("read back through survivors",
         "-" if f.read_back_mb_per_s is None
         else f"{f.read_back_mb_per_s:.1f} MB/s, {f.read_back_errors} errors"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    console.print("times are from the SIGKILL unless said otherwise")
    for problem in f.problems:
        console.print(f"[red]problem:[/red] {problem}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(prog="blobstore-healing", description=doc.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--total", type=parse_size, default=parse_size("2GiB"),
                        help="bytes to upload (default 2GiB)")
    parser.add_argument("--blob-size", type=parse_size, default=parse_size("64MiB"))
    parser.add_argument("--chunk-size", type=parse_size, default=parse_size("4MiB"),
                        help="the nodes' chunk_size (default 4MiB, the nodes' default)")
    parser.add_argument("--concurrency", type=int, default=4, help="uploads at a time")
    parser.add_argument("--gossip-preset", default="lan", choices=("lan", "local", "tests"),
                        help="the nodes' gossip timings (default lan, the nodes' default)")
    parser.add_argument("--seed", type=int, default=1, help="picks the node to kill")
    parser.add_argument("--poll-s", type=float, default=0.5,
                        help="how often chunk files are counted")
    parser.add_argument("--start-timeout-s", type=float, default=60.0)
    parser.add_argument("--upload-timeout-s", type=float, default=1800.0)
    parser.add_argument("--heal-timeout-s", type=float, default=600.0)
    parser.add_argument("--no-read-back", dest="read_back", action="store_false")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to make the temporary cluster directory")
    parser.add_argument("--keep", action="store_true", help="keep the directory and logs")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)
    if args.nodes < 2 or not 1 <= args.replicas <= args.nodes - 1:
        parser.error("need at least 2 nodes and 1 <= replicas < nodes (one will be killed)")
    if args.blob_size <= 0 or args.total <= 0 or args.concurrency < 1:
        parser.error("--total, --blob-size and --concurrency must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="blobstore-healing-", dir=args.dir))
    nodes: dict[str, NodeProcess] = {}
    figures: Figures | None = None
    failure = ""
    try:
        figures = run(base, args, nodes)
    except (BenchmarkFailed, trio.TooSlowError, RuntimeError, OSError,
            AssertionError) as exc:
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        for node in nodes.values():
            node.close()
        if failure or (figures is not None and figures.problems):
            for node in nodes.values():
                console.print(f"--- last log lines of {node.node_id} ({node.log_path})")
                console.print(node.log_tail(1500), markup=False, highlight=False)
        if args.keep:
            console.print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    if figures is not None:
        show(figures)
        if args.json:
            args.json.write_text(json.dumps(
                {"args": {k: str(v) if isinstance(v, Path) else v
                          for k, v in vars(args).items()},
                 "figures": asdict(figures)}, indent=2))
    if failure:
        console.print(f"[red]failed:[/red] {failure}", highlight=False)
        return 1
    return 1 if figures is None or figures.problems else 0


if __name__ == "__main__":
    sys.exit(main())
