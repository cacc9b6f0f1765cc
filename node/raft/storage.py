"""Raft's durable state in sqlite: term, vote and fence, the log, the snapshot's meta.

The functions take a connection and run on the database's writer thread
(``Database.write``); each ``save`` is one transaction, so one fsync covers a
whole ``Ready`` (WAL with ``synchronous=FULL``). The state machine itself is
the metadata in its own sqlite file, durable at its applied index, so a
snapshot for compaction needs no copy: the log may be cut at any index the
state machine has applied.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.raft.core import HardState, Ready
from node.raft.messages import Entry, EntryKind, Membership, SnapshotMeta
from node.store.db import Connection, write_transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS raft_hard_state (
    id INTEGER PRIMARY KEY CHECK (id = 1), term INTEGER NOT NULL, voted_for TEXT, fence TEXT);
CREATE TABLE IF NOT EXISTS raft_log (
    idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, kind INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS raft_group (
    id INTEGER PRIMARY KEY CHECK (id = 1), group_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS raft_snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 1), idx INTEGER NOT NULL, term INTEGER NOT NULL,
    membership BLOB NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Stored:
    hard_state: HardState
    snapshot: SnapshotMeta | None
    entries: list[Entry]

    @property
    def empty(self) -> bool:
        return self.snapshot is None and not self.entries and self.hard_state.term == 0


def create(conn: Connection) -> None:
    conn.executescript(SCHEMA)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(raft_hard_state)")}
    if "fence" not in columns:  # written before fences existed
        conn.execute("ALTER TABLE raft_hard_state ADD COLUMN fence TEXT")


def load(conn: Connection) -> Stored:
    create(conn)
    row = conn.execute("SELECT term, voted_for, fence FROM raft_hard_state WHERE id = 1"
                       ).fetchone()
    hard = HardState(row[0], row[1], row[2]) if row else HardState(0, None)
    row = conn.execute("SELECT idx, term, membership FROM raft_snapshot WHERE id = 1").fetchone()
    snapshot = SnapshotMeta(row[0], row[1], Membership.decode(row[2])) if row else None
    start = snapshot.index if snapshot else 0
    entries = [Entry(i, t, EntryKind(k), bytes(d)) for i, t, k, d in conn.execute(
        "SELECT idx, term, kind, data FROM raft_log WHERE idx > ? ORDER BY idx", (start,))]
    # A crash between a truncation and its re-append cannot leave a gap (one transaction),
    # but be strict: keep only the contiguous prefix.
    contiguous: list[Entry] = []
    for entry in entries:
        if entry.index != start + len(contiguous) + 1:
            break
        contiguous.append(entry)
    return Stored(hard, snapshot, contiguous)


def has_state(conn: Connection) -> bool:
    """Whether this node was ever part of a Raft group (cheap: no log is read)."""
    create(conn)
    return any(conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
               for table in ("raft_hard_state", "raft_snapshot", "raft_log"))


def group_id(conn: Connection) -> str | None:
    """The id of the Raft group this node belongs to (None: not decided yet)."""
    create(conn)
    row = conn.execute("SELECT group_id FROM raft_group WHERE id = 1").fetchone()
    return str(row[0]) if row else None


def save_start(conn: Connection, group: str | None, fence: str | None) -> None:
    """What a node with empty Raft state decided, in one transaction, before its driver
    first runs: the group it belongs to (if known), and the fence it starts with (if it
    joins an existing group: ``HardState.fence``)."""
    create(conn)
    with write_transaction(conn):
        if group is not None:
            conn.execute("INSERT OR REPLACE INTO raft_group (id, group_id) VALUES (1, ?)",
                         (group,))
        if fence is not None:
            conn.execute("INSERT OR REPLACE INTO raft_hard_state (id, term, voted_for, fence) "
                         "VALUES (1, 0, NULL, ?)", (fence,))


def save(conn: Connection, ready: Ready) -> None:
    """Make ``ready``'s persistent parts durable, in one transaction."""
    if ready.hard_state is None and ready.truncate_from is None and not ready.entries \
            and ready.snapshot is None:
        return
    with write_transaction(conn):
        if ready.snapshot is not None:
            _record_snapshot(conn, ready.snapshot.meta)
        if ready.truncate_from is not None:
            conn.execute("DELETE FROM raft_log WHERE idx >= ?", (ready.truncate_from,))
        floor = ready.snapshot.meta.index if ready.snapshot is not None else 0
        entries = [e for e in ready.entries if e.index > floor]  # a snapshot covers the rest
        if entries:
            conn.executemany(
                "INSERT OR REPLACE INTO raft_log (idx, term, kind, data) VALUES (?, ?, ?, ?)",
                [(e.index, e.term, int(e.kind), e.data) for e in entries])
        if ready.hard_state is not None:
            hard = ready.hard_state
            conn.execute("INSERT OR REPLACE INTO raft_hard_state (id, term, voted_for, fence) "
                         "VALUES (1, ?, ?, ?)", (hard.term, hard.voted_for, hard.fence))


def clear_log(conn: Connection) -> None:
    """Drop every log entry (before installing a snapshot the log conflicts with)."""
    with write_transaction(conn):
        conn.execute("DELETE FROM raft_log")


def compact(conn: Connection, meta: SnapshotMeta) -> None:
    """Forget the log up to ``meta.index`` (the state machine has applied it)."""
    with write_transaction(conn):
        _record_snapshot(conn, meta)


def _record_snapshot(conn: Connection, meta: SnapshotMeta) -> None:
    conn.execute("INSERT OR REPLACE INTO raft_snapshot (id, idx, term, membership) "
                 "VALUES (1, ?, ?, ?)", (meta.index, meta.term, meta.membership.encode()))
    conn.execute("DELETE FROM raft_log WHERE idx <= ?", (meta.index,))
