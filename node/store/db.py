"""sqlite on worker threads: the only module that imports sqlite3.

aiosqlite does not run under trio, and a sqlite call on the event loop would
stall every request, so each call runs in ``trio.to_thread.run_sync``. There is
one writer connection (writes are serialised by a limiter of one, which is also
what makes group commit work: a batch is one transaction and one fsync) and a
small pool of reader connections that WAL lets run beside the writer.

Durability: WAL with ``synchronous=FULL`` by default, so a committed transaction
survives a power cut, not just a process crash. A database whose every change can
be replayed from another durable record may use ``NORMAL`` (the metadata, rebuilt
from the Raft log): a commit then costs no fsync, a process crash still loses
nothing, and a power cut loses only the last commits, until ``make_durable``,
which its owner calls before that other record forgets them.

A full disk: a write the node cannot go on without (its Raft log, applying
committed entries) is retried by ``until_stored`` instead of failing, so the
node stalls, keeps its promises and resumes when space comes back, rather than
dying or skipping an entry.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import trio

from node.store.files import replace_durably

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Pauses between tries of a write that found the disk full: short, doubling to a cap.
FULL_DISK_RETRY_S = (0.2, 5.0)

Connection = sqlite3.Connection
DatabaseError = sqlite3.DatabaseError
IntegrityError = sqlite3.IntegrityError


def _connect(path: Path, synchronous: str = "FULL") -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=30.0, cached_statements=256)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=OFF")
    return conn


class Database:
    """One sqlite file, reached only through worker threads.

    Resource handling: ``close()`` closes every connection; it must not be
    called while a call is in flight (the node closes it after its nursery).
    """

    def __init__(self, path: Path, *, readers: int = 2, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        self.path = path
        self._writer = _connect(path, synchronous)
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

    async def make_durable(self) -> None:
        """Everything committed so far is on disk when this returns (a checkpoint that
        syncs the database file: only needed with ``synchronous="NORMAL"``)."""
        def checkpoint(conn: sqlite3.Connection) -> None:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
            if busy:
                raise DatabaseError("a checkpoint could not complete (readers in the way)")
        await self.write(checkpoint)

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
    (or is cancelled, or the commit itself fails, as on a full disk)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # sqlite has already rolled back after some errors (SQLITE_FULL)
            conn.execute("ROLLBACK")
        raise


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the quota) is full, from sqlite or the OS."""
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or \
            "disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


async def until_stored(attempt: Callable[[], Awaitable[T]], what: str) -> T:
    """``await attempt()`` until it does not fail for a full disk; other errors propagate.

    Each attempt is shielded from cancellation (it must finish or fail whole); the pauses
    between attempts are not, so a node whose disk stays full can still be stopped.
    """
    pause, cap = FULL_DISK_RETRY_S
    stalled = False
    while True:
        with trio.CancelScope(shield=True):
            try:
                result = await attempt()
            except (sqlite3.OperationalError, OSError) as exc:
                if not is_disk_full(exc):
                    raise
                if not stalled:
                    log.warning("the disk is full: %s waits for space", what,
                                extra={"why": str(exc)})
                stalled = True
            else:
                if stalled:
                    log.warning("disk space is back: %s goes on", what)
                return result
        await trio.sleep(pause)
        pause = min(pause * 2, cap)


def _backup(conn: sqlite3.Connection, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        copy = sqlite3.connect(tmp)
        try:
            conn.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal
        finally:
            copy.close()
        replace_durably(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a half-written copy must not keep a full disk full
        raise


def _in_read_txn(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    conn.execute("BEGIN")
    try:
        return fn(conn)
    finally:
        conn.execute("ROLLBACK")
