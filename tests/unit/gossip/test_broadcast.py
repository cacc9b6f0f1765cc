"""The piggyback queue (node.gossip.broadcast): one update per member, transmit limits."""

from __future__ import annotations

import random

from node.gossip.broadcast import BroadcastQueue
from node.gossip.messages import Alive, Dead, MemberMeta, Suspect, Update
from node.gossip.wire import update_size


def alive(i: int, incarnation: int = 0, pad: int = 0) -> Alive:
    return Alive(incarnation, MemberMeta(f"n{i}", f"10.0.0.{i}:7946", "x" * pad))


def size_10(update: Update) -> int:
    return 10


def test_empty_queue_takes_nothing() -> None:
    q = BroadcastQueue()
    assert len(q) == 0
    assert q.take(1000, size_10, 5) == []


def test_one_entry_per_member_the_newest_replaces_the_older() -> None:
    q = BroadcastQueue()
    q.put(alive(1))
    q.put(Suspect("n1", 0, "n2"))
    q.put(alive(2))
    assert len(q) == 2
    q.put(Dead("n1", 0, "n3"))
    assert len(q) == 2
    taken = q.take(1000, size_10, 5)
    assert sorted(taken, key=str) == sorted([Dead("n1", 0, "n3"), alive(2)], key=str)


def test_replacing_resets_the_transmit_count() -> None:
    q = BroadcastQueue()
    q.put(alive(1))
    for _ in range(2):
        assert q.take(1000, size_10, 3) == [alive(1)]
    q.put(alive(1, 1))
    for _ in range(3):
        assert q.take(1000, size_10, 3) == [alive(1, 1)]
    assert q.take(1000, size_10, 3) == []
    assert len(q) == 0


def test_each_update_goes_out_exactly_limit_times_then_leaves() -> None:
    q = BroadcastQueue()
    for i in range(5):
        q.put(alive(i))
    sent: dict[str, int] = {}
    for _ in range(20):
        for u in q.take(1000, size_10, 4):
            sent[u.node_id] = sent.get(u.node_id, 0) + 1
    assert sent == {f"n{i}": 4 for i in range(5)}
    assert len(q) == 0


def test_limit_one_sends_once() -> None:
    q = BroadcastQueue()
    q.put(alive(1))
    assert q.take(1000, size_10, 1) == [alive(1)]
    assert len(q) == 0


def test_least_transmitted_first_then_newest() -> None:
    q = BroadcastQueue()
    q.put(alive(1))
    q.put(alive(2))
    # Room for one: the newest of the never-sent goes first.
    assert q.take(10, size_10, 10) == [alive(2)]
    assert q.take(10, size_10, 10) == [alive(1)]
    q.put(alive(3))
    assert q.take(10, size_10, 10) == [alive(3)]
    # Now all sent once: newest first again.
    assert q.take(30, size_10, 10) == [alive(3), alive(2), alive(1)]
    q.put(alive(4))
    assert q.take(20, size_10, 10) == [alive(4), alive(3)]


def test_fair_rotation_when_the_budget_is_small() -> None:
    q = BroadcastQueue()
    for i in range(10):
        q.put(alive(i))
    counts: dict[str, int] = {}
    for _ in range(10):
        for u in q.take(30, size_10, 100):
            counts[u.node_id] = counts.get(u.node_id, 0) + 1
    assert counts == {f"n{i}": 3 for i in range(10)}


def test_budget_is_respected_and_smaller_updates_fill_the_gaps() -> None:
    q = BroadcastQueue()
    big = alive(1, pad=200)
    small = Suspect("n2", 0, "n3")
    q.put(small)
    q.put(big)  # newer, so first in line, but it does not fit
    budget = update_size(small) + 5
    assert q.take(budget, update_size, 5) == [small]
    assert len(q) == 2  # the big one waits, untouched
    assert q.take(update_size(big), update_size, 5) == [big]


def test_an_update_that_never_fits_is_never_taken() -> None:
    q = BroadcastQueue()
    q.put(alive(1, pad=300))
    for _ in range(5):
        assert q.take(50, update_size, 3) == []
    assert len(q) == 1


def test_zero_or_negative_budget_takes_nothing_and_counts_nothing() -> None:
    q = BroadcastQueue()
    q.put(alive(1))
    assert q.take(0, size_10, 2) == []
    assert q.take(-100, size_10, 2) == []
    assert q.take(10, size_10, 2) == [alive(1)]
    assert q.take(10, size_10, 2) == [alive(1)]
    assert q.take(10, size_10, 2) == []


def test_random_workload_keeps_every_invariant() -> None:
    rng = random.Random(3)
    q = BroadcastQueue()
    latest: dict[str, Update] = {}
    sent: dict[str, int] = {}  # transmissions of the latest update about each member
    limit = 6
    for _ in range(3000):
        if rng.random() < 0.4:
            i = rng.randrange(40)
            u: Update = alive(i, rng.randrange(100), pad=rng.randrange(0, 120))
            q.put(u)
            latest[u.node_id] = u
            sent[u.node_id] = 0
        else:
            budget = rng.randrange(0, 600)
            taken = q.take(budget, update_size, limit)
            assert sum(update_size(u) for u in taken) <= budget
            assert len({u.node_id for u in taken}) == len(taken)
            for u in taken:
                assert latest[u.node_id] == u  # only the newest about a member goes out
                sent[u.node_id] += 1
                assert sent[u.node_id] <= limit
        assert len(q) <= len(latest)
