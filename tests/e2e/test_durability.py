"""Durability under SIGKILL: nothing acknowledged is lost, nothing partial appears.

Several clients upload a seeded stream of blobs (empty to ~300 KiB, many
spanning several 64 KiB chunks, some chunked, many overwriting each other) and
the node is SIGKILLed at a seeded moment mid-stream, three times. After each restart
every name must hold a version the history allows: the last acknowledged write,
or one that was in flight (failed on the client) and is not older than an
acknowledged one; never a partial body, never a lost acknowledgement.

Reproduce a run with ``E2E_SEED=<printed seed>``.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from node.testing.process import NodeProcess
from tests.e2e.conftest import StartNode
from tests.e2e.helpers import client, container_info, create_container, list_all_blobs, put

pytestmark = pytest.mark.e2e

BOX = "durable"
CLIENTS = 4
OPS_PER_ROUND = 200
ROUND_TIME_S = 20.0
ROUNDS = 3
NAMES = [f"d{i % 5}/blob-{i}" for i in range(36)] + ["ünïcødé/名前", "with space", "e"]
MD5_EMPTY = hashlib.md5(b"").hexdigest()


@dataclass(frozen=True)
class Version:
    """One write (or an observed baseline) of a name; ``md5`` None means absent."""
    name: str
    md5: str | None
    size: int
    t_start: float
    t_end: float
    acked: bool
    label: str


def blob_data(seed: int, index: int, size: int) -> bytes:
    return random.Random(seed * 1_000_003 + index).randbytes(size)


def pick_size(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.08:
        return 0
    if roll < 0.35:
        return rng.randint(1, 4096)
    if roll < 0.60:
        return rng.randint(4097, 64 * 1024 + 1)
    return rng.randint(64 * 1024 + 2, 300 * 1024)


def write_round(node: NodeProcess, token: str, seed: int, round_no: int
                ) -> tuple[list[Version], list[str]]:
    """Upload until SIGKILL; the versions tried and any protocol-level complaints."""
    rng = random.Random(seed + round_no)
    plan = [(rng.choice(NAMES), pick_size(rng), rng.random() < 0.25)
            for _ in range(OPS_PER_ROUND)]
    kill_after_acks = rng.randint(25, 150)
    counter = itertools.count()
    lock = threading.Lock()
    versions: list[Version] = []
    problems: list[str] = []
    acks = 0
    stop = threading.Event()
    deadline = time.monotonic() + ROUND_TIME_S

    def worker() -> None:
        nonlocal acks
        with client(node, token) as c:
            while not stop.is_set() and time.monotonic() < deadline:
                with lock:
                    i = next(counter)
                if i >= len(plan):
                    return
                name, size, chunked = plan[i]
                data = blob_data(seed + round_no, i, size)
                md5 = hashlib.md5(data).hexdigest()
                body: bytes | Iterator[bytes] = data
                if chunked:
                    body = iter([data[j:j + 50_000] for j in range(0, len(data), 50_000)])
                started = time.monotonic()
                try:
                    r = put(c, BOX, name, body)
                except httpx.TransportError as exc:
                    with lock:
                        versions.append(Version(name, md5, size, started, time.monotonic(),
                                                False, f"r{round_no}#{i} {exc!r}"))
                    if not stop.is_set():
                        problems.append(f"r{round_no}#{i}: {exc!r} before the kill")
                    return                         # the node is gone
                ended = time.monotonic()
                if r.status_code != 201:
                    problems.append(f"r{round_no}#{i}: {r.status_code} {r.text[:200]}")
                    continue
                if (r.json()["etag"], r.json()["size"]) != (md5, size):
                    problems.append(f"r{round_no}#{i}: answered {r.json()} for md5 {md5}")
                with lock:
                    versions.append(Version(name, md5, size, started, ended, True,
                                            f"r{round_no}#{i}"))
                    acks += 1

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        futures = [pool.submit(worker) for _ in range(CLIENTS)]
        while (time.monotonic() < deadline and acks < kill_after_acks
               and not all(f.done() for f in futures)):
            time.sleep(0.005)
        stop.set()
        node.kill()
        for future in futures:
            future.result(timeout=60)
    in_flight = sum(1 for v in versions if not v.acked)
    print(f"round {round_no}: SIGKILL after {acks} acks (target {kill_after_acks}), "
          f"{in_flight} uploads in flight")
    return versions, problems


def allowed(observed: Version, history: list[Version]) -> bool:
    """Some write of this state is in the history and no acked write started after it ended."""
    for v in history:
        if v.md5 != observed.md5 or (v.md5 is not None and v.size != observed.size):
            continue
        if not any(w.acked and w.t_start > v.t_end for w in history):
            return True
    return False


def verify(node: NodeProcess, token: str, history: list[Version]) -> list[Version]:
    """Check every name against the history; the observed states, as new baselines."""
    now = time.monotonic()
    observed: dict[str, Version] = {}
    with client(node, token) as c:
        for name in NAMES:
            r = c.get("/get_data", params={"container": BOX, "blob": name})
            if r.status_code == 404:
                state = Version(name, None, 0, now, now, True, "absent")
            else:
                assert r.status_code == 200, (name, r.status_code, r.text[:200])
                md5 = hashlib.md5(r.content).hexdigest()
                assert r.headers["ETag"] == f'"{md5}"', f"{name}: ETag does not match body"
                assert int(r.headers["Content-Length"]) == len(r.content)
                state = Version(name, md5, len(r.content), now, now, True, "observed")
            mine = [v for v in history if v.name == name]
            assert allowed(state, mine), (
                f"{name!r} reads back as {state.md5} ({state.size} bytes), which the history "
                f"does not allow: " + "; ".join(
                    f"{v.label} md5={v.md5} size={v.size} acked={v.acked} "
                    f"[{v.t_start:.3f}, {v.t_end:.3f}]" for v in mine))
            observed[name] = state

        listing = {b["blob"]: b for b in list_all_blobs(c, BOX)}
        present = {n: v for n, v in observed.items() if v.md5 is not None}
        assert sorted(listing) == sorted(present), "list_blobs disagrees with GET"
        for name, entry in listing.items():
            assert (entry["etag"], entry["size"]) == (present[name].md5, present[name].size)
        info = container_info(c, BOX)
        assert info["blob_count"] == len(listing)
        assert info["bytes"] == sum(v.size for v in present.values())
    return list(observed.values())


def test_nothing_acknowledged_is_lost_under_sigkill(start_node: StartNode) -> None:
    seed = int(os.environ.get("E2E_SEED") or random.randrange(2**31))
    print(f"\ndurability seed: E2E_SEED={seed}")
    node = start_node("n1", "--chunk-size", "64KiB")
    token = node.login()
    with client(node, token) as c:
        create_container(c, BOX)
    history: list[Version] = [Version(n, None, 0, -1.0, -1.0, True, "initial")
                              for n in NAMES]
    problems: list[str] = []
    for round_no in range(ROUNDS):
        versions, complaints = write_round(node, token, seed, round_no)
        history += versions
        problems += complaints
        node.start()
        history += verify(node, token, history)
        acked = sum(v.acked for v in versions)
        assert acked > 0, "no upload was acknowledged before the kill"
    assert not problems, problems
    # Still a working store after the crashes.
    with client(node, token) as c:
        assert put(c, BOX, "after", b"x" * 100_000).status_code == 201
        assert c.get("/get_data", params={"container": BOX, "blob": "after"}
                     ).content == b"x" * 100_000
