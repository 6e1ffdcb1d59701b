"""The audit trail of operator actions.

Requests hand their record to ``AuditTrail.record``, which only appends to memory; a
background writer COPYs batches into PostgreSQL, so auditing adds no database round trip to
a request. When PostgreSQL is down the batch is kept and retried; past ``queue_max`` new
records are dropped and counted (memory stays bounded). ``close`` writes what is left.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import asyncpg

from storage import audit as audit_store
from storage.audit import AuditFilter, AuditRecord
from storage.db import UNAVAILABLE_ERRORS

log = logging.getLogger(__name__)

REDACTED = "***"
# A key is secret when its lower-cased name contains any of these.
_SECRET_PARTS = ("password", "token", "secret", "private_key")

BATCH_MAX = 1000
_RETRY_MAX_S = 5.0


def redact(value: Any) -> Any:
    """A copy of a JSON value with every secret-named key's value replaced, at any depth
    (and NUL characters, which PostgreSQL cannot store, replaced)."""
    if isinstance(value, dict):
        return {
            clean_text(key): REDACTED if _is_secret(key) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return clean_text(value)
    return value


def clean_text(text: str) -> str:
    return text.replace("\x00", "\ufffd")


def _is_secret(key: object) -> bool:
    name = str(key).lower()
    return any(part in name for part in _SECRET_PARTS)


@dataclass(frozen=True)
class AuditPage:
    rows: list[asyncpg.Record]
    total: int


class AuditTrail:
    def __init__(self, pool: asyncpg.Pool, *, flush_interval_s: float, queue_max: int) -> None:
        self._pool = pool
        self._interval = flush_interval_s
        self._max = queue_max
        self._pending: deque[AuditRecord] = deque()
        self._wakeup = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.dropped = 0
        self.written = 0

    def record(self, entry: AuditRecord) -> None:
        if len(self._pending) >= self._max:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("audit queue full; records dropped", extra={"dropped": self.dropped})
            return
        self._pending.append(entry)
        if len(self._pending) >= BATCH_MAX:
            self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def close(self, timeout_s: float) -> None:
        """Stop the writer and write everything still in memory (clean shutdown)."""
        if self._task is not None:
            # Let a write in progress finish rather than cancel it half-way (it could have
            # committed without us knowing); cancel only a writer stuck past the grace time.
            self._stopping = True
            self._wakeup.set()
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
            log.exception("audit records lost at shutdown", extra={"lost": len(self._pending)})

    async def flush(self) -> None:
        """Write every record queued so far; raises if PostgreSQL refuses."""
        while self._pending:
            await self._write_batch()

    async def _run(self) -> None:
        delay = self._interval
        while not self._stopping:
            with suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wakeup.wait()
            self._wakeup.clear()
            if self._stopping:
                return
            try:
                await self.flush()
                delay = self._interval
            except Exception:
                delay = min(max(delay * 2, 0.5), _RETRY_MAX_S)
                log.warning("audit write failed; retrying", exc_info=True,
                            extra={"pending": len(self._pending), "retry_in_s": delay})

    async def _write_batch(self) -> None:
        async with self._write_lock:
            batch = [self._pending[i] for i in range(min(BATCH_MAX, len(self._pending)))]
            if not batch:
                return
            async with self._pool.acquire() as conn:
                try:
                    await audit_store.copy_in(conn, batch)
                    written = len(batch)
                except UNAVAILABLE_ERRORS:
                    raise  # keep them queued for the retry
                except Exception:
                    # Refused (by PostgreSQL or by the driver's encoder): one bad record
                    # must not block the trail, so write them one by one.
                    written = await self._write_one_by_one(conn, batch)
            for _ in batch:
                self._pending.popleft()
            self.written += written

    async def _write_one_by_one(self, conn: asyncpg.Connection,
                                batch: list[AuditRecord]) -> int:
        written = 0
        for entry in batch:
            try:
                await audit_store.copy_in(conn, [entry])
                written += 1
            except UNAVAILABLE_ERRORS:
                raise
            except Exception:
                self.dropped += 1
                log.exception("audit record refused by PostgreSQL; dropped",
                              extra={"audit_trace_id": entry.trace_id})
        return written

    async def page(self, flt: AuditFilter, *, page: int, page_size: int) -> AuditPage:
        rows, total = await audit_store.page(self._pool, flt, limit=page_size,
                                             offset=(page - 1) * page_size)
        return AuditPage(rows=rows, total=total)


