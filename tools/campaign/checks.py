"""The verdict: what must hold once the faults are over and the cluster has healed.

``wait_healed`` polls until the cluster is whole again (every node up and
serving, all naming one coordinator, every member alive, nothing under
replication, and every chunk of every blob on its ring owners with bytes that
hash to its name) and says how long that took. ``final_reads`` reads every blob
name through every node, and ``judge`` compares those reads with the recorded
history:

* every node returns the same thing for a name, byte-identical to a write;
* that thing is a value the history allows as the last one: a write (or
  delete) that no acknowledged write or delete started after it finished;
  if not, the acknowledged writes among the allowed ones were lost;
* listings through every node agree with the reads;
* the metadata history (puts, gets, deletes and the final reads) is
  linearizable (``node.testing.linearizability``).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from node.gossip.members import Member, MembershipView
from node.ring.ring import Ring
from node.testing import linearizability as lin
from node.testing.observe import cluster_view, health
from node.testing.process import NodeProcess
from tools.campaign.cluster import Cluster
from tools.campaign.workload import CHUNK_SIZE, INLINE_MAX, OK, UNKNOWN, Call, History, Write

ABSENT = "absent"


@dataclass
class Read:
    """A final read of one name through one node."""

    node: str
    status: int
    etag: str = ABSENT
    problem: str = ""


@dataclass
class Verdict:
    violations: list[str] = field(default_factory=list)
    acked_writes_lost: int = 0
    linearizability: str = "not checked"
    linearizability_detail: str = ""
    parts_checked: int = 0

    @property
    def passed(self) -> bool:
        """No violation; a linearizability check that ran out of budget is reported, not
        failed (it found nothing wrong in what it covered)."""
        return not self.violations and self.acked_writes_lost == 0 and \
            self.linearizability != lin.Verdict.NOT_LINEARIZABLE.value


# -- healing -------------------------------------------------------------------------------

def chunk_ids(write: Write) -> list[str]:
    """The chunks a write's blob is stored in: none when it lives in its manifest."""
    if write.size <= INLINE_MAX:
        return []
    body = write.body()
    return [hashlib.sha256(body[i:i + CHUNK_SIZE]).hexdigest()
            for i in range(0, len(body), CHUNK_SIZE)]


def placement_problems(cluster: Cluster, live: Iterable[Write]) -> list[str]:
    """Chunks of live blobs missing from one of their owners, or corrupt there."""
    names = cluster.names
    ring = Ring.build(MembershipView(tuple(Member(n, "", "") for n in names), 1))
    problems = []
    for write in live:
        for hex_id in chunk_ids(write):
            for owner in ring.replicas_for(bytes.fromhex(hex_id), cluster.replicas):
                path = cluster.nodes[owner].chunk_path(hex_id)
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    problems.append(f"{hex_id[:12]} ({write.container}/{write.blob}) missing "
                                    f"on {owner}")
                    continue
                if hashlib.sha256(data).hexdigest() != hex_id:
                    problems.append(f"{hex_id[:12]} corrupt on {owner}")
    return problems


def health_problems(cluster: Cluster, token: str, counters: bool = True) -> list[str]:
    """Nodes down or unhealthy, members not alive, not exactly one coordinator, and with
    ``counters`` the healers' under-replicated and being-repaired counts (which uploads
    in flight also raise for a moment, so they are only meaningful without load)."""
    problems = []
    leaders = set()
    for name, node in cluster.nodes.items():
        if not node.running:
            problems.append(f"{name} is not running")
            continue
        answer = health(node)
        if answer.get("status") != "ok":
            problems.append(f"{name} health: {answer or 'no answer'}")
        leaders.add(answer.get("coordinator"))
        view = cluster_view(node, token)
        for member in view.get("members", []):
            if member.get("state") != "alive":
                problems.append(f"{name} sees {member.get('node_id')} {member.get('state')}")
        chunks = view.get("chunks", {}) if counters else {}
        for counter in ("under_replicated", "being_repaired"):
            if chunks.get(counter):
                problems.append(f"{name}: {counter} = {chunks[counter]}")
    if len(leaders) != 1 or None in leaders:
        problems.append(f"nodes name coordinators {sorted(map(str, leaders))}")
    return problems


def live_writes(cluster: Cluster, token: str, history: History,
                containers: Iterable[str]) -> list[Write]:
    """The writes the cluster's listings name now (through the first node that answers)."""
    for node in cluster.running():
        found = []
        try:
            for container in containers:
                for entry in list_all(node, token, container):
                    write = history.write_for(container, entry["blob"], entry["etag"])
                    if write is not None:
                        found.append(write)
            return found
        except (OSError, http.client.HTTPException, ValueError):
            continue
    return []


def wait_healed(cluster: Cluster, token: str, history: History, containers: list[str],
                timeout_s: float, counters: bool = True) -> tuple[float | None, list[str]]:
    """Seconds until healed (None if not within ``timeout_s``) and what was still wrong;
    ``counters`` as in ``health_problems``. Each new first problem is logged to
    ``heal.log`` beside the nodes' data."""
    started = time.monotonic()
    problems: list[str] = ["not checked"]
    shown = ""
    with open(cluster.base.parent / "heal.log", "a") as trace:
        while time.monotonic() - started < timeout_s:
            problems = health_problems(cluster, token, counters)
            if not problems:
                problems = placement_problems(
                    cluster, live_writes(cluster, token, history, containers))
            if not problems:
                trace.write(f"{history.now():8.1f} healed\n")
                return time.monotonic() - started, []
            if problems[0] != shown:
                shown = problems[0]
                trace.write(f"{history.now():8.1f} {len(problems)} problems: {shown}\n")
                trace.flush()
            time.sleep(0.5)
    return None, problems


# -- final reads ---------------------------------------------------------------------------

def get(node: NodeProcess, token: str, path: str) -> tuple[int, dict[str, str], bytes]:
    host, port = node.address
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        return (response.status, {k.lower(): v for k, v in response.getheaders()},
                response.read())
    finally:
        conn.close()


def list_all(node: NodeProcess, token: str, container: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    marker = ""
    while True:
        status, _, body = get(node, token, f"/list_blobs?container={quote(container)}"
                              f"&marker={quote(marker, safe='')}&limit=1000")
        if status != 200:
            raise ValueError(f"list of {container} through {node.node_id}: {status} {body!r}")
        page = json.loads(body)
        entries += [{**e, "etag": str(e["etag"]).strip('"')} for e in page["blobs"]]
        if not page.get("next_marker"):
            return entries
        marker = page["next_marker"]


def final_listings(cluster: Cluster, token: str, containers: Iterable[str],
                   verdict: Verdict) -> dict[str, dict[str, dict[str, str]]]:
    """node -> container -> blob -> etag, through every running node; a listing that
    fails is a violation (the cluster is meant to have healed)."""
    listings: dict[str, dict[str, dict[str, str]]] = {}
    for name, node in cluster.nodes.items():
        if not node.running:
            continue
        try:
            listings[name] = {c: {e["blob"]: e["etag"] for e in list_all(node, token, c)}
                              for c in containers}
        except (OSError, http.client.HTTPException, ValueError) as exc:
            verdict.violations.append(f"listing through {name} failed after healing: {exc}")
    return listings


def final_reads(cluster: Cluster, token: str, history: History,
                names: list[tuple[str, str]]) -> dict[tuple[str, str], list[Read]]:
    reads: dict[tuple[str, str], list[Read]] = {}
    for name, node in cluster.nodes.items():
        for container, blob in names:
            query = f"container={quote(container)}&blob={quote(blob, safe='')}"
            try:
                status, headers, body = get(node, token, f"/get_data?{query}")
            except (OSError, http.client.HTTPException) as exc:
                reads.setdefault((container, blob), []).append(Read(name, 0, problem=repr(exc)))
                continue
            read = Read(name, status)
            if status == 200:
                read.etag = headers.get("etag", "").strip('"')
                write = history.write_for(container, blob, read.etag)
                if write is None:
                    read.problem = f"etag {read.etag} was never written there"
                elif hashlib.sha256(body).hexdigest() != write.sha256:
                    read.problem = f"bytes differ from write {write.wid}"
            elif status != 404:
                read.problem = f"answered {status}: {body[:200]!r}"
            reads.setdefault((container, blob), []).append(read)
    return reads


# -- judging -------------------------------------------------------------------------------

def mutates(call: Call) -> bool:
    """A put or delete that did (ok) or may have (unknown) change the blob."""
    if call.outcome == UNKNOWN:
        return call.kind in ("put", "delete")
    return call.outcome == OK and (call.kind, call.status) in (("put", 201), ("delete", 204))


def allowed_last(calls: list[Call]) -> tuple[set[str], list[Call]]:
    """The values the blob may end with, and the acknowledged puts among them."""
    changes = [c for c in calls if mutates(c)]
    acked = [c for c in changes if c.outcome == OK]
    allowed = {ABSENT} if not acked else set()
    acked_puts = []
    for change in changes:
        if change.returned is not None and any(
                later.invoked > change.returned for later in acked):
            continue
        allowed.add(change.etag or ABSENT if change.kind == "put" else ABSENT)
        if change.kind == "put" and change.outcome == OK:
            acked_puts.append(change)
    return allowed, acked_puts


def judge(history: History, reads: dict[tuple[str, str], list[Read]],
          listings: dict[str, dict[str, dict[str, str]]], verdict: Verdict) -> None:
    """Fill ``verdict`` from the final reads, the listings (node -> container -> blob ->
    etag) and the history."""
    by_name: dict[tuple[str, str], list[Call]] = {}
    for call in history.calls:
        if call.blob:
            by_name.setdefault((call.container, call.blob), []).append(call)
    for (container, blob), found in sorted(reads.items()):
        where = f"{container}/{blob}"
        for read in found:
            if read.problem:
                verdict.violations.append(f"{where} through {read.node}: {read.problem}")
        values = {r.etag for r in found if r.status in (200, 404)}
        if len(values) > 1:
            verdict.violations.append(f"{where}: nodes disagree: "
                                      f"{ {r.node: r.etag for r in found} }")
        allowed, acked_puts = allowed_last(by_name.get((container, blob), []))
        for value in values - allowed:
            if value == ABSENT and acked_puts:
                verdict.acked_writes_lost += len(acked_puts)
                verdict.violations.append(
                    f"{where}: acknowledged write(s) {[c.wid for c in acked_puts]} lost "
                    f"(reads find nothing)")
            else:
                verdict.violations.append(f"{where}: ends as {value}, which the history does "
                                          f"not allow (allowed: {sorted(allowed)})")
                verdict.acked_writes_lost += len(acked_puts) if value == ABSENT else 0
        for node, containers in listings.items():
            listed = containers.get(container, {}).get(blob, ABSENT)
            mine = next((r.etag for r in found if r.node == node), None)
            if mine is not None and listed != mine:
                verdict.violations.append(f"{where}: {node} lists {listed}, reads {mine}")


def to_ops(history: History, reads: dict[tuple[str, str], list[Read]]) -> list[lin.Op]:
    """The history as checker ops. Unknown puts whose value nobody ever saw are left out
    (they may as well never have happened); after one, on that blob, the results that such
    a put could explain (a failed condition, a delete's answer) are not held against it."""
    observed = {c.etag for c in history.calls if c.kind in ("get", "range") and c.etag}
    observed |= {r.etag for found in reads.values() for r in found}
    ops: list[lin.Op] = []
    ghosts: dict[tuple[str, str], float] = {}
    for call in sorted(history.calls, key=lambda c: c.invoked):
        key = (call.container, call.blob)
        if call.kind == "put" and call.outcome == UNKNOWN and call.etag not in observed:
            ghosts.setdefault(key, call.invoked)
    for call in history.calls:
        key = (call.container, call.blob)
        end = call.returned if call.outcome == OK else None
        blind = key in ghosts and ghosts[key] < (end if end is not None else float("inf"))
        if call.kind == "put":
            if call.outcome == UNKNOWN and call.etag not in observed:
                continue
            if call.outcome not in (OK, UNKNOWN):
                continue
            result = None if end is None else call.etag if call.status == 201 else \
                lin.PRECONDITION_FAILED
            if result == lin.PRECONDITION_FAILED and blind:
                result = None
            ops.append(lin.Op(call.client, "put", (*key, call.etag, call.if_match,
                                                  call.if_none_match),
                              call.invoked, end, result))
        elif call.kind in ("get", "range") and call.outcome == OK and end is not None:
            result = call.etag if call.status in (200, 206) else \
                lin.NOT_FOUND if call.status == 404 else None
            ops.append(lin.Op(call.client, "get", key, call.invoked, end, result))
        elif call.kind == "delete" and call.outcome in (OK, UNKNOWN):
            result = None if end is None or blind else \
                lin.OK if call.status == 204 else lin.NOT_FOUND
            ops.append(lin.Op(call.client, "delete", key, call.invoked, end, result))
    last = max((op.returned or op.invoked for op in ops), default=0.0) + 1.0
    for key, found in sorted(reads.items()):
        for i, read in enumerate(found):
            if read.status in (200, 404):
                at = last + i * 1e-3
                ops.append(lin.Op(f"final-{read.node}", "get", key, at, at,
                                  read.etag if read.status == 200 else lin.NOT_FOUND))
    return ops


def check_linearizable(history: History, reads: dict[tuple[str, str], list[Read]],
                       containers: list[str], verdict: Verdict, timeout_s: float) -> None:
    model = lin.BlobMeta.of({c: {} for c in containers})
    result = lin.check(model, to_ops(history, reads), timeout_s=timeout_s)
    verdict.linearizability = result.verdict.value
    verdict.parts_checked = result.parts
    if not result.ok:
        verdict.linearizability_detail = result.explain()
