"""Readiness probes of PostgreSQL and Redis (for /readyz)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal

import asyncpg
import redis.asyncio as redis

READY_WAIT_S = 0.8


class ReadinessProbes:
    """Probes of PostgreSQL and Redis for /readyz, which answers within ``READY_WAIT_S``
    whatever they do: a probe not done by then reports its dependency unavailable and is
    left to finish on its own (bounded by the clients' timeouts), and the next call waits
    on it again rather than starting another, so probes never pile up."""

    def __init__(self, pool: asyncpg.Pool, client: redis.Redis) -> None:
        self._checks: dict[str, Callable[[], Awaitable[object]]] = {
            "database": lambda: pool.fetchval("SELECT 1"), "redis": client.ping}
        self._running: dict[str, asyncio.Task[object]] = {}

    async def check(self) -> dict[str, Literal["ok", "unavailable"]]:
        tasks = {name: self._probe(name) for name in self._checks}
        await asyncio.wait(tasks.values(), timeout=READY_WAIT_S)
        return {name: "ok" if task.done() and not task.cancelled() and task.exception() is None
                else "unavailable" for name, task in tasks.items()}

    def _probe(self, name: str) -> asyncio.Task[object]:
        task = self._running.get(name)
        if task is None or task.done():
            task = asyncio.ensure_future(self._checks[name]())
            task.add_done_callback(_retrieve)
            self._running[name] = task
        return task


def _retrieve(task: asyncio.Task[object]) -> None:
    if not task.cancelled():
        task.exception()  # read, so an unavailable dependency is not logged as a bug
