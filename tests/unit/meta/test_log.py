"""LocalLog: group commit of concurrent submits, domain errors, shutdown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from node.errors import ContainerExists, Unavailable, UserNotFound
from node.meta import commands as c
from node.meta.log import LocalLog
from node.meta.records import Container, User
from node.meta.state import MetaState
from node.store.db import Database

T = "2026-01-01T00:00:00.000Z"


class Recorder:
    def __init__(self) -> None:
        self.batches: list[tuple[int, float]] = []

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batches.append((size, seconds))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "m.db")
    yield database
    database.close()


def new_state(db: Database) -> MetaState:
    state = MetaState()
    db.write_sync(state.load)
    return state


def user(n: int) -> c.CreateUser:
    return c.CreateUser(username=f"user{n}", role="user", password_hash=f"h{n}", now=T)


async def test_concurrent_submits_are_batched(db: Database) -> None:
    state = new_state(db)
    recorder = Recorder()
    log = LocalLog(state, db, "n1", observer=recorder)
    results: dict[int, object] = {}

    async def submit(n: int) -> None:
        results[n] = await log.submit(user(n))

    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        async with trio.open_nursery() as submitters:
            for n in range(50):
                submitters.start_soon(submit, n)
        nursery.cancel_scope.cancel()

    assert set(results) == set(range(50))
    for n, result in results.items():
        assert isinstance(result, User) and result.username == f"user{n}"
    # Every command got its own index: uids are 1..50, each once.
    assert sorted(r.uid for r in results.values()) == list(range(1, 51))  # type: ignore[attr-defined]
    sizes = [size for size, _ in recorder.batches]
    assert sum(sizes) == 50
    assert max(sizes) > 1, sizes
    assert all(seconds >= 0 for _, seconds in recorder.batches)
    assert state.applied_index == 50
    assert log.status().commit_index == 50
    assert log.status().leader == "n1"
    assert set(state.view.users) == {f"user{n}" for n in range(50)}


async def test_batch_max_caps_batches(db: Database) -> None:
    state = new_state(db)
    recorder = Recorder()
    log = LocalLog(state, db, "n1", batch_max=4, observer=recorder)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        async with trio.open_nursery() as submitters:
            for n in range(30):
                submitters.start_soon(log.submit, user(n))
        nursery.cancel_scope.cancel()
    sizes = [size for size, _ in recorder.batches]
    assert sum(sizes) == 30
    assert max(sizes) <= 4
    assert max(sizes) > 1


async def test_domain_error_raises_from_submit(db: Database) -> None:
    state = new_state(db)
    log = LocalLog(state, db, "n1")
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        created = await log.submit(c.CreateContainer(container="k", owner="o", owner_uid=1,
                                                     now=T))
        assert isinstance(created, Container)
        with pytest.raises(ContainerExists):
            await log.submit(c.CreateContainer(container="k", owner="o", owner_uid=1, now=T))
        with pytest.raises(UserNotFound):
            await log.submit(c.DeleteUser(username="nobody"))
        # The log keeps working after errors.
        assert await log.submit(c.DeleteContainer(container="k")) is None
        nursery.cancel_scope.cancel()
    assert state.applied_index == 4


async def test_errors_in_a_batch_reach_only_their_submitter(db: Database) -> None:
    state = new_state(db)
    log = LocalLog(state, db, "n1")
    outcomes: dict[int, object] = {}

    async def submit(n: int) -> None:
        # Even numbers all try to create the same container: exactly one wins.
        command: c.Command = (c.CreateContainer(container="same", owner="o", owner_uid=1, now=T)
                              if n % 2 == 0 else user(n))
        try:
            outcomes[n] = await log.submit(command)
        except ContainerExists as exc:
            outcomes[n] = exc

    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        async with trio.open_nursery() as submitters:
            for n in range(20):
                submitters.start_soon(submit, n)
        nursery.cancel_scope.cancel()
    evens = [outcomes[n] for n in range(0, 20, 2)]
    assert sum(isinstance(o, Container) for o in evens) == 1
    assert sum(isinstance(o, ContainerExists) for o in evens) == 9
    assert all(isinstance(outcomes[n], User) for n in range(1, 20, 2))


async def test_submit_after_run_is_cancelled_raises_unavailable(db: Database) -> None:
    log = LocalLog(new_state(db), db, "n1")
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        await log.submit(user(1))
        nursery.cancel_scope.cancel()
    with pytest.raises(Unavailable):
        await log.submit(user(2))


async def test_queued_submits_fail_when_run_stops(db: Database) -> None:
    log = LocalLog(new_state(db), db, "n1")
    outcomes: list[BaseException] = []

    async def submit(n: int) -> None:
        try:
            await log.submit(user(n))
        except Unavailable as exc:
            outcomes.append(exc)

    async with trio.open_nursery() as outer:
        # Submit while no batcher is running, then run it already cancelled: the queued
        # commands must be failed, not left waiting forever.
        for n in range(5):
            outer.start_soon(submit, n)
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            scope.cancel()
            await log.run()
    assert len(outcomes) == 5


async def test_read_barrier_returns(db: Database) -> None:
    log = LocalLog(new_state(db), db, "n1")
    await log.read_barrier()
    assert log.status().commit_index == 0
