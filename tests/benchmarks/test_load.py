"""blobstore-bench: every workload against a real 1-node cluster, compare, the verifier,
and the limits with and without nginx."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the module, for its types; at run time it is an optional extra
    from aiohttp import web
else:
    web = pytest.importorskip("aiohttp.web", reason="blobstore-bench needs the bench extra")

from benchmarks.bench import session as session_module
from benchmarks.bench.bodies import Bodies, Check
from benchmarks.bench.cli import main
from benchmarks.bench.nginx import find_nginx
from benchmarks.bench.stats import Result
from benchmarks.bench.workloads import Keyspace, Phase, Target, run_phase

WORKLOADS = ("put", "get", "range-get", "list", "mixed", "delete")


@pytest.mark.e2e
def test_every_workload_against_a_local_cluster(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run.json"
    work = tmp_path / "work"
    work.mkdir()
    code = main(["run", "--cluster", "1", "--workload", ",".join(WORKLOADS),
                 "--size", "20KiB", "--concurrency", "4", "--count", "80",
                 "--duration", "20", "--dir", str(work), "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed[-6000:]
    record = json.loads(out.read_text())
    rows = {r["name"]: r for r in record["results"]}
    for name in WORKLOADS:
        row = rows[name]
        assert row["ops"] > 0 and row["errors"] == 0 and row["wrong_data"] == 0, row
        assert row["ops_per_s"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0, row
    assert rows["put"]["ops"] == 80 and rows["put"]["mb_per_s"] > 0
    assert rows["get"]["bytes"] == rows["get"]["ops"] * 20 * 1024
    assert rows["list"]["items"] > 0 and rows["list"]["items_per_s"] > 0
    assert rows["mixed"]["ops"] == 80 and rows["mixed:get"]["ops"] > 0
    assert record["cluster"]["local"] and record["machine"]["cores"]
    assert list(work.iterdir()) == []  # the cluster is stopped and its directory gone


def _record(ops_per_s: float, p99: float) -> dict[str, object]:
    row = Result("get", "get", 4096, 16, ops=int(ops_per_s * 10), bytes=int(ops_per_s * 10 * 4096),
                 seconds=10.0, latencies_ms=[1.0] * 98 + [p99, p99])
    return {"tool": "blobstore-bench", "results": [row.summary()],
            "limits": {"disk": {"write_mb_per_s": 300.0}, "sqlite": None, "nginx": []},
            "targets": [{"label": "4 KiB GET c=16", "metric": "ops_per_s", "goal": 1400,
                         "higher_is_better": True, "value": ops_per_s,
                         "passed": ops_per_s >= 1400}]}


def test_compare_shows_both_runs_and_the_change(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # whatever terminal the tests run in
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_record(1000.0, 40.0)))
    b.write_text(json.dumps(_record(1500.0, 20.0)))
    assert main(["compare", str(a), str(b)]) == 0
    printed = capsys.readouterr().out
    assert "+50.0 %" in printed and "-50.0 %" in printed and "1,500.0" in printed
    (tmp_path / "c.json").write_text("{}")
    assert main(["compare", str(a), str(tmp_path / "c.json")]) == 2


def test_the_check_accepts_exactly_the_written_bytes() -> None:
    bodies = Bodies(10_000, seed=3)
    offset = bodies.new_offset() and bodies.new_offset()
    body = bytes(bodies.body(offset))
    assert bodies.new_offset() != offset and len(body) == 10_000

    def checked(pieces: list[bytes], start: int = 0, length: int | None = None) -> bool:
        check = bodies.check(offset, start, length)
        for piece in pieces:
            check.feed(piece)
        return check.ok

    assert checked([body[:3000], body[3000:]])
    assert checked([body[100:200]], 100, 100)
    flipped = bytearray(body)
    flipped[7777] ^= 1
    assert not checked([bytes(flipped)])
    assert not checked([body[:-1]])  # short
    assert not checked([body, b"x"])  # extra
    assert not checked([body[1:] + body[:1]])  # another body of the same bytes
    assert Check(b"", 0, 0).ok


def test_a_get_with_wrong_bytes_is_counted_as_wrong_data() -> None:
    """A server that flips one byte of one blob: that GET fails as wrong data."""
    bodies = Bodies(4096, seed=5)
    keyspace = Keyspace("c", bodies)
    for key in range(4):
        keyspace.stored(keyspace.new_key(), bodies.new_offset())
        keyspace.release(key)

    async def get_data(request: web.Request) -> web.Response:
        key = int(request.query["blob"][1:])
        body = bytearray(bodies.body(keyspace.written[key]))
        if key == 2:
            body[100] ^= 0x20
        return web.Response(body=bytes(body))

    async def scenario() -> Result:
        app = web.Application()
        app.router.add_get("/get_data", get_data)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            rows = await run_phase(Phase("get", 4096, 2, 10.0, count=200),
                                   Target([f"http://127.0.0.1:{port}"], None), keyspace)
        finally:
            await runner.cleanup()
        return rows[0]

    row = asyncio.run(scenario())
    assert row.ops + row.errors == 200
    assert row.wrong == row.errors > 0 and row.ops > 0
    assert row.error_kinds == {"200": row.errors}


def test_limits_skip_nginx_cleanly_when_it_is_missing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_module, "find_nginx", lambda: None)
    out = tmp_path / "limits.json"
    code = main(["limits", "--data-dir", str(tmp_path), "--disk-bytes", "8MiB",
                 "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "nginx is not installed" in printed and "blobstore-bench setup" in printed
    limits = json.loads(out.read_text())["limits"]
    assert limits["nginx"] == [] and limits["nginx_note"].startswith("skipped")
    assert limits["disk"]["write_mb_per_s"] > 0 and limits["disk"]["read_mb_per_s"] > 0
    assert limits["disk"]["small_fsyncs_per_s"] > 0
    assert limits["sqlite"]["commits_per_s"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["limits.json"]


@pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed")
def test_limits_measure_nginx_when_it_is_there(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "limits.json"
    code = main(["limits", "--data-dir", str(tmp_path), "--disk-bytes", "8MiB",
                 "--size", "4KiB", "--size", "1MiB", "--concurrency", "2",
                 "--nginx-duration", "0.5", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    record = json.loads(out.read_text())
    rows = record["limits"]["nginx"]
    assert [(r["size"], r["concurrency"]) for r in rows] == [(4096, 2), (1 << 20, 2)]
    assert all(r["ops"] > 0 and r["errors"] == 0 for r in rows)
    assert record["limits"]["client_cost"]["4096:c2"]["us_cpu_per_request"] > 0
