"""Pins: the chunks that uploads and downloads in flight rely on.

The garbage collector must never delete a chunk that an upload is about to
reference or a download is about to read. Safety comes from this protocol
state, not from timing: a GC step starts with ``begin_step``, reads which of
its candidates no committed manifest references, and then, without awaiting,
deletes only candidates that are not pinned now and were not pinned or unpinned
during the step. An upload pins each chunk before it writes it and unpins after
its manifest commits (or fails), so either the GC's read saw the commit, or the
pin was live or touched during the step, or the upload pinned after the
deletion and then wrote the chunk anew.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class ChunkPins:
    def __init__(self) -> None:
        self._counts: Counter[bytes] = Counter()
        self._touched: set[bytes] = set()

    def pin(self, digest: bytes) -> None:
        self._counts[digest] += 1
        self._touched.add(digest)

    def unpin(self, digest: bytes) -> None:
        self._counts[digest] -= 1
        if self._counts[digest] <= 0:
            del self._counts[digest]
        self._touched.add(digest)

    @contextmanager
    def holding(self, digests: Iterable[bytes]) -> Iterator[list[bytes]]:
        """Pin the digests for the block; more may be appended to the yielded list."""
        held = list(digests)
        for digest in held:
            self.pin(digest)
        try:
            yield held
        finally:
            for digest in held:
                self.unpin(digest)

    def begin_step(self) -> None:
        self._touched = set()

    def collectable(self, digest: bytes) -> bool:
        """True if nothing pinned or unpinned the chunk since ``begin_step``."""
        return digest not in self._counts and digest not in self._touched

    def __len__(self) -> int:
        return len(self._counts)
