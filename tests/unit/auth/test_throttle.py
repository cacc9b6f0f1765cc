"""LoginThrottle: threshold, doubling delay, window, success, bounded memory."""

from __future__ import annotations

import pytest

from node.auth.throttle import LoginThrottle
from node.errors import TooManyRequests


def throttle(**overrides: float) -> LoginThrottle:
    settings: dict = dict(max_failures=3, window_s=60.0, backoff_s=1.0, max_delay_s=8.0)
    settings.update(overrides)
    return LoginThrottle(**settings)


def blocked_for(t: LoginThrottle, keys: list[str], now: float) -> float:
    """The Retry-After the throttle demands, 0 if the attempt may proceed."""
    try:
        t.check(keys, now)
    except TooManyRequests as exc:
        assert exc.status == 429
        return exc.retry_after_s
    return 0.0


def test_unknown_key_is_allowed() -> None:
    assert blocked_for(throttle(), ["user:a", "ip:1"], 0.0) == 0.0
    assert blocked_for(throttle(), [], 0.0) == 0.0


def test_threshold() -> None:
    t = throttle()
    for _ in range(2):
        t.failed(["u"], 10.0)
        assert blocked_for(t, ["u"], 10.0) == 0.0
    t.failed(["u"], 10.0)  # the max_failures-th failure starts the delay
    assert blocked_for(t, ["u"], 10.0) == pytest.approx(1.0)
    assert blocked_for(t, ["u"], 10.25) == pytest.approx(0.75)
    assert blocked_for(t, ["u"], 11.0) == 0.0  # the delay has passed


def test_delay_doubles_up_to_the_cap() -> None:
    t = throttle()
    now = 0.0
    delays = []
    for _ in range(8):
        t.failed(["u"], now)
        delays.append(blocked_for(t, ["u"], now))
        now += max(delays[-1], 0.1)  # the client waits out each delay
    assert delays == pytest.approx([0, 0, 1, 2, 4, 8, 8, 8])


def test_huge_failure_counts_stay_capped() -> None:
    t = throttle(window_s=1e9, max_delay_s=300.0)
    for i in range(2000):
        t.failed(["u"], float(i))
    assert blocked_for(t, ["u"], 1999.0) == pytest.approx(300.0)


def test_window_expiry_forgets_failures() -> None:
    t = throttle()
    t.failed(["u"], 0.0)
    t.failed(["u"], 30.0)
    t.failed(["u"], 61.0)  # first failure is older than the window: count restarts
    assert blocked_for(t, ["u"], 61.0) == 0.0
    t.failed(["u"], 62.0)
    assert blocked_for(t, ["u"], 62.0) == 0.0
    t.failed(["u"], 63.0)  # third failure within the new window
    assert blocked_for(t, ["u"], 63.0) == pytest.approx(1.0)


def test_success_clears_the_record() -> None:
    t = throttle()
    for _ in range(4):
        t.failed(["user:u", "ip:1"], 0.0)
    assert blocked_for(t, ["user:u"], 0.0) > 0
    t.succeeded("user:u")
    assert blocked_for(t, ["user:u"], 0.0) == 0.0
    # The address keeps its own record.
    assert blocked_for(t, ["ip:1"], 0.0) > 0
    # And the user's count started over.
    t.failed(["user:u"], 0.0)
    assert blocked_for(t, ["user:u"], 0.0) == 0.0
    t.succeeded("never-seen")  # harmless


def test_check_reports_the_longest_wait_of_its_keys() -> None:
    t = throttle()
    for _ in range(3):
        t.failed(["a"], 0.0)
    for _ in range(5):
        t.failed(["b"], 0.0)
    assert blocked_for(t, ["a"], 0.0) == pytest.approx(1.0)
    assert blocked_for(t, ["a", "b", "c"], 0.0) == pytest.approx(4.0)
    assert blocked_for(t, ["c"], 0.0) == 0.0


def test_keys_are_independent() -> None:
    t = throttle()
    for _ in range(3):
        t.failed(["a"], 0.0)
    t.failed(["b"], 0.0)
    assert blocked_for(t, ["b"], 0.0) == 0.0


def test_memory_is_bounded_oldest_evicted_first() -> None:
    t = throttle(max_failures=1, max_keys=3)
    for key in ["k1", "k2", "k3"]:
        t.failed([key], 0.0)
    t.failed(["k1"], 0.5)  # k1 is fresh again; k2 is now the oldest
    t.failed(["k4"], 0.5)
    assert len(t._records) == 3
    assert blocked_for(t, ["k2"], 0.5) == 0.0  # evicted
    for key in ["k1", "k3", "k4"]:
        assert blocked_for(t, [key], 0.5) > 0, key


def test_many_keys_never_exceed_the_bound() -> None:
    t = throttle(max_keys=100)
    for i in range(5000):
        t.failed([f"ip:{i}", "user:x"], float(i) / 1000)
    assert len(t._records) == 100
    # The hot key is refreshed on every failure and so survives the churn.
    assert blocked_for(t, ["user:x"], 4.999) > 0
