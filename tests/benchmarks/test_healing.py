"""blobstore-healing end to end on a tiny cluster load: it heals, prints and writes JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.healing import main

pytestmark = pytest.mark.e2e


def test_the_command_measures_a_heal_and_cleans_up(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "healing.json"
    work = tmp_path / "work"
    work.mkdir()
    code = main(["--total", "4MiB", "--blob-size", "512KiB", "--chunk-size", "64KiB",
                 "--gossip-preset", "tests", "--heal-timeout-s", "20",
                 "--start-timeout-s", "30", "--upload-timeout-s", "30",
                 "--dir", str(work), "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed[-6000:]
    assert "healing after one SIGKILL" in printed
    figures = json.loads(out.read_text())["figures"]
    assert figures["blobs"] == 8 and figures["chunks"] == 64 and figures["copies"] == 192
    assert figures["victim"] != figures["coordinator"]
    assert 0 < figures["dead_first_s"] <= figures["dead_all_s"]
    # With the default heal interval (10 minutes) only the ring change can have healed it,
    # and the counters must say so as soon as the copies are back.
    assert figures["dead_first_s"] <= figures["copies_restored_s"] <= figures["counters_zero_s"]
    assert figures["copies_made"] == figures["victim_copies"] > 0
    assert figures["read_back_errors"] == 0 and not figures["problems"]
    assert list(work.iterdir()) == []  # the cluster's directory is gone
