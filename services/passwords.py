"""argon2id password hashing, run off the event loop on a small dedicated thread pool."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import argon2
from argon2.exceptions import InvalidHashError, VerificationError


class PasswordHasher:
    def __init__(self, *, time_cost: int, memory_kib: int) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=1, type=argon2.Type.ID
        )
        # Bounded so a login flood costs at most this many hashes' memory at once.
        self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2,
                                        thread_name_prefix="argon2")
        self._dummy_hash = self._hasher.hash("no such user: spend the same time")

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self._hasher.hash, password
        )

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True if the password matches; an absent hash costs the same time and fails."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self._verify, password_hash, password
        )

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            self._hasher.verify(password_hash or self._dummy_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        return password_hash is not None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
