"""Slowing down repeated failed logins, per user name and per client address.

After ``max_failures`` failures within ``window_s``, further attempts for that
key are refused (429) until a delay has passed; the delay doubles with each
further failure, up to ``max_delay_s``. A success clears the user's record.
Memory is bounded: at most ``max_keys`` records, oldest evicted first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from node.errors import TooManyRequests


@dataclass(slots=True)
class _Record:
    failures: int
    first_s: float
    blocked_until_s: float


class LoginThrottle:
    def __init__(self, *, max_failures: int, window_s: float, backoff_s: float,
                 max_delay_s: float = 300.0, max_keys: int = 100_000) -> None:
        self._max_failures = max_failures
        self._window_s = window_s
        self._backoff_s = backoff_s
        self._max_delay_s = max_delay_s
        self._max_keys = max_keys
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def check(self, keys: list[str], now_s: float) -> None:
        """Raise TooManyRequests if any key is in its penalty delay."""
        wait = 0.0
        for key in keys:
            record = self._records.get(key)
            if record is not None and record.blocked_until_s > now_s:
                wait = max(wait, record.blocked_until_s - now_s)
        if wait > 0:
            raise TooManyRequests("too many failed logins; retry later",
                                  retry_after_s=wait)

    def failed(self, keys: list[str], now_s: float) -> None:
        for key in keys:
            record = self._records.get(key)
            if record is None or now_s - record.first_s > self._window_s:
                record = _Record(0, now_s, 0.0)
            record.failures += 1
            excess = record.failures - self._max_failures
            if excess >= 0:
                delay = min(self._max_delay_s, self._backoff_s * 2 ** min(excess, 30))
                record.blocked_until_s = now_s + delay
            self._records[key] = record
            self._records.move_to_end(key)
        while len(self._records) > self._max_keys:
            self._records.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._records.pop(key, None)
