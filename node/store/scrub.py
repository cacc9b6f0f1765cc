"""Scrubbing: every chunk on this disk is re-read and checked against its hash, slowly.

Bit rot and torn writes are found before a reader needs the copy. A copy that
fails its check is quarantined by the store (kept aside as evidence, never
served) and replaced with a good copy from a peer through the normal read path,
whose read repair keeps it when this node is one of the chunk's owners (a
surplus copy on a non-owner is simply gone, which is what the healer wants
anyway). The pace is ``bytes_per_s`` of chunk data, so a pass over a large
disk takes hours and client traffic keeps the disk.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from node.errors import ChunkUnavailable
from node.store.chunks import ChunkStore

log = logging.getLogger(__name__)


class Scrubber:
    def __init__(self, local: ChunkStore, repair: Callable[[bytes], Awaitable[object]], *,
                 bytes_per_s: float, interval_s: float) -> None:
        self.local = local
        self._repair = repair
        self._bytes_per_s = bytes_per_s
        self._interval_s = interval_s
        self.passes = 0
        self.counters = {"verified": 0, "corrupt": 0, "repaired": 0, "unrepaired": 0}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        task_status.started()
        while True:
            await trio.sleep(self._interval_s)
            await self.scrub_once()

    async def scrub_once(self) -> int:
        """One pass over every chunk; the number of corrupt copies found."""
        found = 0
        for digest, _, size in await self.local.scan():
            try:
                good = await self.local.verify(digest)
            except ChunkUnavailable:
                continue  # deleted since the scan (collected, or dropped by the healer)
            self.counters["verified"] += 1
            if not good:
                found += 1
                self.counters["corrupt"] += 1
                await self._replace(digest)
            await trio.sleep(size / self._bytes_per_s)
        self.passes += 1
        return found

    async def _replace(self, digest: bytes) -> None:
        try:
            await self._repair(digest)
        except ChunkUnavailable as exc:
            self.counters["unrepaired"] += 1
            log.error("a corrupt chunk copy has no good copy anywhere reachable",
                      extra={"chunk": digest.hex(), "why": str(exc)})
            return
        self.counters["repaired"] += 1
