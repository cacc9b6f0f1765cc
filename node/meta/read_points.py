"""Linearizable read points, shared by the reads that wait for the same one.

Every authenticated request starts with a read barrier: a ReadIndex from the
coordinator (an RPC from a follower, a heartbeat round on the leader). Asked
one by one, that is a round trip and a heartbeat round per request, which at a
few thousand requests a second costs more CPU than the requests themselves.

``ReadPoints`` shares them. At most one fetch is in flight; the reads that
arrive meanwhile gather, and the next fetch serves all of them. Each read gets
the answer of a fetch that *started after the read arrived*, which is what
makes sharing safe: a read point taken before a read began could miss a write
acknowledged just before it. A read waits at most for the fetch in flight to
finish and then for its own.

Cancellation: a read that is cancelled while it leads a fetch abandons the
fetch; the reads that joined it start (or join) another one, so nobody waits on
an abandoned fetch.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio


@dataclass(eq=False)
class _Gathering:
    """The reads waiting for one fetch, and its outcome."""

    done: trio.Event = field(default_factory=trio.Event)
    value: int | None = None
    error: Exception | None = None


class ReadPoints:
    def __init__(self, fetch: Callable[[], Awaitable[int]]) -> None:
        self._fetch = fetch
        self._in_flight = trio.Lock()
        #: The gathering that has not started its fetch yet; later reads join it.
        self._open: _Gathering | None = None
        self.fetches = 0
        self.reads = 0

    async def get(self) -> int:
        """A read point no older than this call; raises what the fetch raised."""
        self.reads += 1
        while True:
            gathering = self._open
            if gathering is None:
                gathering = self._open = _Gathering()
                await self._lead(gathering)
            else:
                await gathering.done.wait()
            if gathering.value is not None:
                return gathering.value
            if gathering.error is not None:
                raise gathering.error
            # Its leader was cancelled before an answer: gather again.

    async def _lead(self, gathering: _Gathering) -> None:
        try:
            async with self._in_flight:
                if self._open is gathering:
                    self._open = None  # from now on, new reads need a later fetch
                self.fetches += 1
                gathering.value = await self._fetch()
        except Exception as exc:  # noqa: BLE001 - every read of this gathering gets it
            gathering.error = exc
        finally:
            if self._open is gathering:
                self._open = None  # cancelled while waiting for the lock
            gathering.done.set()
