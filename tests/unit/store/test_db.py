"""A full disk under sqlite: a failed write leaves no open transaction, and the writes the
node cannot go on without wait for space instead of failing (found by the fault campaign:
a node whose disk filled up died on its Raft log write)."""

from __future__ import annotations

import errno
import sqlite3
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from node.store.db import Database, is_disk_full, until_stored, write_transaction


def test_full_disk_errors_are_recognised_and_others_are_not() -> None:
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(sqlite3.OperationalError("database is locked"))
    assert not is_disk_full(OSError(errno.EIO, "I/O error"))


async def test_a_write_that_fills_the_database_rolls_back_and_the_next_one_works(
        tmp_path: Path) -> None:
    db = Database(tmp_path / "full.sqlite")
    try:
        await db.write(lambda c: c.execute("CREATE TABLE t (v BLOB)"))
        pages = await db.write(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        await db.write(lambda c: c.execute(f"PRAGMA max_page_count = {pages + 2}"))

        def fill(conn: sqlite3.Connection) -> None:
            with write_transaction(conn):
                for _ in range(50):
                    conn.execute("INSERT INTO t VALUES (zeroblob(4096))")

        with pytest.raises(sqlite3.OperationalError) as caught:
            await db.write(fill)
        assert is_disk_full(caught.value)
        assert not await db.write(lambda c: c.in_transaction)
        assert await db.read(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 0

        await db.write(lambda c: c.execute("PRAGMA max_page_count = 1000000"))
        await db.write(fill)  # space is back: the same write now commits whole
        assert await db.read(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 50
    finally:
        db.close()


async def test_until_stored_waits_out_a_full_disk_with_growing_pauses(
        autojump_clock: trio.testing.MockClock) -> None:
    tries: list[float] = []

    async def attempt() -> str:
        tries.append(trio.current_time())
        if len(tries) < 5:
            raise sqlite3.OperationalError("database or disk is full")
        return "stored"

    assert await until_stored(attempt, "the test write") == "stored"
    gaps = [b - a for a, b in zip(tries, tries[1:])]
    assert gaps == sorted(gaps) and gaps[0] > 0 and gaps[-1] <= 5.0


async def test_until_stored_passes_other_errors_through_at_once() -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        await until_stored(attempt, "the test write")
    assert calls == 1


async def test_a_node_stopping_while_its_disk_is_full_is_not_held_up(
        autojump_clock: trio.testing.MockClock) -> None:
    async def attempt() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with trio.move_on_after(30) as scope:
        await until_stored(attempt, "the test write")
    assert scope.cancelled_caught


async def test_a_normal_sync_database_is_made_durable_on_demand(tmp_path: Path) -> None:
    """NORMAL commits do not fsync; make_durable checkpoints the WAL into the database
    file (synced), so what was committed no longer depends on the WAL."""
    db = Database(tmp_path / "n.sqlite3", synchronous="NORMAL")

    def insert(i: int, c: sqlite3.Connection) -> sqlite3.Cursor:
        return c.execute("INSERT INTO t VALUES (?)", (i,))

    try:
        await db.write(lambda c: c.execute("CREATE TABLE t (x INTEGER)"))
        for i in range(50):
            await db.write(partial(insert, i))
        assert (tmp_path / "n.sqlite3-wal").stat().st_size > 0
        await db.make_durable()
        copy = tmp_path / "copy.sqlite3"
        copy.write_bytes((tmp_path / "n.sqlite3").read_bytes())  # the main file alone
        other = Database(copy)
        try:
            assert await other.read(lambda c: c.execute("SELECT count(*) FROM t").fetchone()
                                    [0]) == 50
        finally:
            other.close()
    finally:
        db.close()


def test_synchronous_must_be_full_or_normal(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Database(tmp_path / "x.sqlite3", synchronous="OFF")
