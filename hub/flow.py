"""Flow control of the telemetry write queue (DESIGN.md "Flow control").

The writer reports its queue depth here. Above the high-water mark the flow closes: agent
sockets are no longer read (each socket's handler waits here with its transport paused,
so TCP slows the agent, which keeps its samples) and HTTP heartbeats are answered 503
with ``Retry-After``. At or below the low-water mark it opens again. Machines whose
socket waits here were heard from: the hub itself stopped listening to them.
"""

from __future__ import annotations

import asyncio
import time


class IngestFlow:
    def __init__(self, *, high_water: int, low_water: int) -> None:
        """The marks while PostgreSQL keeps up (rows)."""
        if not 0 <= low_water < high_water:
            raise ValueError("expected 0 <= low_water < high_water")
        self.high_water = high_water
        self.low_water = low_water
        self._open = asyncio.Event()
        self._open.set()
        self._closed_at = 0.0
        self._closed_s = 0.0
        # Machine ids whose socket handler waits for the flow to open.
        self.waiting: set[str] = set()
        self.closings = 0
        self._released = False

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    @property
    def closed_seconds(self) -> float:
        """How long the flow has been closed, in all, since the start."""
        if self.is_open:
            return self._closed_s
        return self._closed_s + time.monotonic() - self._closed_at

    def release(self) -> None:
        """Open for good (shutdown: what the agents still send is taken, then the writer
        refuses what it cannot store)."""
        self._released = True
        self.update(0, 1, 0)

    def update(self, depth: int, high_water: int, low_water: int) -> None:
        """The queue holds ``depth`` rows; the writer says which marks hold now (it raises
        them while PostgreSQL is unreachable, when nothing drains anyway)."""
        if self._released:
            depth = 0
        if self._open.is_set():
            if depth >= high_water:
                self._open.clear()
                self._closed_at = time.monotonic()
                self.closings += 1
        elif depth <= low_water:
            self._closed_s += time.monotonic() - self._closed_at
            self._open.set()

    async def wait(self, machine_id: str) -> None:
        """Until the flow is open; meanwhile ``machine_id`` counts as heard from."""
        self.waiting.add(machine_id)
        try:
            await self._open.wait()
        finally:
            self.waiting.discard(machine_id)
