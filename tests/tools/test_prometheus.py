"""Prometheus against a real cluster: tools/prometheus.yml and its alert rules.

promtool checks the shipped config and rules and runs the rules' unit tests
(prometheus-alerts-test.yml: each alert fires when meant to). Then a real Prometheus
(Debian's package, installed if missing, run as this test's child on a free loopback
port, never as a service) scrapes three real nodes with tools/prometheus.yml, only the
addresses changed, and the test asserts through Prometheus' HTTP API that every node is
up, that the key series have values, that the alert rules are loaded and evaluate
cleanly, and that a SIGKILLed node shows as down with NodeDown pending. Prometheus is
stopped by its pid at the end.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from node.testing.observe import coordinator_of, wait_for
from node.testing.process import NodeProcess

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tools" / "prometheus.yml"
RULES = ROOT / "tools" / "prometheus-alerts.yml"
RULE_TESTS = Path(__file__).with_name("prometheus-alerts-test.yml")
ALERTS = {"NodeDown", "NoCoordinator", "UnderReplicatedChunks", "DiskNearlyFull",
          "HighErrorRate"}
#: The config's scrape and evaluation interval is 5 s: a few of them, for a shared machine.
SETTLE_S = 30.0


def promtool(binary: str, *args: str) -> str:
    done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_promtool_accepts_the_config_and_the_rules_fire_as_meant(
        debian_binary: Callable[[str, str], str]) -> None:
    binary = debian_binary("promtool", "prometheus")
    assert "SUCCESS" in promtool(binary, "check", "config", str(CONFIG))
    assert "5 rules found" in promtool(binary, "check", "rules", str(RULES))
    assert "SUCCESS" in promtool(binary, "test", "rules", str(RULE_TESTS))


def local_config(nodes: dict[str, NodeProcess], directory: Path) -> Path:
    """tools/prometheus.yml with nodeN's 127.0.0.1:800N replaced by the test node's address
    and the rules file by its absolute path (the copy lives elsewhere)."""
    text = CONFIG.read_text()
    for index, (name, node) in enumerate(sorted(nodes.items()), start=1):
        host, port = node.address
        text, count = re.subn(rf'"127\.0\.0\.1:800{index}"(\]\s+labels:\s+node: {name}\n)',
                              rf'"{host}:{port}"\1', text)
        assert count == 1, f"{CONFIG} has no target 127.0.0.1:800{index} labelled {name}"
    text, count = re.subn(r"^(\s+- )prometheus-alerts\.yml$", rf"\g<1>{RULES}", text,
                          flags=re.MULTILINE)
    assert count == 1, f"{CONFIG} does not load prometheus-alerts.yml"
    path = directory / "prometheus.yml"
    path.write_text(text)
    return path


class PrometheusApi:
    """Prometheus' HTTP API (v1): instant queries, rules and alerts (a connection per call,
    so nothing is left open whatever the test does)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _data(self, path: str, **params: str) -> Any:
        answer = httpx.get(self.url + path, params=params, timeout=10.0)
        answer.raise_for_status()
        body = answer.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> dict[str, float]:
        """An instant vector, by the `node` label (or '' when the series has none)."""
        data = self._data("/api/v1/query", query=promql)
        return {s["metric"].get("node", ""): float(s["value"][1]) for s in data["result"]}

    def rules(self) -> dict[str, dict[str, Any]]:
        return {rule["name"]: rule for group in self._data("/api/v1/rules")["groups"]
                for rule in group["rules"]}

    def alerts(self) -> list[dict[str, Any]]:
        return list(self._data("/api/v1/alerts")["alerts"])

    def ready(self) -> bool:
        try:
            return httpx.get(self.url + "/-/ready", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False


def start_prometheus(binary: str, config: Path, directory: Path, children: Any,
                     free_port: Callable[[], int]) -> tuple[subprocess.Popen[bytes],
                                                           PrometheusApi]:
    """Prometheus as our child on a free port (three tries: the port may be taken between
    choosing and binding); once it answers /-/ready."""
    log = directory / "prometheus.log"
    for _ in range(3):
        port = free_port()
        proc = children.start([binary, f"--config.file={config}",
                               f"--storage.tsdb.path={directory / 'tsdb'}",
                               f"--web.listen-address=127.0.0.1:{port}"], log)
        api = PrometheusApi(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30.0
        while proc.poll() is None and time.monotonic() < deadline and not api.ready():
            time.sleep(0.1)
        if proc.poll() is None and api.ready():
            return proc, api
        children.stop(proc)
    raise AssertionError(f"Prometheus did not start:\n{log.read_text()[-3000:]}")


def series_problems(api: PrometheusApi, leader: str) -> list[str]:
    """What is missing or wrong among the key series, as Prometheus last scraped them."""
    names = {"node1", "node2", "node3"}
    problems = []
    checks: dict[str, Callable[[dict[str, float]], bool]] = {
        'up{job="blobstore"}': lambda v: v == dict.fromkeys(names, 1.0),
        "blobstore_raft_term": lambda v: set(v) == names and min(v.values()) >= 1,
        "blobstore_raft_is_leader": lambda v: v == {n: float(n == leader) for n in names},
        "blobstore_raft_voters": lambda v: v == dict.fromkeys(names, 3.0),
        'blobstore_gossip_members{state="alive"}': lambda v: v == dict.fromkeys(names, 3.0),
        "blobstore_chunks_under_replicated": lambda v: v == dict.fromkeys(names, 0.0),
        # The one chunk of the blob written below, on each of the three nodes (R = 3).
        "blobstore_chunks_on_disk": lambda v: v == dict.fromkeys(names, 1.0),
        "blobstore_disk_available_bytes / blobstore_disk_size_bytes":
            lambda v: set(v) == names and all(0 < x <= 1 for x in v.values()),
        'sum(blobstore_http_requests_total{route="put_data", status="201"})':
            lambda v: v.get("", 0) >= 1,
        'sum(blobstore_http_requests_total{route="get_data", status="200"})':
            lambda v: v.get("", 0) >= 1,
        "sum(blobstore_http_request_duration_seconds_count)": lambda v: v.get("", 0) > 0,
    }
    for promql, ok in checks.items():
        values = api.query(promql)
        if not ok(values):
            problems.append(f"{promql} = {values}")
    return problems


def write_and_read_a_blob(nodes: dict[str, NodeProcess]) -> None:
    """Traffic for the request counters: one blob of one chunk, written and read back."""
    token = nodes["node1"].login()
    status, answer = nodes["node1"].request("POST", "/create_container", token=token,
                                            json_body={"container": "metrics"})
    assert status == 201, answer
    data = b"scraped " * 4096
    status, answer = nodes["node2"].request(
        "POST", "/put_data?container=metrics&blob=one-chunk", token=token, body=data)
    assert status == 201, answer
    status, answer = nodes["node3"].request(
        "GET", "/get_data?container=metrics&blob=one-chunk", token=token)
    assert status == 200 and answer == data


def test_prometheus_scrapes_every_node_and_loads_the_alerts(
        cluster: dict[str, NodeProcess], debian_binary: Callable[[str, str], str],
        children: Any, free_port: Callable[[], int], tmp_path: Path) -> None:
    binary = debian_binary("prometheus", "prometheus")
    started = time.monotonic()
    write_and_read_a_blob(cluster)
    proc, api = start_prometheus(binary, local_config(cluster, tmp_path), tmp_path,
                                 children, free_port)
    leader = coordinator_of(cluster["node1"])
    assert leader in cluster

    problems: list[str] = []

    def all_series_right() -> bool:
        problems[:] = series_problems(api, leader)
        return not problems

    took = wait_for("every node up and the key series with values in Prometheus",
                    all_series_right, SETTLE_S, interval_s=0.5, detail=lambda: problems)
    print(f"\nPrometheus saw all three nodes and the key series {took:.1f} s after it started")

    # DiskNearlyFull tells the truth about this machine's disk: quiet only if it has room.
    disk = os.statvfs(cluster[leader].data_dir)
    disk_full = disk.f_bavail / disk.f_blocks < 0.1

    def rules_evaluated_quiet() -> bool:
        """Loaded, evaluated without error, and none pending on a healthy cluster (the very
        first evaluation, before any scrape, may see NoCoordinator's series absent)."""
        rules = api.rules()
        return set(rules) == ALERTS and all(
            r["health"] == "ok" and (r["state"] == "inactive" or
                                     (name == "DiskNearlyFull" and disk_full))
            for name, r in rules.items())

    wait_for("the alert rules loaded, evaluated without error, all inactive",
             rules_evaluated_quiet, SETTLE_S, interval_s=0.5, detail=api.rules)

    victim = next(name for name in sorted(cluster) if name != leader)
    cluster[victim].kill()

    def node_down_pending() -> bool:
        pending = {a["labels"].get("node") for a in api.alerts()
                   if a["labels"]["alertname"] == "NodeDown" and a["state"] == "pending"}
        return api.query('up{job="blobstore"}').get(victim) == 0.0 and pending == {victim}

    took = wait_for(f"{victim} down in Prometheus, NodeDown pending for it",
                    node_down_pending, SETTLE_S, interval_s=0.5, detail=api.alerts)
    print(f"SIGKILLed {victim}: up == 0 and NodeDown pending after {took:.1f} s")
    firing = [a["labels"]["alertname"] for a in api.alerts() if a["state"] == "firing"]
    assert firing == [], firing
    assert children.stop(proc) == 0, "Prometheus did not stop cleanly on SIGTERM"
    print(f"Prometheus part: {time.monotonic() - started:.1f} s")
