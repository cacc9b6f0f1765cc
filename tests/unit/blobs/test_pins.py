"""ChunkPins: counts, the touched set of a GC step, and the holding() context."""

from __future__ import annotations

import pytest

from node.blobs.pins import ChunkPins

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


def test_fresh_pins_allow_everything() -> None:
    pins = ChunkPins()
    pins.begin_step()
    assert pins.collectable(A)
    assert len(pins) == 0


def test_pinned_chunk_is_not_collectable() -> None:
    pins = ChunkPins()
    pins.pin(A)
    pins.begin_step()
    assert not pins.collectable(A)
    assert pins.collectable(B)
    assert len(pins) == 1


def test_pins_are_counted() -> None:
    pins = ChunkPins()
    pins.pin(A)
    pins.pin(A)
    pins.unpin(A)
    pins.begin_step()
    assert not pins.collectable(A)
    pins.unpin(A)
    assert len(pins) == 0
    pins.begin_step()
    assert pins.collectable(A)


def test_touch_during_step_blocks_collection() -> None:
    pins = ChunkPins()
    pins.begin_step()
    pins.pin(A)
    pins.unpin(A)
    assert len(pins) == 0
    assert not pins.collectable(A)  # pinned and unpinned since the step began
    pins.begin_step()
    assert pins.collectable(A)  # a new step forgets it


def test_unpin_alone_during_step_blocks_collection() -> None:
    pins = ChunkPins()
    pins.pin(A)
    pins.begin_step()
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
    pins.begin_step()
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
    pins.begin_step()
    assert not pins.collectable(A)
