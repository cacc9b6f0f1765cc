"""The in-memory view of the Raft log: the entries after the last snapshot.

Indexes start at 1. ``snapshot`` covers 1..snapshot.index; the entries list
holds snapshot.index+1..last_index. The durable copy is the driver's business
(``Ready.entries``/``Ready.truncate_from``); this object mirrors it.
"""

from __future__ import annotations

from node.raft.messages import Entry, EntryKind, Membership, SnapshotMeta

EMPTY_SNAPSHOT = SnapshotMeta(0, 0, Membership())


class RaftLog:
    def __init__(self, snapshot: SnapshotMeta = EMPTY_SNAPSHOT,
                 entries: list[Entry] | None = None) -> None:
        self.snapshot = snapshot
        self._entries: list[Entry] = []
        for entry in entries or []:
            if entry.index > snapshot.index:
                self._entries.append(entry)
        for i, entry in enumerate(self._entries):
            if entry.index != snapshot.index + 1 + i:
                raise ValueError(f"log has a gap at index {snapshot.index + 1 + i}")

    @property
    def first_index(self) -> int:
        """The first index held as an entry (snapshot.index + 1)."""
        return self.snapshot.index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot.index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snapshot.term

    def term_at(self, index: int) -> int | None:
        """The term of ``index``; None when it is compacted away (below the snapshot) or
        beyond the end. Index 0 has term 0."""
        if index == self.snapshot.index:
            return self.snapshot.term
        if index < self.snapshot.index or index > self.last_index:
            return None
        return self._entries[index - self.first_index].term

    @property
    def entries(self) -> tuple[Entry, ...]:
        """Every entry held (after the snapshot), oldest first: a read-only copy."""
        return tuple(self._entries)

    def entry(self, index: int) -> Entry:
        if not self.first_index <= index <= self.last_index:
            raise IndexError(f"index {index} is outside {self.first_index}..{self.last_index}")
        return self._entries[index - self.first_index]

    def slice(self, start: int, end: int, max_bytes: int) -> tuple[Entry, ...]:
        """Entries start..end-1, stopping early past ``max_bytes`` (at least one)."""
        out: list[Entry] = []
        size = 0
        for index in range(max(start, self.first_index), min(end, self.last_index + 1)):
            entry = self.entry(index)
            size += len(entry.data) + 32
            if out and size > max_bytes:
                break
            out.append(entry)
        return tuple(out)

    def append(self, entries: tuple[Entry, ...] | list[Entry]) -> int | None:
        """Append, truncating a conflicting suffix first; returns the index the durable
        log must be truncated from (None if nothing was cut)."""
        truncated: int | None = None
        for entry in entries:
            if entry.index <= self.snapshot.index:
                continue
            existing = self.term_at(entry.index)
            if existing is not None and entry.index <= self.last_index:
                if existing == entry.term:
                    continue
                del self._entries[entry.index - self.first_index:]
                truncated = entry.index if truncated is None else min(truncated, entry.index)
            if entry.index != self.last_index + 1:
                raise ValueError(f"append at {entry.index} leaves a gap after {self.last_index}")
            self._entries.append(entry)
        return truncated

    def first_index_of_term(self, term: int, at_or_below: int) -> int:
        """Walk back from ``at_or_below`` to the first index of the same term."""
        index = at_or_below
        while index - 1 >= self.first_index and self.term_at(index - 1) == term:
            index -= 1
        return index

    def last_index_of_term(self, term: int) -> int | None:
        for index in range(self.last_index, self.snapshot.index, -1):
            t = self.term_at(index)
            if t == term:
                return index
            if t is not None and t < term:
                return None
        return None

    def compact(self, snapshot: SnapshotMeta) -> None:
        """Drop entries covered by ``snapshot``; keep any that follow it if they match."""
        if snapshot.index <= self.snapshot.index:
            return
        keep: list[Entry] = []
        if self.term_at(snapshot.index) == snapshot.term:
            keep = self._entries[snapshot.index + 1 - self.first_index:]
        self.snapshot = snapshot
        self._entries = keep

    def latest_membership(self) -> tuple[int, Membership]:
        """The newest membership in the log (entries first, then the snapshot's)."""
        for entry in reversed(self._entries):
            if entry.kind is EntryKind.MEMBERSHIP:
                return entry.index, Membership.decode(entry.data)
        return self.snapshot.index, self.snapshot.membership

    def membership_at(self, index: int) -> Membership:
        """The membership in force after applying everything up to ``index``."""
        for i in range(min(index, self.last_index), self.snapshot.index, -1):
            entry = self.entry(i)
            if entry.kind is EntryKind.MEMBERSHIP:
                return Membership.decode(entry.data)
        return self.snapshot.membership
