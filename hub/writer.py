"""Batched COPY of telemetry rows into PostgreSQL.

Rows wait in memory and go out by size (``batch_rows``) or age (``flush_s``), whichever
comes first, with ``copy_records_to_table``. The queue is bounded: while PostgreSQL is slow
or down the hub keeps accepting frames, retries the same batch with backoff once it is
reachable again, and drops (and counts) new rows beyond ``queue_rows`` rather than
growing without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from contextlib import suppress
from datetime import datetime

import asyncpg

from storage import telemetry

log = logging.getLogger(__name__)

_BACKOFF_MAX_S = 5.0
BACKLOG_FACTOR = 4

# Called after each written batch with the distinct sample times it contained.
OnWritten = Callable[[Collection[datetime]], Awaitable[None]]


class TelemetryWriter:
    def __init__(self, pool: asyncpg.Pool, *, batch_rows: int, flush_s: float,
                 queue_rows: int, on_written: OnWritten | None = None) -> None:
        self._pool = pool
        self._batch_rows = batch_rows
        self._flush_s = flush_s
        self._queue_rows = queue_rows
        self._on_written = on_written
        self._gpu: deque[tuple] = deque()
        self._machine: deque[tuple] = deque()
        self._oldest: float | None = None  # when the oldest waiting row arrived
        self._full = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.rows_written = 0
        self.rows_dropped = 0
        self.batches = 0
        self.failures = 0
        self.last_batch_s = 0.0

    @property
    def queued(self) -> int:
        return len(self._gpu) + len(self._machine)

    def add(self, gpu_rows: list[tuple], machine_row: tuple) -> bool:
        """Queue one frame's rows; False (and counted) if the queue is full."""
        if self.queued + len(gpu_rows) + 1 > self._queue_rows:
            self.rows_dropped += len(gpu_rows) + 1
            return False
        self._gpu.extend(gpu_rows)
        self._machine.append(machine_row)
        if self._oldest is None:
            self._oldest = time.monotonic()
        if self.queued >= self._batch_rows:
            self._full.set()
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="telemetry-writer")

    async def close(self, timeout_s: float) -> None:
        """Stop, writing what is queued if PostgreSQL lets us within ``timeout_s``."""
        self._stopping = True
        self._full.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(self._task)
            except TimeoutError:
                self._task.cancel()
                with suppress(asyncio.CancelledError):
                    await self._task
        try:
            async with asyncio.timeout(timeout_s):
                await self.flush()
        except Exception:
            log.exception("telemetry rows lost at shutdown", extra={"rows": self.queued})

    async def flush(self) -> None:
        """Write everything queued now; raises if PostgreSQL refuses."""
        while self.queued:
            await self._write_batch()

    async def _run(self) -> None:
        delay = 0.0
        while not self._stopping:
            wait = self._flush_s if self._oldest is None else max(
                0.0, self._flush_s - (time.monotonic() - self._oldest))
            with suppress(TimeoutError):
                async with asyncio.timeout(max(wait, delay)):
                    await self._full.wait()
            self._full.clear()
            if self._stopping:
                return
            try:
                while self.queued and (self.queued >= self._batch_rows or self._due()):
                    await self._write_batch()
                delay = 0.0
            except Exception:
                self.failures += 1
                delay = min(max(delay * 2, 0.2), _BACKOFF_MAX_S)
                log.warning("telemetry write failed; retrying", exc_info=True,
                            extra={"queued": self.queued, "retry_in_s": delay})

    def _due(self) -> bool:
        return self._oldest is not None and time.monotonic() - self._oldest >= self._flush_s

    async def _write_batch(self) -> None:
        async with self._lock:
            # Both tables drain at their own pace. Behind a backlog a batch grows (up to
            # BACKLOG_FACTOR times): fewer round trips per row when they are expensive.
            size = self._batch_rows * (BACKLOG_FACTOR if self.queued > 2 * self._batch_rows
                                       else 1)
            gpu = [self._gpu[i] for i in range(min(size, len(self._gpu)))]
            machine = [self._machine[i] for i in range(min(size, len(self._machine)))]
            if not gpu and not machine:
                return
            started = time.monotonic()
            # No explicit transaction: each COPY is atomic by itself, and every round trip
            # saved counts when the event loop is busy (a batch waits behind every other
            # ready callback at each await).
            async with self._pool.acquire() as conn:
                if gpu:
                    await telemetry.copy_gpu_rows(conn, gpu)
                if machine:
                    await telemetry.copy_machine_rows(conn, machine)
            # written: only now leave the queue (a failure keeps them for the retry)
            for _ in gpu:
                self._gpu.popleft()
            for _ in machine:
                self._machine.popleft()
            self._oldest = time.monotonic() if self.queued else None
            self.rows_written += len(gpu) + len(machine)
            self.batches += 1
            self.last_batch_s = time.monotonic() - started
        if self._on_written is not None and gpu:
            try:
                # a frame's rows share one datetime: a set of them is cheap to build
                await self._on_written({row[0] for row in gpu})
            except Exception:
                log.warning("after-write hook failed", exc_info=True)
