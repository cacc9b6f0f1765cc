"""Gossip presets and their scaling formulas (node.gossip.config)."""

from __future__ import annotations

import math

import pytest

from node.gossip.config import LAN, LOCAL, PRESETS, TESTS, GossipConfig


@pytest.mark.parametrize(("n", "expected"), [
    (0, 4), (1, 4), (2, 4), (9, 4), (10, 8), (99, 8), (100, 12), (999, 12), (1000, 16),
])
def test_retransmit_limit_is_mult_times_ceil_log10_n_plus_1(n: int, expected: int) -> None:
    assert LAN.retransmit_limit(n) == expected


@pytest.mark.parametrize("config", [LAN, LOCAL, TESTS, GossipConfig(retransmit_mult=3)],
                         ids=["lan", "local", "tests", "mult3"])
def test_retransmit_limit_formula_holds_for_every_size(config: GossipConfig) -> None:
    previous = 0
    for n in range(1, 5001):
        limit = config.retransmit_limit(n)
        assert limit == config.retransmit_mult * math.ceil(math.log10(n + 1)), n
        assert limit >= previous, n
        previous = limit


@pytest.mark.parametrize(("n", "multiplier"), [
    (1, 1), (2, 1), (31, 1), (32, 1),
    (33, 2), (48, 2), (64, 2),
    (65, 3), (128, 3),
    (129, 4), (256, 4),
    (257, 5), (512, 5), (1024, 6), (10_000, 10),
])
@pytest.mark.parametrize("config", [LAN, LOCAL, TESTS], ids=["lan", "local", "tests"])
def test_push_pull_interval_steps_up_each_time_n_doubles_past_32(
        config: GossipConfig, n: int, multiplier: int) -> None:
    """memberlist's pushPullScale: ceil(log2(N) - log2(32)) + 1 times the base past 32."""
    assert config.push_pull_interval(n) == pytest.approx(config.push_pull_interval_s * multiplier)


def test_push_pull_interval_never_shrinks_as_the_cluster_grows() -> None:
    intervals = [LAN.push_pull_interval(n) for n in range(1, 5000)]
    assert intervals == sorted(intervals)
    assert intervals[0] == LAN.push_pull_interval_s


def test_presets_are_named_and_distinct() -> None:
    assert PRESETS == {"lan": LAN, "local": LOCAL, "tests": TESTS}
    assert LAN == GossipConfig()
    assert LOCAL.probe_interval_s < LAN.probe_interval_s
    assert TESTS.probe_interval_s < LOCAL.probe_interval_s


@pytest.mark.parametrize("config", [LAN, LOCAL, TESTS], ids=["lan", "local", "tests"])
def test_preset_timings_are_consistent(config: GossipConfig) -> None:
    # A direct probe times out before the period ends, leaving time for the indirect ones.
    assert 0 < config.probe_timeout_s < config.probe_interval_s
    assert config.indirect_checks >= 1
    # The suspicion maths needs a range: max >= min, at least one probe period.
    assert config.suspicion_max_mult >= 1
    assert config.suspicion_mult * config.probe_interval_s >= config.probe_interval_s
    assert config.awareness_max >= 1
    # Piggybacking leaves room in a datagram for the header and the protocol message.
    assert 0 < config.piggyback_budget_bytes < 1400
    # Gossip runs several times per probe period; push-pull and reaping are much rarer.
    assert config.gossip_interval_s < config.probe_interval_s < config.push_pull_interval_s
    assert config.push_pull_interval_s < config.reap_after_s
    assert config.reconnect_every >= 1


def test_configs_are_frozen() -> None:
    with pytest.raises(AttributeError):
        LAN.probe_interval_s = 2.0  # type: ignore[misc]
