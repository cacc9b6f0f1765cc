"""blobstore-bench: PUT then GET load against one or more nodes, every GET verified.

    blobstore-bench --url http://127.0.0.1:8001 --size 4KiB --concurrency 16 --count 2000

Each phase (PUT, then GET of what was written) runs ``count`` operations or
for ``duration`` seconds, whichever ends first, spread round-robin over the
given nodes, with ``concurrency`` keep-alive connections. Bodies are random
(from one random block, rotated per blob so every blob differs); every GET's
MD5 is compared with the PUT's. The result table gives ops/s, MB/s, latency
percentiles and errors, and the tool's own CPU use so a saturated client is
visible. ``--json FILE`` writes the same figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import secrets
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import trio
from rich.console import Console
from rich.table import Table

from benchmarks.httpclient import Connection
from node.config import parse_size

BLOCK = os.urandom(1 << 20)


@dataclass
class PhaseResult:
    op: str
    ops: int = 0
    errors: int = 0
    bytes: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    client_cpu_s: float = 0.0

    def summary(self) -> dict[str, float | int | str]:
        lat = sorted(self.latencies_ms) or [0.0]
        pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
        return {"op": self.op, "ops": self.ops, "errors": self.errors,
                "ops_per_s": self.ops / self.seconds if self.seconds else 0.0,
                "mb_per_s": self.bytes / self.seconds / 1e6 if self.seconds else 0.0,
                "p50_ms": pick(0.50), "p99_ms": pick(0.99), "max_ms": lat[-1],
                "seconds": self.seconds, "client_cpu_s": self.client_cpu_s}


def body_for(index: int, size: int) -> tuple[list[memoryview], str]:
    """A distinct body per blob: its index, then the random block from an index-chosen offset."""
    block = memoryview(BLOCK)
    pieces = [memoryview(index.to_bytes(8, "big"))[:size]]
    left = size - len(pieces[0])
    position = (index * 7919) % len(BLOCK)
    while left > 0:
        take = min(left, len(BLOCK) - position)
        pieces.append(block[position:position + take])
        left -= take
        position = 0
    md5 = hashlib.md5()
    for piece in pieces:
        md5.update(piece)
    return pieces, md5.hexdigest()


async def login(url: str, password: str) -> str:
    conn = Connection(url)
    body = json.dumps({"username": "admin", "password": password}).encode()
    reply = await conn.request("POST", "/auth", [("Content-Type", "application/json")],
                               [body], content_length=len(body))
    await conn.aclose()
    if reply.status != 200:
        raise SystemExit(f"login failed: {reply.status} {reply.body[:200]!r}")
    return json.loads(reply.body)["token"]


async def run_phase(op: str, urls: list[str], token: str, container: str, size: int,
                    concurrency: int, count: int, duration_s: float,
                    etags: dict[int, str]) -> PhaseResult:
    result = PhaseResult(op)
    auth = [("Authorization", f"Bearer {token}")]
    next_index = iter(range(count))
    deadline = trio.current_time() + duration_s
    cpu_start = resource.getrusage(resource.RUSAGE_SELF)

    async def worker(slot: int) -> None:
        conn = Connection(urls[slot % len(urls)])
        try:
            for index in next_index:
                if trio.current_time() > deadline:
                    return
                target = f"/{'put' if op == 'put' else 'get'}_data?container={container}" \
                         f"&blob={quote(f'bench-{index}')}"
                started = time.perf_counter()
                try:
                    if op == "put":
                        pieces, md5 = body_for(index, size)
                        reply = await conn.request("POST", target, auth, pieces,
                                                   content_length=size, keep_body=False)
                        ok = reply.status == 201
                        if ok:
                            etags[index] = md5
                    else:
                        reply = await conn.request("GET", target, auth, keep_body=False)
                        ok = reply.status == 200 and reply.md5 == etags.get(index)
                except (OSError, ConnectionError, trio.BrokenResourceError):
                    ok = False
                    await conn.aclose()
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
                result.ops += 1
                if ok:
                    result.bytes += size
                else:
                    result.errors += 1
        finally:
            await conn.aclose()

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for slot in range(concurrency):
            nursery.start_soon(worker, slot)
    result.seconds = trio.current_time() - started
    cpu_end = resource.getrusage(resource.RUSAGE_SELF)
    result.client_cpu_s = (cpu_end.ru_utime + cpu_end.ru_stime
                           - cpu_start.ru_utime - cpu_start.ru_stime)
    return result


async def main_async(args: argparse.Namespace) -> list[PhaseResult]:
    urls = args.url
    token = await login(urls[0], args.password)
    container = f"bench-{secrets.token_hex(4)}"
    conn = Connection(urls[0])
    body = json.dumps({"container": container}).encode()
    reply = await conn.request("POST", "/create_container",
                               [("Authorization", f"Bearer {token}")], [body],
                               content_length=len(body))
    await conn.aclose()
    if reply.status != 201:
        raise SystemExit(f"cannot create container: {reply.status} {reply.body[:200]!r}")
    etags: dict[int, str] = {}
    size = parse_size(args.size)
    results = [await run_phase("put", urls, token, container, size, args.concurrency,
                               args.count, args.duration, etags)]
    gets = min(args.count, len(etags))
    results.append(await run_phase("get", urls, token, container, size, args.concurrency,
                                   gets, args.duration, etags))
    return results


def show(results: list[PhaseResult], size: int, concurrency: int) -> None:
    table = Table(title=f"blob size {size} B, concurrency {concurrency}")
    for column in ("op", "ops", "errors", "ops/s", "MB/s", "p50 ms", "p99 ms", "max ms",
                   "client CPU"):
        table.add_column(column, justify="right")
    for result in results:
        s = result.summary()
        table.add_row(str(s["op"]), str(s["ops"]), str(s["errors"]), f"{s['ops_per_s']:.0f}",
                      f"{s['mb_per_s']:.1f}", f"{s['p50_ms']:.1f}", f"{s['p99_ms']:.1f}",
                      f"{s['max_ms']:.1f}",
                      f"{100 * result.client_cpu_s / max(result.seconds, 1e-9):.0f}%")
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="blobstore-bench", description=__doc__.split("\n")[0])
    parser.add_argument("--url", action="append", required=True, help="node URL (repeat)")
    parser.add_argument("--password", default=os.environ.get("BLOBSTORE_ADMIN_PASSWORD",
                                                             "admin-dev-password"))
    parser.add_argument("--size", default="4KiB")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--json", help="write results to this file")
    args = parser.parse_args(argv)
    results = trio.run(main_async, args)
    show(results, parse_size(args.size), args.concurrency)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": [r.summary() for r in results]}, f,
                      indent=2)
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
