"""The wall clock seam: the only place that reads ``time.time``.

Monotonic time is trio's clock (``trio.current_time``), which tests replace with
``MockClock``; wall time (token expiry, timestamps in metadata) comes from a
``WallClock`` handed to whoever needs it, so tests can set it.
"""

from __future__ import annotations

import functools
import time
from datetime import datetime, timezone
from typing import Protocol


class WallClock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class ManualClock:
    """A wall clock for tests that moves only when told to."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.value = start

    def now(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


def rfc3339(unix_s: float) -> str:
    """UTC with millisecond precision, e.g. ``2026-11-24T18:11:41.123Z``."""
    moment = datetime.fromtimestamp(unix_s, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def parse_rfc3339(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc).timestamp()


@functools.lru_cache(maxsize=4096)
def http_date(rfc3339_text: str) -> str:
    """The IMF-fixdate form HTTP headers use (Last-Modified), in English whatever the
    locale. Every GET needs one; the same blobs are read again and again, hence the cache
    (strptime alone cost more than the rest of a small GET's headers)."""
    moment = datetime.fromisoformat(rfc3339_text).astimezone(timezone.utc)
    return (f"{_DAYS[moment.weekday()]}, {moment.day:02d} {_MONTHS[moment.month - 1]} "
            f"{moment.year:04d} {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} GMT")
