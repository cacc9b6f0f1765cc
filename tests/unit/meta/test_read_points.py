"""ReadPoints: reads that arrive together share a fetch, and no read is ever answered by a
fetch that started before it arrived."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from node.meta.read_points import ReadPoints


class Leader:
    """A fake coordinator: each fetch takes ``delay_s`` and answers the commit index it saw
    when the fetch *started*; ``commit_index`` moves as writes are acknowledged."""

    def __init__(self, delay_s: float = 0.01) -> None:
        self.delay_s = delay_s
        self.commit_index = 0
        self.started: list[float] = []
        self.fail_next: Exception | None = None

    async def fetch(self) -> int:
        self.started.append(trio.current_time())
        seen = self.commit_index
        await trio.sleep(self.delay_s)
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        return seen


async def test_a_burst_of_reads_shares_one_fetch(autojump_clock: trio.testing.MockClock) -> None:
    leader = Leader()
    points = ReadPoints(leader.fetch)
    answers: list[int] = []

    async def read() -> None:
        answers.append(await points.get())

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(read)
    assert len(answers) == 50
    assert points.fetches == 1 and points.reads == 50


async def test_reads_arriving_during_a_fetch_wait_for_the_next_one(autojump_clock: trio.testing.MockClock) -> None:
    """The safety rule: a read that arrives while a fetch is in flight must not take its
    answer, which could predate a write acknowledged before the read began."""
    leader = Leader(delay_s=1.0)
    points = ReadPoints(leader.fetch)
    got: dict[str, int] = {}

    async def read(name: str) -> None:
        got[name] = await points.get()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read, "first")
        await trio.testing.wait_all_tasks_blocked()
        leader.commit_index = 7  # a write is acknowledged after the first fetch started
        for i in range(5):
            nursery.start_soon(read, f"late{i}")
    assert got["first"] == 0
    assert all(got[f"late{i}"] == 7 for i in range(5)), got
    assert points.fetches == 2  # the five late reads shared one


async def test_every_answer_comes_from_a_fetch_started_after_the_read(autojump_clock: trio.testing.MockClock) -> None:
    leader = Leader(delay_s=0.003)
    violations: list[tuple[float, int]] = []

    async def read() -> None:
        arrived = trio.current_time()
        index = await points.get()
        if leader.started[index] < arrived:
            violations.append((arrived, index))

    async def fetch_numbered() -> int:
        leader.started.append(trio.current_time())
        number = len(leader.started) - 1
        await trio.sleep(leader.delay_s)
        return number

    points = ReadPoints(fetch_numbered)
    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(read)
            await trio.sleep(0.0007 * (i % 5))
    assert not violations
    assert points.fetches < 120  # shared, though reads kept arriving


async def test_an_error_reaches_every_read_of_its_fetch_and_the_next_fetch_works(autojump_clock: trio.testing.MockClock) -> None:
    leader = Leader()
    leader.fail_next = RuntimeError("no quorum")
    points = ReadPoints(leader.fetch)
    outcomes: list[object] = []

    async def read() -> None:
        try:
            outcomes.append(await points.get())
        except RuntimeError as exc:
            outcomes.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(read)
    assert len(outcomes) == 3 and all(isinstance(o, RuntimeError) for o in outcomes)
    assert await points.get() == 0


async def test_a_cancelled_leader_does_not_strand_the_reads_that_joined_it(autojump_clock: trio.testing.MockClock) -> None:
    leader = Leader(delay_s=1.0)
    points = ReadPoints(leader.fetch)
    answers: list[int] = []

    async def read() -> None:
        answers.append(await points.get())

    lead = trio.CancelScope()

    async def leading() -> None:
        with lead:
            await points.get()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)            # in flight: the next gathering must wait for it
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(leading)
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(3):
            nursery.start_soon(read)       # they join the gathering that ``leading`` leads
        await trio.testing.wait_all_tasks_blocked()
        lead.cancel()
    assert len(answers) == 4 and lead.cancelled_caught


@pytest.mark.parametrize("delay_s", [0.0, 0.01])
async def test_sequential_reads_each_get_their_own_fetch(
        delay_s: float, autojump_clock: trio.testing.MockClock) -> None:
    leader = Leader(delay_s)
    points = ReadPoints(leader.fetch)
    for expected in range(3):
        leader.commit_index = expected
        assert await points.get() == expected
    assert points.fetches == 3
