"""Batched COPY of telemetry rows into PostgreSQL.

Frames wait in memory already encoded for COPY (``storage.telemetry.frame_rows``) and go
out by size (``batch_rows``) or age (``flush_s``), whichever comes first. Each sample is
stored once however often its batch is sent (unique keys), so a batch whose outcome is
unknown (a timeout, a lost connection) is simply sent again, after a backoff that new
arrivals do not shorten. An outage is logged when it starts and when it ends.

The queue's depth drives the flow control (hub/flow.py): above the high-water mark the
hub stops reading agents, and below the low one it reads them again. While PostgreSQL is
unreachable nothing drains, latency no longer matters and the marks rise to the queue's
bound (``queue_rows``): the hub keeps reading, so dashboards stay live, and pauses the
agents only once the bound is reached. Frames beyond the bound, or arriving once the
writer stops, are refused (the agent is told and keeps them). Rows are dropped only when
shutdown's deadline passes before PostgreSQL takes them, and that is counted and logged.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from contextlib import suppress
from datetime import datetime

import asyncpg

from hub.flow import IngestFlow
from services.cancel import finish_within
from services.logs import Outage
from storage import telemetry
from storage.telemetry import FrameRows

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0
BACKLOG_FACTOR = 4
RETRY_AFTER_MAX_S = 10
OUTAGE_RETRY_AFTER_S = 5
_RATE_SMOOTHING = 0.3

# Called after each written batch with the distinct sample times it contained.
OnWritten = Callable[[Collection[datetime]], Awaitable[None]]


class TelemetryWriter:
    def __init__(self, pool: asyncpg.Pool, *, batch_rows: int, flush_s: float,
                 queue_rows: int, flow: IngestFlow, on_written: OnWritten | None = None,
                 write_timeout_s: float | None = None) -> None:
        self._pool = pool
        self._batch_rows = batch_rows
        self._flush_s = flush_s
        self._queue_rows = queue_rows
        self._flow = flow
        self._on_written = on_written
        self._timeout = write_timeout_s
        self._frames: deque[FrameRows] = deque()
        self._queued = 0  # rows waiting, including a batch being written
        self._oldest: float | None = None  # when the oldest waiting frame arrived
        self._due = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._accepting = True
        self._stopping = False
        self._outage = Outage(log, "telemetry writes")
        self._rate = 0.0  # rows per second while writing, smoothed
        self.rows_written = 0
        self.rows_dropped = 0
        self.rows_refused = 0
        self.duplicates = 0
        self.batches = 0
        self.failures = 0
        self.last_batch_s = 0.0

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def high_water(self) -> int:
        return self._queue_rows if self._outage.ongoing else self._flow.high_water

    @property
    def low_water(self) -> int:
        if self._outage.ongoing:
            return self._queue_rows - (self._flow.high_water - self._flow.low_water)
        return self._flow.low_water

    def add(self, rows: FrameRows) -> bool:
        """Queue one frame's rows; False when they cannot be taken (the caller tells the
        agent, which keeps them): the queue is at its bound, or the writer is stopping."""
        if not self._accepting or self._queued + rows.rows > self._queue_rows:
            self.rows_refused += rows.rows
            return False
        self._frames.append(rows)
        self._queued += rows.rows
        if self._oldest is None:
            self._oldest = time.monotonic()
        if self._queued >= self._batch_rows:
            self._due.set()
        self._flow.update(self._queued, self.high_water, self.low_water)
        return True

    def retry_after_s(self) -> int:
        """What to tell an agent refused while the flow is closed: about how long the
        queue takes to drain below the low-water mark."""
        if self._outage.ongoing or self._rate <= 0:
            return OUTAGE_RETRY_AFTER_S
        excess = max(0, self._queued - self.low_water)
        return max(1, min(RETRY_AFTER_MAX_S, math.ceil(excess / self._rate)))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="telemetry-writer")

    async def close(self, timeout_s: float) -> None:
        """Refuse new rows, write what is queued for at most ``timeout_s``, then stop;
        rows still queued then are lost, and logged as such."""
        self._accepting = False
        self._stopping = True
        self._due.set()
        if self._task is not None:
            await finish_within(self._task, timeout_s)
        if self._queued:
            self.rows_dropped += self._queued
            log.error("telemetry rows lost at shutdown: PostgreSQL did not take them in time",
                      extra={"rows": self._queued})

    async def flush(self) -> None:
        """Write everything queued now; raises if PostgreSQL refuses."""
        while self._frames or self._lock.locked():  # also a batch the loop is writing
            await self._write_batch()

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            if not self._frames:
                if self._stopping:
                    return
                await self._wait_due(self._flush_s)
                continue
            age = time.monotonic() - (self._oldest or 0.0)
            if not self._stopping and self._queued < self._batch_rows and age < self._flush_s:
                await self._wait_due(self._flush_s - age)
                continue
            try:
                await self._write_batch()
            except Exception as exc:
                self.failures += 1
                self._outage.failed(exc, queued=self._queued)
                self._flow.update(self._queued, self.high_water, self.low_water)
                backoff = min(max(backoff * 2, BACKOFF_MIN_S), BACKOFF_MAX_S)
                await asyncio.sleep(backoff)  # whatever arrives meanwhile
                continue
            backoff = 0.0
            self._outage.recovered(queued=self._queued)

    async def _wait_due(self, timeout_s: float) -> None:
        with suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._due.wait()
        self._due.clear()

    async def _write_batch(self) -> None:
        async with self._lock:
            # Behind a backlog a batch grows (up to BACKLOG_FACTOR times): fewer round
            # trips per row when they are expensive.
            size = self._batch_rows * (BACKLOG_FACTOR if self._queued > 2 * self._batch_rows
                                       else 1)
            batch: list[FrameRows] = []
            rows = 0
            while self._frames and rows < size:
                frame = self._frames.popleft()
                batch.append(frame)
                rows += frame.rows
            if not batch:
                return
            started = time.monotonic()
            try:
                async with self._pool.acquire() as conn:
                    written = await telemetry.write_frames(conn, batch, timeout=self._timeout)
            except BaseException:
                self._frames.extendleft(reversed(batch))  # in order, for the retry
                raise
            took = time.monotonic() - started
            self._queued -= rows
            self._oldest = time.monotonic() if self._frames else None
            self.rows_written += written.rows
            self.duplicates += written.duplicates
            self.batches += 1
            self.last_batch_s = took
            if took > 0:
                rate = rows / took
                self._rate = rate if not self._rate else (
                    self._rate + _RATE_SMOOTHING * (rate - self._rate))
            self._flow.update(self._queued, self.high_water, self.low_water)
        if self._on_written is not None:
            try:
                # a frame's rows share one datetime: a set of them is cheap to build
                await self._on_written({frame.time for frame in batch if frame.rows > 1})
            except Exception:
                log.warning("after-write hook failed", exc_info=True)
