"""argon2id password hashing, off the event loop.

A hash or a verification costs ~110 ms of CPU with the default parameters, so
each runs on a worker thread, and a limiter keeps login storms from taking
every core from the data path.
"""

from __future__ import annotations

import argon2
import trio
from argon2.exceptions import InvalidHashError, VerificationError


class PasswordHasher:
    def __init__(self, *, time_cost: int, memory_kib: int, parallelism: int,
                 max_concurrent: int = 2) -> None:
        self._hasher = argon2.PasswordHasher(time_cost=time_cost, memory_cost=memory_kib,
                                             parallelism=parallelism,
                                             type=argon2.Type.ID)
        self._limiter = trio.CapacityLimiter(max_concurrent)
        #: Verified against when a user does not exist, so that answering "no such
        #: user" costs as much as "wrong password" and timing reveals nothing.
        self.dummy_hash = self._hasher.hash("no user has this password")

    async def hash(self, password: str) -> str:
        return await trio.to_thread.run_sync(self._hasher.hash, password,
                                             limiter=self._limiter)

    def hash_sync(self, password: str) -> str:
        """For bootstrap, before the node serves anything."""
        return self._hasher.hash(password)

    async def verify(self, password_hash: str, password: str) -> bool:
        return await trio.to_thread.run_sync(self._verify, password_hash, password,
                                             limiter=self._limiter)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError, ValueError):
            return False
