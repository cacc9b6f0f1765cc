"""The campaign's clients: concurrent requests through any node, every call recorded.

Each client is a thread with its own seeded generator. It picks a node and an
operation (PUT, conditional PUT, GET, range GET, DELETE, LIST) on a small set of
blob names, so writers collide and overwrite each other. Every PUT's body is new
and unique (its id is in its first bytes) and regenerable from its id, so any
read can be checked byte for byte against what was written with its ETag.

Every call becomes a ``Call`` with its invocation and return times and one of
three outcomes: ``ok`` (the store answered and the answer is definite: 2xx, 404,
412, 416, ...), ``fail`` (definitely not done: the connection was refused, or an
answer that promises nothing was stored) or ``unknown`` (a timeout, a broken
connection, a 503 or another 5xx: it may or may not have taken effect).
What a read saw that no write ever wrote is recorded at once as a violation.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote

CHUNK_SIZE = 64 * 1024
#: Blobs up to this size live in their manifests (no chunk files): the nodes' inline_max.
INLINE_MAX = 4 * 1024

OK, FAIL, UNKNOWN = "ok", "fail", "unknown"
#: Definite answers about the blob: a result the history checker can use.
RESULTS = frozenset({200, 201, 204, 206, 304, 404, 412, 416})
#: 5xx answers that still promise nothing was changed (the others may have changed it).
UNCHANGED_5XX = frozenset({507})


@dataclass(frozen=True, slots=True)
class Write:
    """One PUT's body: regenerable from ``wid`` and ``size`` alone."""

    wid: int
    container: str
    blob: str
    size: int
    etag: str  # hex MD5
    sha256: str

    def body(self) -> bytes:
        return body_of(self.wid, self.size)


def body_of(wid: int, size: int) -> bytes:
    """``size`` bytes (at least the id's 20) unique to ``wid``: its id, then seeded noise."""
    head = f"write-{wid:013d}|".encode()
    return head + random.Random(wid).randbytes(max(0, size - len(head)))


@dataclass(slots=True)
class Call:
    """One request as the client saw it; times are seconds since the run began."""

    client: int
    kind: str  # put, get, range, delete, list
    container: str
    blob: str
    node: str
    invoked: float
    returned: float | None = None  # None: the outcome is unknown
    outcome: str = UNKNOWN
    status: int = 0
    etag: str | None = None  # put: what was written; get/range: what was read
    wid: int | None = None
    if_match: str | None = None
    if_none_match: bool = False
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "", False)}


@dataclass
class History:
    """Everything the clients did, shared by their threads (appends under a lock)."""

    started: float = field(default_factory=time.monotonic)
    calls: list[Call] = field(default_factory=list)
    writes: dict[str, Write] = field(default_factory=dict)  # by etag
    violations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return time.monotonic() - self.started

    def add(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    def violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)

    def write_for(self, container: str, blob: str, etag: str | None) -> Write | None:
        write = self.writes.get(etag or "")
        return write if write and (write.container, write.blob) == (container, blob) else None


@dataclass(frozen=True, slots=True)
class Settings:
    containers: tuple[str, ...]
    blobs_per_container: int = 8
    clients: int = 6
    timeout_s: float = 15.0
    max_size: int = 5 * CHUNK_SIZE + 1000


def blob_names(settings: Settings) -> list[tuple[str, str]]:
    return [(c, f"obj-{i:02d}" + ("/nested" if i % 3 == 0 else ""))
            for c in settings.containers for i in range(settings.blobs_per_container)]


class Client:
    """One client thread's loop; ``urls()`` gives the nodes' current URLs by name."""

    def __init__(self, index: int, seed: int, history: History, settings: Settings,
                 urls: Callable[[], dict[str, str]], token: str, first_wid: int) -> None:
        self.index = index
        self.rng = random.Random(f"{seed}/client/{index}")
        self.history = history
        self.settings = settings
        self.urls = urls
        self.token = token
        self.next_wid = first_wid
        self.names = blob_names(settings)
        self.last_seen: dict[tuple[str, str], str] = {}

    def run(self, stop: threading.Event, deadline: float) -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            self.step()

    def step(self) -> None:
        rng = self.rng
        container, blob = rng.choice(self.names)
        node, url = rng.choice(sorted(self.urls().items()))
        roll = rng.random()
        if roll < 0.30:
            self.put(node, url, container, blob)
        elif roll < 0.40:
            self.put(node, url, container, blob, conditional=True)
        elif roll < 0.62:
            self.get(node, url, container, blob)
        elif roll < 0.72:
            self.get(node, url, container, blob, ranged=True)
        elif roll < 0.85:
            self.delete(node, url, container, blob)
        else:
            self.list(node, url, container)

    # -- operations ----------------------------------------------------------

    def _size(self) -> int:
        roll = self.rng.random()
        if roll < 0.4:
            return self.rng.randrange(20, 4096)
        if roll < 0.8:
            return self.rng.randrange(4096, 2 * CHUNK_SIZE)
        return self.rng.randrange(2 * CHUNK_SIZE, self.settings.max_size)

    def put(self, node: str, url: str, container: str, blob: str,
            conditional: bool = False) -> None:
        wid, self.next_wid = self.next_wid, self.next_wid + 1
        size = self._size()
        body = body_of(wid, size)
        write = Write(wid, container, blob, size, hashlib.md5(body).hexdigest(),
                      hashlib.sha256(body).hexdigest())
        with self.history.lock:
            self.history.writes[write.etag] = write
        headers = {"Content-Type": "application/octet-stream"}
        call = Call(self.index, "put", container, blob, node, 0.0, etag=write.etag, wid=wid)
        if conditional:
            seen = self.last_seen.get((container, blob))
            if seen is not None and self.rng.random() < 0.7:
                call.if_match = seen
                headers["If-Match"] = f'"{seen}"'
            else:
                call.if_none_match = True
                headers["If-None-Match"] = "*"
        self._request(call, url, "POST", f"/put_data?{_query(container, blob)}", headers,
                      body, self._put_answer)

    def _put_answer(self, call: Call, status: int, headers: dict[str, str], body: bytes) -> None:
        if status == 201:
            got = json.loads(body).get("etag", "").strip('"')
            if got != call.etag:
                self.history.violation(f"PUT of write {call.wid} answered etag {got}, "
                                       f"expected {call.etag}")
            self.last_seen[(call.container, call.blob)] = call.etag or ""

    def get(self, node: str, url: str, container: str, blob: str, ranged: bool = False) -> None:
        call = Call(self.index, "range" if ranged else "get", container, blob, node, 0.0)
        headers: dict[str, str] = {}
        if ranged:
            start = self.rng.randrange(0, 3 * CHUNK_SIZE)
            end = start + self.rng.randrange(0, 2 * CHUNK_SIZE)
            headers["Range"] = f"bytes={start}-{end}"
            call.detail = headers["Range"]
        self._request(call, url, "GET", f"/get_data?{_query(container, blob)}", headers, None,
                      self._get_answer)

    def _get_answer(self, call: Call, status: int, headers: dict[str, str], body: bytes) -> None:
        if status not in (200, 206):
            return
        call.etag = headers.get("etag", "").strip('"')
        write = self.history.write_for(call.container, call.blob, call.etag)
        where = f"{call.kind} of {call.container}/{call.blob} through {call.node}"
        if write is None:
            self.history.violation(f"{where} returned etag {call.etag}, never written there")
            return
        self.last_seen[(call.container, call.blob)] = write.etag
        if status == 200:
            if len(body) != write.size or hashlib.sha256(body).hexdigest() != write.sha256:
                self.history.violation(f"{where}: body differs from write {write.wid} "
                                       f"({len(body)} of {write.size} bytes)")
            return
        first, last = _content_range(headers.get("content-range", ""))
        expected = write.body()[first:last + 1]
        if body != expected or last >= write.size:
            self.history.violation(f"{where} {call.detail}: bytes {first}-{last} differ from "
                                   f"write {write.wid}")

    def delete(self, node: str, url: str, container: str, blob: str) -> None:
        call = Call(self.index, "delete", container, blob, node, 0.0)
        self._request(call, url, "DELETE", f"/delete_data?{_query(container, blob)}", {},
                      None, lambda *_: None)

    def list(self, node: str, url: str, container: str) -> None:
        call = Call(self.index, "list", container, "", node, 0.0)
        self._request(call, url, "GET", f"/list_blobs?container={quote(container)}&limit=1000",
                      {}, None, self._list_answer)

    def _list_answer(self, call: Call, status: int, headers: dict[str, str],
                     body: bytes) -> None:
        if status != 200:
            return
        for entry in json.loads(body)["blobs"]:
            etag = str(entry["etag"]).strip('"')
            write = self.history.write_for(call.container, entry["blob"], etag)
            if write is None or write.size != entry["size"]:
                self.history.violation(f"list of {call.container} through {call.node} shows "
                                       f"{entry['blob']} {etag} ({entry['size']} bytes), "
                                       f"never written")

    # -- the one place that talks HTTP --------------------------------------

    def _request(self, call: Call, url: str, method: str, target: str,
                 headers: dict[str, str], body: bytes | None,
                 answer: Callable[[Call, int, dict[str, str], bytes], None]) -> None:
        call.invoked = self.history.now()
        status, reply_headers, reply, sent = 0, {}, b"", False
        host, port = url.removeprefix("http://").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=self.settings.timeout_s)
        try:
            conn.connect()
            sent = True
            conn.request(method, target, body=body,
                         headers={**headers, "Authorization": f"Bearer {self.token}"})
            response = conn.getresponse()
            reply = response.read()
            status = response.status
            reply_headers = {k.lower(): v for k, v in response.getheaders()}
        except (OSError, http.client.HTTPException) as exc:
            call.detail = f"{call.detail} {type(exc).__name__}".strip()
            if not sent:  # nothing reached the node: definitely not done
                call.returned, call.outcome = self.history.now(), FAIL
        finally:
            conn.close()
        if status:
            call.returned, call.status = self.history.now(), status
            call.outcome = (OK if status in RESULTS
                            else UNKNOWN if status >= 500 and status not in UNCHANGED_5XX
                            else FAIL)
            if call.outcome == UNKNOWN:
                call.returned = None
            try:
                answer(call, status, reply_headers, reply)
            except (ValueError, KeyError) as exc:
                self.history.violation(f"{call.kind} through {call.node}: unreadable answer "
                                       f"{status} {reply[:200]!r}: {exc}")
        self.history.add(call)


def _query(container: str, blob: str) -> str:
    return f"container={quote(container)}&blob={quote(blob, safe='')}"


def _content_range(value: str) -> tuple[int, int]:
    """``bytes a-b/size`` -> (a, b); (0, -1) when absent or unreadable."""
    try:
        first, last = value.split(" ", 1)[1].split("/", 1)[0].split("-")
        return int(first), int(last)
    except (IndexError, ValueError):
        return 0, -1


def run_clients(seed: int, history: History, settings: Settings,
                urls: Callable[[], dict[str, str]], token: str, duration_s: float,
                stop: threading.Event) -> list[threading.Thread]:
    """Start ``settings.clients`` client threads; each stops at ``duration_s`` or ``stop``."""
    deadline = time.monotonic() + duration_s
    threads = []
    for index in range(settings.clients):
        client = Client(index, seed, history, settings, urls, token,
                        first_wid=(seed % 1000) * 10**9 + index * 10**7)
        thread = threading.Thread(target=client.run, args=(stop, deadline),
                                  name=f"campaign-client-{index}", daemon=True)
        thread.start()
        threads.append(thread)
    return threads

