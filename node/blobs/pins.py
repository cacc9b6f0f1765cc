"""Pins and holds: the chunks that uploads and downloads in flight rely on.

The collector must not delete a chunk that an upload is about to reference or
a download is about to read. A GC step starts with ``begin_step``, asks which
of its candidates no committed manifest references (and condemns them through
the coordinator), and then, without awaiting, deletes only candidates that are
not pinned or held now and were not pinned, unpinned or held during the step.

* A **pin** is taken by an upload or download on this node, and dropped when it
  finishes (for an upload: after its manifest commits or fails).
* A **hold** is taken for a peer's upload when its ``chunk.put`` lands here,
  keyed by the peer and its upload id. The uploader renews it while the upload
  runs; it lapses ``ttl`` seconds after the last renewal (a crashed uploader
  renews nothing).

Pins and holds keep uploads from failing; they are not the last line of safety.
A hold that lapsed (a frozen uploader, a restart of this node) can let a copy go
while its upload is still running, and that is caught by protocol state: the
condemnation is a metadata command, and a manifest commit that names a chunk
condemned after the upload began is refused (see ``MetaState``), so no blob is
ever committed over a copy the collector may have removed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Hold:
    until: float
    digests: set[bytes] = field(default_factory=set)


class ChunkPins:
    def __init__(self) -> None:
        self._counts: Counter[bytes] = Counter()
        self._touched: set[bytes] = set()
        self._holds: dict[tuple[str, bytes], _Hold] = {}
        self._held: Counter[bytes] = Counter()

    # -- local pins -----------------------------------------------------------------------

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

    # -- holds for peers' uploads ---------------------------------------------------------

    def hold(self, peer: str, upload: bytes, digest: bytes, until: float) -> None:
        entry = self._holds.setdefault((peer, upload), _Hold(until))
        entry.until = max(entry.until, until)
        if digest not in entry.digests:
            entry.digests.add(digest)
            self._held[digest] += 1
        self._touched.add(digest)

    def renew(self, peer: str, upload: bytes, until: float) -> bool:
        """False if no such hold is left (it lapsed: its upload will be refused at commit)."""
        entry = self._holds.get((peer, upload))
        if entry is None:
            return False
        entry.until = max(entry.until, until)
        return True

    def expire(self, now: float) -> None:
        for key in [key for key, entry in self._holds.items() if entry.until < now]:
            for digest in self._holds.pop(key).digests:
                self._held[digest] -= 1
                if self._held[digest] <= 0:
                    del self._held[digest]
                self._touched.add(digest)

    @property
    def holds(self) -> int:
        return len(self._holds)

    # -- the collector's side -------------------------------------------------------------

    def begin_step(self, now: float) -> None:
        """Drop holds that lapsed before ``now`` and start recording what gets touched."""
        self.expire(now)
        self._touched = set()

    def collectable(self, digest: bytes) -> bool:
        """True if nothing pins or holds the chunk, and nothing touched it since
        ``begin_step``."""
        return (digest not in self._counts and digest not in self._held
                and digest not in self._touched)

    def __len__(self) -> int:
        return len(self._counts)
