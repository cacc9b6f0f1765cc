"""UserLimits and ConnectionLimits: what one user or one client may hold or ask of a node."""

from __future__ import annotations

import pytest

from node.api.limits import UserLimits
from node.api.server import ConnectionLimits
from node.config import Reserve, parse_reserve
from node.errors import TooManyRequests


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_served_then_the_rate_holds_and_retry_after_says_when() -> None:
    clock = Clock()
    limits = UserLimits(rate_per_s=10, burst=20, max_uploads=2, clock=clock)
    for _ in range(20):
        limits.charge(1)
    with pytest.raises(TooManyRequests) as refused:
        limits.charge(1)
    assert refused.value.retry_after_s == pytest.approx(0.1)
    limits.charge(2)  # another user has a bucket of its own
    clock.now = 0.35  # 3.5 tokens back
    for _ in range(3):
        limits.charge(1)
    with pytest.raises(TooManyRequests):
        limits.charge(1)
    assert limits.refused["rate"] == 2


def test_a_rate_of_zero_means_no_limit() -> None:
    limits = UserLimits(rate_per_s=0, burst=0, max_uploads=1, clock=Clock())
    for _ in range(10_000):
        limits.charge(1)


def test_uploads_in_flight_per_user() -> None:
    limits = UserLimits(rate_per_s=0, burst=0, max_uploads=2, clock=Clock())
    with limits.upload(1), limits.upload(1):
        with pytest.raises(TooManyRequests):
            with limits.upload(1):
                pass
        with limits.upload(2):
            assert limits.uploads_of(2) == 1
    assert limits.uploads_of(1) == 0 and limits.refused["uploads"] == 1
    with pytest.raises(RuntimeError):
        with limits.upload(1):
            raise RuntimeError("the upload failed")
    assert limits.uploads_of(1) == 0  # a failed upload gives its slot back


def test_buckets_are_bounded_in_number() -> None:
    limits = UserLimits(rate_per_s=1, burst=1, max_uploads=1, clock=Clock(), max_users=3)
    for uid in range(10):
        limits.charge(uid)
    assert len(limits._buckets) == 3


def test_connections_per_client_and_per_node() -> None:
    limits = ConnectionLimits(total=3, per_client=2)
    assert limits.admit("a") and limits.admit("a")
    assert not limits.admit("a")
    assert limits.admit("b")
    assert not limits.admit("c")  # the node is full
    limits.release("a")
    assert limits.admit("c") and not limits.admit("a")
    assert limits.refused == 3 and limits.open == 3


@pytest.mark.parametrize(("text", "total", "expected"), [
    ("2%", 1000, 20), ("0%", 1000, 0), ("100%", 1000, 1000), ("10KiB", 10**9, 10240),
    ("0", 10**9, 0),
])
def test_the_disk_reserve_is_a_share_or_a_size(text: str, total: int, expected: int) -> None:
    assert parse_reserve(text).bytes_of(total) == expected


@pytest.mark.parametrize("text", ["-1%", "101%", "x%", "lots"])
def test_bad_reserves_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_reserve(text)


def test_the_default_reserve_reads_as_a_share() -> None:
    assert str(Reserve(share=0.02)) == "2%"
