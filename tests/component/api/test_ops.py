"""Operations (API.md, "Operations"): /health, /cluster and /metrics."""

from __future__ import annotations

import re
from typing import Any

from node.testing.inprocess import NodeHandle

from api_support import assert_error, create_user, put

Headers = dict[str, str]
MEMBER_STATES = {"alive", "suspect", "dead", "left"}


def metric_lines(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of ``name`` in Prometheus text format."""
    samples = []
    pattern = re.compile(r"^" + re.escape(name) + r"(?:\{(.*)\})? (\S+)$")
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1) or ""))
            samples.append((labels, float(match.group(2))))
    return samples


# -- /health ------------------------------------------------------------------------


async def test_health_answers_node_id_status_coordinator_and_members(node: NodeHandle) -> None:
    r = await node.client.get("/health")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    body = await r.get_json()
    assert set(body) == {"node_id", "status", "coordinator", "members"}
    assert body["node_id"] == "n1"
    assert body["status"] == "ok"
    assert body["coordinator"] == "n1", "a single node is its own coordinator"
    assert body["members"] == 1 and type(body["members"]) is int


async def test_health_ignores_a_bad_token(node: NodeHandle) -> None:
    r = await node.client.get("/health", headers={"Authorization": "Bearer garbage"})
    assert r.status_code == 200


# -- /metrics -----------------------------------------------------------------------


async def test_metrics_is_prometheus_text_without_auth(node: NodeHandle) -> None:
    r = await node.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    text = (await r.get_data(as_text=False)).decode()
    assert "# TYPE blobstore_http_requests_total counter" in text
    for line in text.splitlines():
        assert line.startswith("#") or re.match(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? \S+$",
                                                line), line


async def test_metrics_count_requests_by_route_method_and_status(node: NodeHandle,
                                                                 admin: Headers) -> None:
    for _ in range(3):
        await node.client.get("/list_containers", headers=admin)
    await node.client.get("/list_containers")
    text = (await (await node.client.get("/metrics")).get_data(as_text=False)).decode()
    samples = metric_lines(text, "blobstore_http_requests_total")
    by_status = {labels.get("status"): value for labels, value in samples
                 if "list_containers" in labels.get("route", "")
                 and labels.get("method") == "GET"}
    assert by_status == {"200": 3.0, "401": 1.0}


async def test_metrics_include_latency_and_body_bytes(node: NodeHandle, admin: Headers,
                                                      box: str) -> None:
    await put(node, admin, box, "b", b"x" * 1000)
    await node.client.get("/get_data?container=box&blob=b", headers=admin)
    text = (await (await node.client.get("/metrics")).get_data(as_text=False)).decode()
    assert metric_lines(text, "blobstore_http_request_duration_seconds_count")
    [(_, received)] = metric_lines(text, "blobstore_http_body_bytes_received_total")
    [(_, sent)] = metric_lines(text, "blobstore_http_body_bytes_sent_total")
    assert received >= 1000 and sent >= 1000


async def test_metrics_count_failed_logins(node: NodeHandle) -> None:
    await node.client.post("/auth", json={"username": "admin", "password": "wrong-password"})
    text = (await (await node.client.get("/metrics")).get_data(as_text=False)).decode()
    [(_, failures)] = metric_lines(text, "blobstore_login_failures_total")
    assert failures == 1.0


async def test_metrics_never_show_secrets(node: NodeHandle, admin: Headers) -> None:
    text = (await (await node.client.get("/metrics")).get_data(as_text=False)).decode()
    token = admin["Authorization"].split()[1]
    assert "admin-password" not in text
    assert token not in text
    assert "test-cluster-key" not in text


# -- /cluster -----------------------------------------------------------------------


async def test_cluster_is_for_admins_only(node: NodeHandle, admin: Headers) -> None:
    alice = await create_user(node, admin, "alice")
    await assert_error(await node.client.get("/cluster", headers=alice), 403, "Forbidden")
    await assert_error(await node.client.get("/cluster"), 401, "Unauthorized")


async def test_cluster_lists_members_with_id_addresses_state_and_incarnation(
        node: NodeHandle, admin: Headers) -> None:
    r = await node.client.get("/cluster", headers=admin)
    assert r.status_code == 200
    body = await r.get_json()
    [member] = body["members"]
    assert member["node_id"] == "n1"
    assert member["state"] in MEMBER_STATES and member["state"] == "alive"
    assert type(member["incarnation"]) is int
    assert isinstance(member["http"], str) and isinstance(member["gossip"], str)


async def test_cluster_names_the_coordinator_and_its_term(node: NodeHandle,
                                                          admin: Headers) -> None:
    body = await (await node.client.get("/cluster", headers=admin)).get_json()
    coordinator: Any = body["coordinator"]
    assert coordinator["node_id"] == "n1"
    assert type(coordinator["term"]) is int and coordinator["term"] >= 1


async def test_cluster_reports_replica_counts(node: NodeHandle, admin: Headers) -> None:
    body = await (await node.client.get("/cluster", headers=admin)).get_json()
    chunks = body["chunks"]
    assert type(chunks["under_replicated"]) is int and chunks["under_replicated"] >= 0
    assert type(chunks["being_repaired"]) is int and chunks["being_repaired"] >= 0
    for counter in ("hinted", "corrupt_found", "corrupt_repaired", "held_for_uploads",
                    "collected", "healed", "surplus_dropped", "read_repairs"):
        assert chunks[counter] == 0, counter
    # A single node: one copy, and a write needs that one.
    assert body["replicas"] == {"configured": 3, "effective": 1, "write_quorum": 1}


async def test_cluster_advertises_the_http_address_the_node_listens_on(
        node: NodeHandle, admin: Headers) -> None:
    body = await (await node.client.get("/cluster", headers=admin)).get_json()
    [member] = body["members"]
    assert node.node.http_url is not None
    listening = node.node.http_url.removeprefix("http://")
    assert member["http"] == listening, "a member's address must be one others can reach"


async def test_cluster_never_shows_secrets(node: NodeHandle, admin: Headers) -> None:
    answer = await node.client.get("/cluster", headers=admin)
    text = (await answer.get_data(as_text=False)).decode()
    assert "test-cluster-key" not in text
    assert "admin-password" not in text
