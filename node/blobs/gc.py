"""Garbage collection of chunks that no committed manifest references.

Safety comes from protocol state: the metadata's reference counts say what is
referenced, and ``ChunkPins`` covers uploads and downloads in flight (see
``node.blobs.pins`` for the argument). The age threshold ``grace_s`` is only a
backstop against bugs in that argument, not what makes deletion safe.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from node.blobs.pins import ChunkPins
from node.clock import WallClock

log = logging.getLogger(__name__)

BATCH = 512


class CollectableStore(Protocol):
    async def scan(self) -> list[tuple[bytes, float, int]]: ...

    def delete_sync(self, digest: bytes) -> bool: ...


UnreferencedQuery = Callable[[list[bytes]], Awaitable[list[bytes]]]


class ChunkCollector:
    def __init__(self, store: CollectableStore, unreferenced: UnreferencedQuery,
                 pins: ChunkPins, clock: WallClock, *, grace_s: float,
                 interval_s: float) -> None:
        self._store = store
        self._unreferenced = unreferenced
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
            self._pins.begin_step()
            candidates = await self._unreferenced(batch)
            for digest in candidates:
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
            except OSError as exc:
                log.warning("chunk collection failed: %s", exc)
