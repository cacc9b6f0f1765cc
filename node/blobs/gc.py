"""Garbage collection of chunks that no committed manifest references.

Each node collects the copies on its own disk. A step over a batch of them:

1. ``begin_step`` on the pins (lapsed holds go; touches are recorded from now);
2. drop the candidates the local metadata copy sees referenced, or that are
   pinned or held (a cheap filter, nothing more);
3. **condemn** the rest through the coordinator: the ``CondemnChunks`` command
   returns those still unreferenced at its place in the log, and records it;
4. without awaiting, delete the condemned ones that nothing pinned, held or
   touched since step 1.

Why no committed blob can lose a copy this way: an upload writes every chunk it
will reference after noting the applied index (``since``), and its commit is
refused if a chunk was condemned after ``since``. A copy written before step 1
is either protected by its pin or hold, or its condemnation comes after the
upload began, so the commit is refused; a copy written after step 1 was touched
during the step, so step 4 keeps it; a commit that lands before the
condemnation makes the chunk referenced, so step 3 does not condemn it.

The age threshold ``grace_s`` only spares fresh copies the work; it is not what
makes deletion safe.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from node.blobs.pins import ChunkPins
from node.clock import WallClock
from node.errors import Unavailable

log = logging.getLogger(__name__)

BATCH = 512


class CollectableStore(Protocol):
    async def scan(self) -> list[tuple[bytes, float, int]]: ...

    def delete_sync(self, digest: bytes) -> bool: ...


#: Chunk ids in, the subset out: the local "unreferenced" filter and the condemnation.
ChunkFilter = Callable[[list[bytes]], Awaitable[list[bytes]]]


class ChunkCollector:
    def __init__(self, store: CollectableStore, unreferenced: ChunkFilter,
                 condemn: ChunkFilter, pins: ChunkPins, clock: WallClock, *, grace_s: float,
                 interval_s: float) -> None:
        self._store = store
        self._unreferenced = unreferenced
        self._condemn = condemn
        self._pins = pins
        self._clock = clock
        self._grace_s = grace_s
        self._interval_s = interval_s
        self.collected_total = 0
        self.bytes_collected_total = 0

    async def collect_once(self) -> int:
        """One pass over the store; returns how many chunks it deleted."""
        now = self._clock.now()
        old = [(digest, size) for digest, mtime, size in await self._store.scan()
               if now - mtime >= self._grace_s]
        sizes = dict(old)
        deleted = 0
        for start in range(0, len(old), BATCH):
            batch = [digest for digest, _ in old[start:start + BATCH]]
            self._pins.begin_step(trio.current_time())
            candidates = [digest for digest in await self._unreferenced(batch)
                          if self._pins.collectable(digest)]
            if not candidates:
                continue
            for digest in await self._condemn(candidates):
                if self._pins.collectable(digest) and self._store.delete_sync(digest):
                    deleted += 1
                    self.bytes_collected_total += sizes[digest]
        self.collected_total += deleted
        if deleted:
            log.info("collected unreferenced chunks", extra={"chunks": deleted})
        return deleted

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self._interval_s)
            try:
                await self.collect_once()
            except (OSError, Unavailable) as exc:
                log.warning("chunk collection failed: %s", exc)
