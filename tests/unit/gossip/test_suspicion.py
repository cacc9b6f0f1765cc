"""Lifeguard's dynamic suspicion timeouts as pure functions (node.gossip.suspicion)."""

from __future__ import annotations

import math
import random

import pytest

from node.gossip.suspicion import Suspicion, suspicion_bounds, suspicion_timeout


@pytest.mark.parametrize(("n", "scale"), [
    (0, 1.0), (1, 1.0), (2, 1.0), (5, 1.0), (10, 1.0), (100, 2.0), (1000, 3.0), (10_000, 4.0),
])
def test_bounds_scale_with_log10_n_and_never_below_one_period_factor(n: int,
                                                                     scale: float) -> None:
    low, high = suspicion_bounds(n, 1.0, 4.0, 6.0)
    assert low == pytest.approx(4.0 * scale)
    assert high == pytest.approx(low * 6.0)


def test_bounds_formula_for_many_sizes_and_settings() -> None:
    rng = random.Random(11)
    for _ in range(500):
        n = rng.randint(1, 20_000)
        interval, mult, max_mult = rng.uniform(0.05, 5), rng.uniform(1, 8), rng.uniform(1, 10)
        low, high = suspicion_bounds(n, interval, mult, max_mult)
        assert low == pytest.approx(mult * max(1.0, math.log10(n)) * interval)
        assert high == pytest.approx(low * max_mult)
        assert high >= low > 0


def test_bounds_grow_with_the_cluster() -> None:
    lows = [suspicion_bounds(n, 1.0, 4.0, 6.0)[0] for n in range(1, 3000)]
    assert lows == sorted(lows)


def test_timeout_starts_at_max_and_reaches_min_at_expected_confirmations() -> None:
    assert suspicion_timeout(0, 3, 4.0, 24.0) == pytest.approx(24.0)
    assert suspicion_timeout(3, 3, 4.0, 24.0) == pytest.approx(4.0)
    # Logarithmic: the first confirmation counts for more than the later ones.
    one = suspicion_timeout(1, 3, 4.0, 24.0)
    two = suspicion_timeout(2, 3, 4.0, 24.0)
    assert one == pytest.approx(24.0 - 20.0 * math.log(2) / math.log(4))
    assert 24.0 - one > one - two > two - 4.0 > 0


def test_timeout_shrinks_monotonically_and_never_below_min() -> None:
    rng = random.Random(5)
    for _ in range(300):
        expected = rng.randint(1, 10)
        low = rng.uniform(0.1, 10)
        high = low * rng.uniform(1, 10)
        timeouts = [suspicion_timeout(c, expected, low, high) for c in range(0, 30)]
        assert timeouts == sorted(timeouts, reverse=True)
        assert all(low <= t <= high for t in timeouts)
        assert timeouts[expected:] == [pytest.approx(low)] * (30 - expected)


@pytest.mark.parametrize("expected", [0, -1])
def test_timeout_is_min_when_no_confirmations_are_expected(expected: int) -> None:
    assert suspicion_timeout(0, expected, 4.0, 24.0) == 4.0
    assert suspicion_timeout(5, expected, 4.0, 24.0) == 4.0


def test_confirm_counts_each_member_once() -> None:
    s = Suspicion(incarnation=3, started_s=100.0, min_s=4.0, max_s=24.0, expected=2)
    assert s.deadline() == pytest.approx(124.0)
    assert s.confirm("b") is True
    after_one = s.deadline()
    assert after_one < 124.0
    assert s.confirm("b") is False
    assert s.deadline() == after_one
    assert s.confirm("c") is True
    assert s.deadline() == pytest.approx(104.0)
    assert s.confirm("d") is True
    assert s.deadline() == pytest.approx(104.0)  # never below min
    assert s.confirm("c") is False


def test_deadline_is_the_final_checks_end_once_a_check_runs() -> None:
    s = Suspicion(incarnation=0, started_s=10.0, min_s=4.0, max_s=24.0, expected=2)
    s.check_seq = 17
    s.check_ends_s = 35.5
    assert s.deadline() == 35.5
    s.confirm("b")
    s.confirm("c")
    assert s.deadline() == 35.5  # confirmations no longer move it
