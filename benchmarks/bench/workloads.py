"""The workloads: PUT, GET, range GET, DELETE, LIST and a mix, every answer checked.

A phase runs ``concurrency`` slots (one keep-alive connection each, spread round-robin
over the target's URLs) until ``count`` operations have started or ``duration_s`` has
passed, whichever comes first. The ``Keyspace`` remembers which body every blob holds,
so every GET and range GET is compared byte for byte with what was written; a blob is
used by one slot at a time (a *lease*), so the expected bytes are never ambiguous.

The mixed profile, per operation: 60 % GET, 10 % PUT of a new blob, 10 % overwrite of
an existing one, 10 % range GET, 5 % DELETE, 5 % LIST of one page of up to 100 names
from a random marker. Outcomes that may or may not have taken effect (a time-out, a
broken connection, a 503) make that blob *uncertain*: it is never read again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import quote

from benchmarks.bench.bodies import Bodies
from benchmarks.bench.client import REQUEST_ERRORS, Answer, Slot, error_kind
from benchmarks.bench.stats import CpuWatch, Result, merged

OPS = ("put", "get", "range-get", "delete", "list", "mixed")
MIX = (("get", 60), ("put", 10), ("overwrite", 10), ("range-get", 10), ("delete", 5),
       ("list", 5))
#: Range GETs ask for at most this many bytes, so a range is a small read in any blob.
MAX_RANGE = 1024 * 1024
MIXED_LIST_LIMIT = 100
#: A status after which a write may or may not have happened.
UNSURE = frozenset({0, 408, 500, 502, 503, 504})


@dataclass
class Phase:
    """One measured run of one operation (or of the mix)."""
    op: str
    size: int
    concurrency: int
    duration_s: float
    count: int | None = None
    name: str = ""
    list_limit: int = 1000

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown workload {self.op!r}")
        self.name = self.name or self.op


@dataclass
class Target:
    """Where requests go: the URLs, the token, and the pids whose CPU the report shows."""
    urls: list[str]
    token: str | None
    label: str = "cluster"
    server_pids: list[int] = field(default_factory=list)
    timeout_s: float = 120.0


class Keyspace:
    """The blobs of one container and one size that this run wrote, and their bodies."""

    def __init__(self, container: str, bodies: Bodies, prefix: str = "k") -> None:
        self.container = container
        self.bodies = bodies
        self.prefix = prefix
        self.written: dict[int, int] = {}  # key -> offset of its body
        self._keys: list[int] = []  # the written keys, for a uniform random pick
        self._index: dict[int, int] = {}
        self.busy: set[int] = set()
        self.uncertain = 0
        self.changes = 0
        self._next_key = 0

    @property
    def size(self) -> int:
        return self.bodies.size

    def name(self, key: int) -> str:
        return f"{self.prefix}{key:010d}"

    def new_key(self) -> int:
        key = self._next_key
        self._next_key += 1
        self.busy.add(key)
        return key

    def lease(self, rng: random.Random) -> int | None:
        """A written blob no other slot is using, now leased to the caller (or None)."""
        for _ in range(8):
            if not self._keys:
                return None
            key = self._keys[rng.randrange(len(self._keys))]
            if key not in self.busy:
                self.busy.add(key)
                return key
        return None

    def release(self, key: int) -> None:
        self.busy.discard(key)

    def stored(self, key: int, offset: int) -> None:
        if key not in self.written:
            self._index[key] = len(self._keys)
            self._keys.append(key)
        self.written[key] = offset
        self.changes += 1

    def forget(self, key: int, unsure: bool = False) -> None:
        """The blob is gone (or, if ``unsure``, in an unknown state): never read it again."""
        self.uncertain += unsure
        self.changes += 1
        if self.written.pop(key, None) is None:
            return
        index = self._index.pop(key)
        last = self._keys.pop()
        if last != key:
            self._keys[index] = last
            self._index[last] = index

    def blob_path(self, verb: str, key: int) -> str:
        return f"/{verb}?container={self.container}&blob={quote(self.name(key))}"

    def get_path(self, key: int) -> str:
        return self.blob_path("get_data", key)

    def list_path(self, marker: str | None, limit: int) -> str:
        path = f"/list_blobs?container={self.container}&limit={limit}"
        return path if marker is None else f"{path}&marker={quote(marker)}"


class StaticFiles(Keyspace):
    """One file per size on a static server (nginx): every GET reads ``/<size>.bin``."""

    def __init__(self, bodies: Bodies) -> None:
        super().__init__("", bodies)
        self.stored(0, 0)

    @property
    def file_name(self) -> str:
        return f"{self.size}.bin"

    def get_path(self, key: int) -> str:
        return f"/{self.file_name}"

    def lease(self, rng: random.Random) -> int | None:
        return 0  # the file never changes: any number of readers at once


class Outcome(NamedTuple):
    ok: bool
    nbytes: int = 0
    items: int = 0
    error: str = ""
    wrong: bool = False


DONE = Outcome(False, error="done")  # nothing left to do: the slot stops
BUSY = Outcome(False, error="busy")  # every blob is leased to other slots: try again


def failed(answer: Answer | BaseException, wrong: bool = False) -> Outcome:
    return Outcome(False, error=error_kind(answer), wrong=wrong)


class Runner:
    """Runs one phase; each ``op_*`` method does one operation on one slot."""

    def __init__(self, phase: Phase, keyspace: Keyspace, rng: random.Random) -> None:
        self.phase = phase
        self.ks = keyspace
        self.rng = rng
        self.list_markers: dict[int, tuple[str | None, int]] = {}
        self.changes_at_start = keyspace.changes

    async def op_put(self, slot: Slot, slot_id: int, key: int | None = None) -> Outcome:
        ks = self.ks
        key = ks.new_key() if key is None else key
        offset = ks.bodies.new_offset()
        try:
            answer = await slot.put(ks.blob_path("put_data", key), ks.bodies.body(offset))
        except REQUEST_ERRORS as exc:
            ks.forget(key, unsure=True)
            return failed(exc)
        finally:
            ks.release(key)
        if answer.status == 201:
            ks.stored(key, offset)
            return Outcome(True, ks.size)
        if answer.status in UNSURE:
            ks.forget(key, unsure=True)
        return failed(answer)

    async def op_overwrite(self, slot: Slot, slot_id: int) -> Outcome:
        key = self.ks.lease(self.rng)
        return await self.op_put(slot, slot_id, key)

    async def op_get(self, slot: Slot, slot_id: int) -> Outcome:
        ks = self.ks
        key = ks.lease(self.rng)
        if key is None:
            return DONE if not ks.written else BUSY
        try:
            answer = await slot.get(ks.get_path(key), ks.bodies.check(ks.written[key]))
        except REQUEST_ERRORS as exc:
            return failed(exc)
        finally:
            ks.release(key)
        if answer.status == 200 and answer.verified:
            return Outcome(True, answer.length)
        return failed(answer, wrong=answer.status in (200, 404))

    async def op_range_get(self, slot: Slot, slot_id: int) -> Outcome:
        ks = self.ks
        key = ks.lease(self.rng)
        if key is None:
            return DONE if not ks.written else BUSY
        start, length, header = self.pick_range(ks.size)
        try:
            answer = await slot.get(ks.get_path(key),
                                    ks.bodies.check(ks.written[key], start, length),
                                    headers={"Range": header})
        except REQUEST_ERRORS as exc:
            return failed(exc)
        finally:
            ks.release(key)
        if answer.status == 206 and answer.verified:
            return Outcome(True, answer.length)
        return failed(answer, wrong=answer.status in (200, 206, 404, 416))

    def pick_range(self, size: int) -> tuple[int, int, str]:
        """(start, length, Range header): mostly ``a-b``, a tenth each ``-n`` and ``a-``."""
        length = self.rng.randint(1, min(size, MAX_RANGE))
        form = self.rng.random()
        if form < 0.1:
            return size - length, length, f"bytes=-{length}"
        start = self.rng.randint(0, size - length)
        if form < 0.2:
            return size - length, length, f"bytes={size - length}-"
        return start, length, f"bytes={start}-{start + length - 1}"

    async def op_delete(self, slot: Slot, slot_id: int) -> Outcome:
        ks = self.ks
        key = ks.lease(self.rng)
        if key is None:
            return DONE if not ks.written else BUSY
        try:
            answer = await slot.call("DELETE", ks.blob_path("delete_data", key))
        except REQUEST_ERRORS as exc:
            ks.forget(key, unsure=True)
            return failed(exc)
        finally:
            ks.release(key)
        if answer.status == 204:
            ks.forget(key)
            return Outcome(True)
        if answer.status in UNSURE:
            ks.forget(key, unsure=True)
        return failed(answer, wrong=answer.status == 404)

    async def op_list(self, slot: Slot, slot_id: int) -> Outcome:
        """One page. In a list phase each slot walks the container page by page; in the
        mix, a page of up to 100 names from a random blob's name."""
        ks, mixed = self.ks, self.phase.op == "mixed"
        if mixed:
            key = ks.lease(self.rng)
            marker, seen, limit = (None if key is None else ks.name(key)), 0, MIXED_LIST_LIMIT
            if key is not None:
                ks.release(key)
        else:
            marker, seen = self.list_markers.get(slot_id, (None, 0))
            limit = self.phase.list_limit
        try:
            answer = await slot.call("GET", ks.list_path(marker, limit))
        except REQUEST_ERRORS as exc:
            return failed(exc)
        if answer.status != 200 or not isinstance(answer.data, dict):
            return failed(answer)
        names = [b["blob"] for b in answer.data.get("blobs", [])]
        in_order = all(a < b for a, b in zip([marker or ""] + names, names))
        if not in_order or len(names) > limit:
            return Outcome(False, error="listing out of order", wrong=True)
        if mixed:
            return Outcome(True, items=len(names))
        seen += len(names)
        next_marker = answer.data.get("next_marker")
        if next_marker is None:
            self.list_markers[slot_id] = (None, 0)
            if not self.full_listing_agrees(seen):
                return Outcome(False, items=len(names), error="listing lost or added blobs",
                               wrong=True)
        else:
            self.list_markers[slot_id] = (next_marker, seen)
        return Outcome(True, items=len(names))

    def full_listing_agrees(self, seen: int) -> bool:
        """A whole pass over a container nobody changes lists exactly what was written
        (plus at most the writes whose outcome is unknown)."""
        ks = self.ks
        if self.changes_at_start != ks.changes:
            return True
        return len(ks.written) <= seen <= len(ks.written) + ks.uncertain

    def choose(self) -> Callable[[Slot, int], Awaitable[Outcome]]:
        op = self.phase.op
        if op == "mixed":
            roll = self.rng.randrange(100)
            for name, weight in MIX:
                if roll < weight:
                    op = name
                    break
                roll -= weight
            if op in ("get", "range-get", "overwrite", "delete") and not self.ks.written:
                op = "put"
        method: Callable[[Slot, int], Awaitable[Outcome]] = getattr(
            self, "op_" + op.replace("-", "_"))
        return method


ProgressHook = Callable[[Phase, dict[str, Result], float], Any]


async def run_phase(phase: Phase, target: Target, keyspace: Keyspace, *, seed: int = 0,
                    follow: ProgressHook | None = None) -> list[Result]:
    """Run ``phase`` against ``target``; one result per operation (and a total for the
    mix). ``follow(phase, results, started)`` is run alongside (the live display)."""
    rng = random.Random(seed)
    runner = Runner(phase, keyspace, rng)
    names = [n for n, _ in MIX] if phase.op == "mixed" else [phase.op]
    results = {n: Result(phase.name if phase.op != "mixed" else f"mixed:{n}", n,
                         keyspace.size, phase.concurrency, target.label) for n in names}
    started = time.monotonic()
    deadline = started + phase.duration_s
    budget = [phase.count if phase.count is not None else -1]

    async def worker(slot_id: int) -> None:
        slot = Slot(target.urls[slot_id % len(target.urls)], target.token,
                    timeout_s=target.timeout_s)
        try:
            while time.monotonic() < deadline and budget[0] != 0:
                budget[0] -= 1
                operation = runner.choose()
                op_name = operation.__name__[3:].replace("_", "-")
                began = time.perf_counter()
                outcome = await operation(slot, slot_id)
                if outcome is DONE:
                    return
                if outcome is BUSY:
                    budget[0] += 1
                    await asyncio.sleep(0.001)
                    continue
                results[op_name].record(outcome.ok, time.perf_counter() - began,
                                        outcome.nbytes, outcome.items, outcome.error,
                                        outcome.wrong)
        finally:
            await slot.close()

    watch = CpuWatch(target.server_pids)
    ticker = asyncio.create_task(follow(phase, results, started)) if follow else None
    try:
        async with asyncio.TaskGroup() as group:
            for slot_id in range(phase.concurrency):
                group.create_task(worker(slot_id))
    finally:
        if ticker is not None:
            ticker.cancel()
    seconds = time.monotonic() - started
    cpu = watch.stop()
    rows = [r for r in results.values() if phase.op != "mixed" or r.ops or r.errors]
    for row in rows:
        row.seconds, row.cpu = seconds, cpu
    if phase.op == "mixed":
        rows.insert(0, merged("mixed", rows))
    return rows
