"""Watching a cluster of node processes from outside: bounded polls and tolerant reads.

Shared by the end-to-end tests and the benchmarks, which both drive
``NodeProcess`` nodes and wait for them to agree on something. Every wait is
bounded and fails with ``AssertionError`` naming what did not happen; every
request tolerates a node that is down or slow (status 0), so a poll can keep
going while nodes die and return. Only the standard library is used.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable, Iterable
from typing import Any

from node.testing.process import NodeProcess


def wait_for(what: str, check: Callable[[], bool], timeout_s: float,
             interval_s: float = 0.1, detail: Callable[[], object] | None = None) -> float:
    """Poll ``check`` until true (bounded in time); the seconds it took."""
    started = time.monotonic()
    while True:
        if check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            extra = f": {detail()}" if detail is not None else ""
            raise AssertionError(f"not within {timeout_s:.1f} s: {what}{extra}")
        time.sleep(interval_s)


def safe_request(node: NodeProcess, method: str, path: str, *, timeout_s: float = 5.0,
                 **kwargs: Any) -> tuple[int, Any]:
    """``node.request``, with a connection error or a timeout as status 0."""
    try:
        return node.request(method, path, timeout_s=timeout_s, **kwargs)
    except (OSError, http.client.HTTPException) as exc:
        return 0, repr(exc)


def cluster_view(node: NodeProcess, token: str) -> dict[str, Any]:
    """``GET /cluster`` ({} unless the node answers 200)."""
    status, body = safe_request(node, "GET", "/cluster", token=token)
    return body if status == 200 and isinstance(body, dict) else {}


def health(node: NodeProcess) -> dict[str, Any]:
    """``GET /health`` ({} unless the node answers 200)."""
    status, body = safe_request(node, "GET", "/health", timeout_s=2.0)
    return body if status == 200 and isinstance(body, dict) else {}


def coordinator_of(node: NodeProcess) -> str | None:
    """The coordinator this node names in /health (None if none or no answer)."""
    leader = health(node).get("coordinator")
    return str(leader) if leader else None


def agreed_coordinator(nodes: Iterable[NodeProcess]) -> str | None:
    """The coordinator every given node names, if they all name the same one."""
    named = {coordinator_of(n) for n in nodes}
    return named.pop() if len(named) == 1 else None


def wait_agreed_coordinator(nodes: Iterable[NodeProcess], timeout_s: float = 15.0,
                            exclude: str | None = None, interval_s: float = 0.02) -> str:
    """Wait until every given node names the same coordinator (not ``exclude``)."""
    nodes = list(nodes)
    found: list[str] = []

    def agreed() -> bool:
        leader = agreed_coordinator(nodes)
        if leader is None or leader == exclude:
            return False
        found.append(leader)
        return True

    wait_for(f"{[n.node_id for n in nodes]} name one coordinator (not {exclude})", agreed,
             timeout_s, interval_s=interval_s)
    return found[-1]
