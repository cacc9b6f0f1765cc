"""This machine's own limits, measured in the same run as the blob store.

* **Disk**, on the filesystem of the data dir: ``total`` bytes written sequentially in
  1 MiB writes with one fsync at the end (what a large PUT's bytes cost at best), the
  same with an fsync after every 1 MiB write, 4 KiB writes each followed by an fsync
  (what a small PUT's durability costs at best), and a cold sequential read of the
  file (its pages dropped first with ``posix_fadvise(DONTNEED)``).
* **sqlite**: single-row INSERT commits in a loop, WAL and ``synchronous=FULL`` (as
  ``node/store/db.py`` opens its databases), on the same filesystem: what one metadata
  commit costs at best.
* **HTTP GET**: nginx serving the same bodies as static files from the page cache on
  127.0.0.1, driven by the same client at the same concurrency (``nginx_gets``).

Every loop is bounded by a count and a time.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.bench.bodies import Bodies
from benchmarks.bench.nginx import Nginx, find_nginx
from benchmarks.bench.stats import Result
from benchmarks.bench.workloads import Phase, ProgressHook, StaticFiles, Target, run_phase

MiB = 1024 * 1024


@dataclass
class DiskLimits:
    path: str
    bytes: int
    write_mb_per_s: float  # 1 MiB writes, one fsync at the end (included)
    write_fsync_each_mb_per_s: float  # 1 MiB writes, each followed by an fsync
    small_fsyncs_per_s: float  # 4 KiB write + fsync, in a loop
    read_mb_per_s: float  # cold: the file's pages dropped before reading
    read_cold: bool  # False when the pages could not be dropped (e.g. tmpfs)


@dataclass
class SqliteLimits:
    path: str
    commits: int
    commits_per_s: float


def measure_disk(directory: Path, total: int = 256 * MiB, *, fsync_each_total: int = 64 * MiB,
                 small_count: int = 2000, time_limit_s: float = 20.0) -> DiskLimits:
    """Sequential write and read on ``directory``'s filesystem (a temp file, removed)."""
    block = memoryview(Bodies(MiB, seed=7).buffer)[:MiB]
    fd, name = tempfile.mkstemp(prefix="bench-disk-", dir=directory)
    try:
        started = time.monotonic()
        written = 0
        while written < total and time.monotonic() - started < time_limit_s:
            written += os.write(fd, block)
        os.fsync(fd)
        write_rate = written / (time.monotonic() - started) / 1e6
        read_rate, cold = _read_back(fd, written, time_limit_s)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        started = time.monotonic()
        each = 0
        while each < fsync_each_total and time.monotonic() - started < time_limit_s:
            each += os.write(fd, block)
            os.fsync(fd)
        each_rate = each / (time.monotonic() - started) / 1e6
        started = time.monotonic()
        small = 0
        while small < small_count and time.monotonic() - started < time_limit_s / 4:
            os.write(fd, block[:4096])
            os.fsync(fd)
            small += 1
        small_rate = small / (time.monotonic() - started)
    finally:
        os.close(fd)
        os.unlink(name)
    return DiskLimits(str(directory), written, write_rate, each_rate, small_rate, read_rate,
                      cold)


def _read_back(fd: int, size: int, time_limit_s: float) -> tuple[float, bool]:
    """Read the file from the start; (MB/s, whether its pages were dropped first)."""
    cold = hasattr(os, "posix_fadvise")
    if cold:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    buffer = bytearray(MiB)
    started = time.monotonic()
    done = 0
    os.lseek(fd, 0, os.SEEK_SET)
    while done < size and time.monotonic() - started < time_limit_s:
        got = os.readv(fd, [buffer])
        if got == 0:
            break
        done += got
    return done / (time.monotonic() - started) / 1e6, cold


def measure_sqlite(directory: Path, *, max_commits: int = 3000,
                   time_limit_s: float = 3.0) -> SqliteLimits:
    """Single-row INSERT commits, one transaction each, WAL + synchronous=FULL."""
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-", dir=directory) as tmp:
        path = Path(tmp) / "commits.sqlite"
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)")
            row = os.urandom(200)
            started = time.monotonic()
            commits = 0
            while commits < max_commits and time.monotonic() - started < time_limit_s:
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO t (v) VALUES (?)", (row,))
                db.execute("COMMIT")
                commits += 1
            rate = commits / (time.monotonic() - started)
        finally:
            db.close()
    return SqliteLimits(str(directory), commits, rate)


async def nginx_gets(points: list[tuple[int, int]], duration_s: float, *,
                     binary: str | None = None, count: int | None = None,
                     follow: ProgressHook | None = None) -> list[Result]:
    """nginx's GET rate for each (size, concurrency): the same client, the same checks."""
    binary = binary or find_nginx()
    if binary is None:
        return []
    bodies = {size: Bodies(size) for size in sorted({size for size, _ in points})}
    files = {StaticFiles(b).file_name: b.body(0) for b in bodies.values()}
    results: list[Result] = []
    with Nginx(binary, files) as server:
        assert server.pid is not None
        target = Target([server.url], None, "nginx", [server.pid])
        for size, concurrency in points:
            static = StaticFiles(bodies[size])
            await run_phase(Phase("get", size, concurrency, 0.5, name="warm-up"), target,
                            static)
            phase = Phase("get", size, concurrency, duration_s, count, name="nginx-get")
            results.extend(await run_phase(phase, target, static, follow=follow))
    return results


def limits_json(disk: DiskLimits | None, db: SqliteLimits | None,
                nginx: list[Result], nginx_note: str) -> dict[str, Any]:
    return {"disk": asdict(disk) if disk else None, "sqlite": asdict(db) if db else None,
            "nginx": [r.summary() for r in nginx], "nginx_note": nginx_note}
