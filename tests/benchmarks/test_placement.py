"""The placement benchmark's own arithmetic, on a small ring."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.placement import main, measure


def test_spread_and_movement_are_close_to_ideal_on_a_small_ring() -> None:
    res = measure(10, 3000, 3, seed=1)
    assert res.copies_per_node == 900
    assert 1.0 <= res.max_over_mean < 1.3 and 0 < res.std_over_mean < 0.15
    assert abs(res.join_chunks_moved - res.join_chunks_ideal) < 0.05
    assert abs(res.join_copies_moved - res.join_copies_ideal) < 0.02
    assert abs(res.leave_chunks_moved - res.leave_chunks_ideal) < 0.05
    assert abs(res.leave_copies_moved - res.leave_copies_ideal) < 0.02


def test_the_command_prints_a_table_and_writes_json(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "placement.json"
    main(["--nodes", "3,5", "--chunks", "500", "--json", str(out)])
    assert "placement of 500 chunks" in capsys.readouterr().out
    assert out.read_text().count('"nodes"') == 2
