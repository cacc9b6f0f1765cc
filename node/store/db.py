"""sqlite on worker threads: the only module that imports sqlite3.

aiosqlite does not run under trio, and a sqlite call on the event loop would
stall every request, so each call runs in ``trio.to_thread.run_sync``. There is
one writer connection (writes are serialised by a limiter of one, which is also
what makes group commit work: a batch is one transaction and one fsync) and a
small pool of reader connections that WAL lets run beside the writer.

Durability: WAL with ``synchronous=FULL``, so a committed transaction survives
a power cut, not just a process crash.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import trio

from node.store.files import replace_durably

T = TypeVar("T")

Connection = sqlite3.Connection
DatabaseError = sqlite3.DatabaseError
IntegrityError = sqlite3.IntegrityError


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=30.0, cached_statements=256)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=OFF")
    return conn


class Database:
    """One sqlite file, reached only through worker threads.

    Resource handling: ``close()`` closes every connection; it must not be
    called while a call is in flight (the node closes it after its nursery).
    """

    def __init__(self, path: Path, *, readers: int = 2) -> None:
        self.path = path
        self._writer = _connect(path)
        self._write_limiter = trio.CapacityLimiter(1)
        self._idle_readers = [_connect(path) for _ in range(readers)]
        self._all_readers = list(self._idle_readers)
        self._read_limiter = trio.CapacityLimiter(readers)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the writer connection; ``fn`` manages its transaction."""
        return await trio.to_thread.run_sync(fn, self._writer, limiter=self._write_limiter)

    def write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """For start-up only, before any task could be using the writer."""
        return fn(self._writer)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on a reader connection inside one read transaction."""
        async with self._read_limiter:
            conn = self._idle_readers.pop()
            try:
                return await trio.to_thread.run_sync(_in_read_txn, fn, conn)
            finally:
                self._idle_readers.append(conn)

    async def backup_to(self, path: Path) -> None:
        """Write a consistent copy of the database to ``path`` (sqlite's online backup, on
        the writer thread, so it sees every committed write and no half of one); fsynced,
        then renamed into place."""
        await self.write(lambda conn: _backup(conn, path))

    async def restore_from(self, path: Path) -> None:
        """Replace the whole database with the copy at ``path``, in one step (readers see
        the old or the new contents, never a mix)."""
        def restore(conn: sqlite3.Connection) -> None:
            source = sqlite3.connect(path)
            try:
                source.backup(conn)
            finally:
                source.close()
        await self.write(restore)

    def close(self) -> None:
        for conn in self._all_readers:
            conn.close()
        self._writer.close()


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One immediate write transaction: committed if the block ends, rolled back if it raises
    (or is cancelled)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _backup(conn: sqlite3.Connection, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    copy = sqlite3.connect(tmp)
    try:
        conn.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
    finally:
        copy.close()
    replace_durably(tmp, path)


def _in_read_txn(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    conn.execute("BEGIN")
    try:
        return fn(conn)
    finally:
        conn.execute("ROLLBACK")
