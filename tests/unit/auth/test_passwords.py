"""PasswordHasher with cheap argon2id parameters."""

from __future__ import annotations

import threading
import time

import pytest
import trio

from node.auth.passwords import PasswordHasher


@pytest.fixture
def hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_kib=1024, parallelism=1)


async def test_hash_and_verify(hasher: PasswordHasher) -> None:
    hashed = await hasher.hash("correct horse")
    assert hashed.startswith("$argon2id$")
    assert "m=1024,t=1,p=1" in hashed
    assert await hasher.verify(hashed, "correct horse")
    assert not await hasher.verify(hashed, "correct horse ")
    assert not await hasher.verify(hashed, "")


async def test_salted(hasher: PasswordHasher) -> None:
    first, second = await hasher.hash("pw"), await hasher.hash("pw")
    assert first != second
    assert await hasher.verify(first, "pw") and await hasher.verify(second, "pw")


async def test_hash_sync_interoperates(hasher: PasswordHasher) -> None:
    hashed = hasher.hash_sync("päss\U0001F600")
    assert await hasher.verify(hashed, "päss\U0001F600")
    assert not await hasher.verify(hashed, "pass")


async def test_hash_made_with_other_parameters_still_verifies(hasher: PasswordHasher) -> None:
    other = PasswordHasher(time_cost=2, memory_kib=2048, parallelism=2)
    hashed = other.hash_sync("pw")
    assert await hasher.verify(hashed, "pw")
    assert not await hasher.verify(hashed, "nope")


GARBAGE = [
    "", "garbage", "$argon2id$", "$argon2id$v=19$m=1024,t=1,p=1$AAAA$BBBB",
    "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ", "$2b$12$abcdefghijklmnopqrstuv",
    "é",  # non-ASCII: argon2 encodes the hash as ASCII
]


@pytest.mark.parametrize("bad_hash", GARBAGE)
async def test_garbage_hash_is_false(hasher: PasswordHasher, bad_hash: str) -> None:
    assert await hasher.verify(bad_hash, "pw") is False


async def test_truncated_hash_is_false(hasher: PasswordHasher) -> None:
    hashed = hasher.hash_sync("pw")
    assert await hasher.verify(hashed[:-4], "pw") is False


async def test_concurrency_is_limited() -> None:
    hasher = PasswordHasher(time_cost=1, memory_kib=1024, parallelism=1, max_concurrent=2)
    lock = threading.Lock()
    running = peak = 0

    class Slow:
        def verify(self, password_hash: str, password: str) -> bool:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(0.02)
            with lock:
                running -= 1
            return True

    hasher._hasher = Slow()  # type: ignore[assignment]
    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(hasher.verify, "h", "pw")
    assert peak == 2
