"""What one user may ask of a node: requests per second and uploads at once.

A token bucket per user: ``rate_per_s`` requests a second on average, bursts up
to ``burst``; past that a request is refused with 429 and ``Retry-After`` (the
time until the bucket holds a token again). Uploads in flight are counted per
user too, so one user cannot tie up every upload slot and the memory they hold
(each upload keeps up to ``(max_chunks_in_flight + 1) * chunk_size`` bytes).

Limits are per node: a client spread over N nodes may reach N times them, as
with any per-server limit behind a load balancer. Memory is bounded: at most
``max_users`` buckets, least recently used dropped first (a dropped bucket
starts full again, which only ever lets a request through).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from node.errors import TooManyRequests


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at_s: float


class UserLimits:
    def __init__(self, *, rate_per_s: float, burst: float, max_uploads: int,
                 clock: Callable[[], float], max_users: int = 100_000) -> None:
        self.rate_per_s = rate_per_s
        self.burst = max(burst, 1.0)
        self.max_uploads = max_uploads
        self._clock = clock
        self._max_users = max_users
        self._buckets: OrderedDict[int, _Bucket] = OrderedDict()
        self._uploads: dict[int, int] = {}
        self.refused = {"rate": 0, "uploads": 0}

    def charge(self, uid: int) -> None:
        """Take one request from ``uid``'s bucket; TooManyRequests if it is empty."""
        if self.rate_per_s <= 0:
            return
        now = self._clock()
        bucket = self._buckets.get(uid)
        if bucket is None:
            bucket = self._buckets[uid] = _Bucket(self.burst, now)
            while len(self._buckets) > self._max_users:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(uid)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at_s) * self.rate_per_s)
            bucket.at_s = now
        if bucket.tokens < 1.0:
            self.refused["rate"] += 1
            raise TooManyRequests(f"more than {self.rate_per_s:g} requests a second from this "
                                  "user; slow down",
                                  retry_after_s=(1.0 - bucket.tokens) / self.rate_per_s)
        bucket.tokens -= 1.0

    @contextmanager
    def upload(self, uid: int) -> Iterator[None]:
        """Count an upload of ``uid`` for the block; TooManyRequests when at the limit."""
        held = self._uploads.get(uid, 0)
        if held >= self.max_uploads:
            self.refused["uploads"] += 1
            raise TooManyRequests(f"this user already has {held} uploads in flight on this "
                                  "node; finish some first", retry_after_s=1.0)
        self._uploads[uid] = held + 1
        try:
            yield
        finally:
            left = self._uploads[uid] - 1
            if left:
                self._uploads[uid] = left
            else:
                del self._uploads[uid]

    def uploads_of(self, uid: int) -> int:
        return self._uploads.get(uid, 0)
