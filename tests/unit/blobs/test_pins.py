"""ChunkPins: counts, the touched set of a GC step, and the holding() context."""

from __future__ import annotations

import pytest

from node.blobs.pins import ChunkPins

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


def test_fresh_pins_allow_everything() -> None:
    pins = ChunkPins()
    pins.begin_step(0.0)
    assert pins.collectable(A)
    assert len(pins) == 0


def test_pinned_chunk_is_not_collectable() -> None:
    pins = ChunkPins()
    pins.pin(A)
    pins.begin_step(0.0)
    assert not pins.collectable(A)
    assert pins.collectable(B)
    assert len(pins) == 1


def test_pins_are_counted() -> None:
    pins = ChunkPins()
    pins.pin(A)
    pins.pin(A)
    pins.unpin(A)
    pins.begin_step(0.0)
    assert not pins.collectable(A)
    pins.unpin(A)
    assert len(pins) == 0
    pins.begin_step(0.0)
    assert pins.collectable(A)


def test_touch_during_step_blocks_collection() -> None:
    pins = ChunkPins()
    pins.begin_step(0.0)
    pins.pin(A)
    pins.unpin(A)
    assert len(pins) == 0
    assert not pins.collectable(A)  # pinned and unpinned since the step began
    pins.begin_step(0.0)
    assert pins.collectable(A)  # a new step forgets it


def test_unpin_alone_during_step_blocks_collection() -> None:
    pins = ChunkPins()
    pins.pin(A)
    pins.begin_step(0.0)
    pins.unpin(A)
    assert not pins.collectable(A)


def test_holding_pins_for_the_block() -> None:
    pins = ChunkPins()
    with pins.holding([A, B]) as held:
        assert held == [A, B]
        assert len(pins) == 2
        held.append(C)
        pins.pin(C)  # whoever appends also pins
        assert len(pins) == 3
    assert len(pins) == 0
    pins.begin_step(0.0)
    assert all(pins.collectable(d) for d in (A, B, C))


def test_holding_unpins_on_error() -> None:
    pins = ChunkPins()
    with pytest.raises(RuntimeError):
        with pins.holding([A, A]):
            assert len(pins) == 1
            raise RuntimeError("boom")
    assert len(pins) == 0


def test_holding_nests_with_other_pins() -> None:
    pins = ChunkPins()
    pins.pin(A)
    with pins.holding([A]):
        pass
    pins.begin_step(0.0)
    assert not pins.collectable(A)


# -- holds for peers' uploads ----------------------------------------------------------------

U1, U2 = b"1" * 16, b"2" * 16


def test_held_chunk_is_kept_until_its_hold_lapses() -> None:
    pins = ChunkPins()
    pins.hold("peer", U1, A, until=10.0)
    pins.begin_step(9.0)
    assert not pins.collectable(A)
    assert pins.holds == 1
    pins.begin_step(10.0)  # "until" itself still holds
    assert not pins.collectable(A)
    pins.begin_step(10.5)
    assert pins.collectable(A)
    assert pins.holds == 0


def test_renewal_extends_only_a_live_hold() -> None:
    pins = ChunkPins()
    pins.hold("peer", U1, A, until=10.0)
    assert pins.renew("peer", U1, until=20.0)
    assert not pins.renew("other", U1, until=20.0), "keyed by the peer too"
    pins.begin_step(15.0)
    assert not pins.collectable(A)
    pins.begin_step(21.0)
    assert not pins.renew("peer", U1, until=30.0), "lapsed: the uploader must learn it"
    assert pins.collectable(A)


def test_holds_of_two_uploads_on_one_chunk_are_counted() -> None:
    pins = ChunkPins()
    pins.hold("p1", U1, A, until=10.0)
    pins.hold("p1", U1, A, until=5.0)  # the same upload again: one hold, not shortened
    pins.hold("p2", U2, A, until=20.0)
    pins.hold("p2", U2, B, until=20.0)
    pins.begin_step(15.0)
    assert not pins.collectable(A) and not pins.collectable(B)
    pins.begin_step(25.0)
    assert pins.collectable(A) and pins.collectable(B)


def test_a_hold_taken_or_lapsing_during_a_step_counts_as_a_touch() -> None:
    pins = ChunkPins()
    pins.begin_step(0.0)
    pins.hold("peer", U1, A, until=1.0)
    assert not pins.collectable(A)
    pins.hold("peer", U2, B, until=1.0)
    pins.begin_step(0.5)
    pins.expire(2.0)  # lapsed mid-step: kept this step, collectable in the next
    assert not pins.collectable(A) and not pins.collectable(B)
    pins.begin_step(2.0)
    assert pins.collectable(A) and pins.collectable(B)
