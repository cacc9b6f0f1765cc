"""Ring: placement built from a membership view."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from node.gossip.members import Member, MembershipView, MemberState
from node.ring.ring import Ring, single_node_view


def member(node_id: str, state: MemberState = MemberState.ALIVE, weight: int = 1,
           zone: str = "") -> Member:
    return Member(node_id, f"{node_id}:8080", f"{node_id}:7946", state=state, weight=weight,
                  zone=zone)


def view(*members: Member, version: int = 7) -> MembershipView:
    return MembershipView(members=tuple(members), version=version)


KEYS = [hashlib.sha256(str(i).encode()).digest() for i in range(500)]
FIVE = view(*(member(f"n{i}") for i in range(1, 6)))


def test_build_takes_live_members_and_the_view_version() -> None:
    """Suspects stay in the ring (presumed alive until declared dead); dead and left go."""
    ring = Ring.build(view(member("b"), member("a"), member("s", MemberState.SUSPECT),
                           member("d", MemberState.DEAD), member("l", MemberState.LEFT),
                           version=42))
    assert ring.epoch == 42
    assert ring.node_ids == ("a", "b", "s")
    for key in KEYS[:50]:
        assert set(ring.replicas_for(key, 5)) == {"a", "b", "s"}


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_replicas_are_distinct_nodes(count: int) -> None:
    ring = Ring.build(FIVE)
    for key in KEYS:
        replicas = ring.replicas_for(key, count)
        assert len(replicas) == count
        assert len(set(replicas)) == count
        assert set(replicas) <= set(ring.node_ids)


def test_fewer_replicas_when_the_ring_is_small() -> None:
    ring = Ring.build(FIVE)
    assert sorted(ring.replicas_for(KEYS[0], 9)) == [f"n{i}" for i in range(1, 6)]
    assert ring.replicas_for(KEYS[0], 0) == ()


def test_walk_visits_every_node_once_owners_first() -> None:
    ring = Ring.build(FIVE)
    for key in KEYS[:100]:
        walked = list(ring.walk(key))
        assert sorted(walked) == sorted(ring.node_ids)
        assert tuple(walked[:3]) == ring.replicas_for(key, 3)


def test_deterministic_across_builds_and_member_order() -> None:
    first = Ring.build(FIVE)
    again = Ring.build(FIVE)
    shuffled = Ring.build(view(*reversed(FIVE.members)))
    assert first == again == shuffled  # the same epoch and nodes compare equal
    for key in KEYS:
        assert first.replicas_for(key, 3) == again.replicas_for(key, 3) \
            == shuffled.replicas_for(key, 3)


def test_single_node() -> None:
    me = member("solo")
    solo_view = single_node_view(me)
    assert solo_view.members == (me,) and solo_view.version == 1
    ring = Ring.build(solo_view)
    assert ring.node_ids == ("solo",)
    assert ring.epoch == 1
    for key in KEYS[:20]:
        assert ring.replicas_for(key, 1) == ("solo",)
        assert ring.replicas_for(key, 3) == ("solo",)
        assert list(ring.walk(key)) == ["solo"]


def test_empty_ring() -> None:
    ring = Ring.build(view())
    assert ring.node_ids == ()
    assert list(ring.walk(KEYS[0])) == []
    assert ring.replicas_for(KEYS[0], 3) == ()


def test_keys_spread_over_nodes() -> None:
    ring = Ring.build(FIVE)
    owners = Counter(ring.replicas_for(key, 1)[0] for key in KEYS)
    assert set(owners) == set(ring.node_ids)
    assert min(owners.values()) > len(KEYS) / 5 / 3  # no node starves


def test_removing_a_node_moves_only_its_keys() -> None:
    before = Ring.build(FIVE)
    after = Ring.build(view(*(m for m in FIVE.members if m.node_id != "n3"), version=8))
    moved = 0
    for key in KEYS:
        old = before.replicas_for(key, 1)[0]
        new = after.replicas_for(key, 1)[0]
        if old != "n3":
            assert new == old
        else:
            moved += 1
            # The next node clockwise takes over.
            assert new == before.replicas_for(key, 2)[1]
    assert moved > 0


def test_weight_attracts_more_keys() -> None:
    ring = Ring.build(view(member("light"), member("heavy", weight=4)))
    owners = Counter(ring.replicas_for(key, 1)[0] for key in KEYS)
    assert owners["heavy"] > 2 * owners["light"]


# -- zones, handoffs, weights ----------------------------------------------------------------


ZONED = view(*(member(f"n{i}", zone=f"z{i % 3}") for i in range(9)))


def test_owners_span_distinct_zones_first() -> None:
    ring = Ring.build(ZONED)
    for key in KEYS:
        owners = ring.replicas_for(key, 3)
        assert len({ring.zones[n] for n in owners}) == 3, owners


def test_with_fewer_zones_than_replicas_the_rest_follow_in_ring_order() -> None:
    ring = Ring.build(view(*(member(f"n{i}", zone=f"z{i % 2}") for i in range(6))))
    for key in KEYS[:200]:
        owners = ring.replicas_for(key, 3)
        assert len({ring.zones[n] for n in owners}) == 2 and len(set(owners)) == 3
        walked = list(ring.walk(key))
        # The first of each zone in ring order, then the earliest node not yet taken.
        firsts = [n for i, n in enumerate(walked)
                  if ring.zones[n] not in {ring.zones[m] for m in walked[:i]}]
        third = next(n for n in walked if n not in firsts)
        assert sorted(owners) == sorted([*firsts, third])


def test_without_zones_the_preference_list_is_the_ring_order() -> None:
    ring = Ring.build(FIVE)
    for key in KEYS[:100]:
        assert list(ring.preference(key, 3)) == list(ring.walk(key))


def test_handoffs_are_every_other_node_in_a_stable_order() -> None:
    ring = Ring.build(ZONED)
    again = Ring.build(view(*reversed(ZONED.members)))  # same view, members in another order
    for key in KEYS[:200]:
        owners, handoffs = ring.replicas_for(key, 3), ring.handoffs(key, 3)
        assert set(owners).isdisjoint(handoffs)
        assert sorted(owners + handoffs) == sorted(ring.node_ids)
        assert (again.replicas_for(key, 3), again.handoffs(key, 3)) == (owners, handoffs)


def test_weights_give_proportional_shares() -> None:
    ring = Ring.build(view(member("small"), member("big", weight=3), member("mid", weight=2)))
    keys = [hashlib.sha256(b"w%d" % i).digest() for i in range(6000)]
    firsts = Counter(ring.replicas_for(k, 1)[0] for k in keys)
    assert 2.4 < firsts["big"] / firsts["small"] < 3.6, firsts
    assert 1.6 < firsts["mid"] / firsts["small"] < 2.4, firsts


def test_walk_is_uhashrings_own_ring_order() -> None:
    """The walk reimplements uhashring's ``range`` (which is O(continuum) per call) over
    its public continuum; both must give the same order."""
    ring = Ring.build(view(*(member(f"n{i}", weight=1 + i % 3) for i in range(23))))
    for key in KEYS:
        expected = [n["nodename"] for n in ring._ring.range(key.hex(), None, unique=True)]
        assert list(ring.walk(key)) == expected
