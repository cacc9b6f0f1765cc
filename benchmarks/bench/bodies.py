"""Blob bodies that are unique per write, free to make and cheap to verify exactly.

Every body of one size is a slice of one random buffer of ``size + SPAN`` bytes,
starting at an offset that changes with every write (``version * STRIDE mod SPAN``,
distinct for ``SPAN`` writes). So a body costs no bytes of its own (a 64 MiB upload
streams from a ``memoryview`` of the buffer), no two writes send the same bytes (and
no two blobs share a chunk, whatever the nodes' chunk size, until 65,536 writes of one
size), and a reader checks each received piece against the buffer with one
``memcmp`` (``bytes.startswith`` at an offset): stronger than comparing MD5s and far
cheaper, since hashing 550 MB/s of GETs would take most of a core.
"""

from __future__ import annotations

import random

#: Distinct offsets, hence distinct bodies of one size.
SPAN = 4 * 1024 * 1024
#: Odd, so ``version * STRIDE`` runs through every offset below ``SPAN`` (a power of 2).
STRIDE = 4099


class Bodies:
    """The bodies of one blob size; ``offset_for(version)`` names one body."""

    def __init__(self, size: int, seed: int = 0) -> None:
        if size < 0:
            raise ValueError("a blob size cannot be negative")
        self.size = size
        self.buffer = random.Random(seed).randbytes(size + SPAN)
        self.view = memoryview(self.buffer)
        self._versions = 0

    def new_offset(self) -> int:
        """The offset of a body no earlier write of this run has sent."""
        offset = (self._versions * STRIDE) % SPAN
        self._versions += 1
        return offset

    def body(self, offset: int) -> memoryview:
        """The body at ``offset`` (no copy)."""
        return self.view[offset:offset + self.size]

    def check(self, offset: int, start: int = 0, length: int | None = None) -> Check:
        """A checker for bytes ``start .. start+length`` of the body at ``offset``."""
        if length is None:
            length = self.size - start
        return Check(self.buffer, offset + start, length)


class Check:
    """Compares a response body, piece by piece as it arrives, with the expected bytes.

    ``feed`` every piece, then ``ok`` says whether the pieces were exactly the
    expected bytes: none differs, none is missing and nothing is extra.
    """

    __slots__ = ("_buffer", "_position", "_end", "_matches")

    def __init__(self, buffer: bytes, start: int, length: int) -> None:
        self._buffer = buffer
        self._position = start
        self._end = start + length
        self._matches = True

    def feed(self, piece: bytes) -> None:
        if self._matches:
            if (self._position + len(piece) > self._end
                    or not self._buffer.startswith(piece, self._position)):
                self._matches = False
        self._position += len(piece)

    @property
    def ok(self) -> bool:
        return self._matches and self._position == self._end
