"""The fault-injection campaign (``blobstore-campaign``) against real node processes.

The short campaign runs in every test run: five nodes, each in its own network
namespace where this machine allows it (loopback otherwise, with the network
faults skipped and said so), every fault kind once on a fixed seed, then the
zero-loss verdict of ``tools.campaign.checks``. The long one is opt-in
(``--run-slow``) and takes its length and seed from ``CAMPAIGN_DURATION`` and
``CAMPAIGN_SEED``; ``blobstore-campaign`` runs the same thing from the command
line. A failure prints the report; the nodes' logs and the client history stay
in the test's tmp dir.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tools.campaign.faults import ALL_KINDS
from tools.campaign.runner import Options, run

pytestmark = pytest.mark.e2e

SHORT_SEED = 6


def _verdict(options: Options) -> None:
    report = run(options)
    data = report.as_json()
    print(json.dumps({k: v for k, v in data.items() if k != "faults"}, indent=1)[:20000])
    assert report.passed, (f"campaign failed; replay with: {options.command()}\n"
                           f"report: {options.out}/report.json")
    assert data["acked_writes"] > 0 and data["acked_writes_lost"] == 0
    ran = {f["kind"] for f in data["faults"] if not f["skipped"]}
    skipped = " ".join(data["skipped_fault_kinds"])
    missing = {k for k in ALL_KINDS if k not in ran and k not in skipped}
    assert not missing, f"fault kinds neither run nor reported as skipped: {missing}"


def test_short_campaign_loses_no_acknowledged_write(tmp_path: Path) -> None:
    _verdict(Options(seed=SHORT_SEED, duration_s=80.0, hold_s=(3.0, 5.5), gap_s=3.0,
                     heal_timeout_s=120.0, out=tmp_path / "campaign"))


@pytest.mark.slow
def test_long_campaign_loses_no_acknowledged_write(tmp_path: Path) -> None:
    _verdict(Options(seed=int(os.environ.get("CAMPAIGN_SEED", "1")),
                     duration_s=float(os.environ.get("CAMPAIGN_DURATION", "600")),
                     out=tmp_path / "campaign"))
