"""Recently used manifests (and small blobs' bytes) in memory, as current as sqlite.

Every GET reads its blob's manifest after the request's read barrier. From
sqlite that costs a worker-thread hop, which on a small GET cost more CPU than
the rest of the handler. So manifests are kept here, bounded by ``max_bytes``
(least recently used go first), including the answer "no such blob".

Coherence: the state machine writes every change through (``changed``) right
after the transaction commits, in the same call that applies it, so before the
driver counts the entry applied; after a read barrier, the cache is as current
as sqlite. A read that misses goes to sqlite and keeps what it read only if no
blob changed while it ran (``generation``), so a slow read can never put back a
manifest that an apply replaced or deleted meanwhile. The lock makes "check the
generation, then store" one step against "bump the generation, then store": the
state machine runs on a worker thread.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from node.meta.records import Manifest

Key = tuple[str, str]
#: A blob as the API reads it: its manifest (None: no such blob), its bytes if inline.
Found = tuple[Manifest | None, bytes | None]

#: Bytes charged for an entry besides its names, chunk ids and inline bytes.
ENTRY_OVERHEAD = 256


def _cost(key: Key, found: Found) -> int:
    manifest, data = found
    chunks = 32 * len(manifest.chunks) if manifest is not None else 0
    return ENTRY_OVERHEAD + len(key[0]) + len(key[1]) + chunks + len(data or b"")


class ManifestCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Key, tuple[Found, int]] = OrderedDict()
        self._lock = threading.Lock()
        #: Bumped by every change; a read that saw another value keeps nothing.
        self.generation = 0
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def read(self, key: Key, load: Callable[[], Awaitable[Found]]) -> Found:
        """The blob at ``key``: from memory, or from ``load`` (sqlite), kept if still current."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
        if entry is not None:
            self.hits += 1
            return entry[0]
        self.misses += 1
        generation = self.generation
        found = await load()
        with self._lock:
            if generation == self.generation:
                self._store(key, found)
        return found

    def changed(self, key: Key, found: Found) -> None:
        """The state machine committed a new manifest (or a delete: ``(None, None)``)."""
        with self._lock:
            self.generation += 1
            self._store(key, found)

    def clear(self) -> None:
        """The whole state was replaced (a snapshot was installed)."""
        with self._lock:
            self.generation += 1
            self._entries.clear()
            self.bytes = 0

    def _store(self, key: Key, found: Found) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        cost = _cost(key, found)
        if cost > self.max_bytes:
            return
        self._entries[key] = (found, cost)
        self.bytes += cost
        while self.bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted
