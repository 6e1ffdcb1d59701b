"""The audit trail of operator actions.

An acknowledged write's record is committed before its response goes out (``write``, one
INSERT): a crash right after a 200 cannot lose it. If PostgreSQL cannot take it then (the
write itself committed a moment before it went away), the record waits in a bounded
queue that a background writer retries with COPY batches, and ``close`` writes what is
left. While that queue is full, writes are refused before they run (``accepting``), so no
record is ever dropped for want of room; only one PostgreSQL refuses (it could never be
stored) is dropped, and counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.cancel import finish_within
from services.logs import Outage
from services.tokens import API_KEY_PREFIX
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
    """A copy of a JSON value with every secret-named key's value replaced, at any depth,
    and every string holding an API key, whatever its field is named (and NUL characters,
    which PostgreSQL cannot store, replaced)."""
    if isinstance(value, dict):
        return {
            clean_text(key): REDACTED if _is_secret(key) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return REDACTED if API_KEY_PREFIX in value else clean_text(value)
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
    def __init__(self, pool: asyncpg.Pool, *, retry_interval_s: float, queue_max: int) -> None:
        self._pool = pool
        self._interval = retry_interval_s
        self._max = queue_max
        self._pending: deque[AuditRecord] = deque()
        self._wakeup = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._outage = Outage(log, "audit writes")
        self.dropped = 0
        self.written = 0

    @property
    def accepting(self) -> bool:
        """False while the queue of records PostgreSQL could not take is full: a write
        must be refused before it runs, for its record would have nowhere to go."""
        return len(self._pending) < self._max

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def queue_max(self) -> int:
        return self._max

    async def write(self, entry: AuditRecord) -> None:
        """Commit the record now; if PostgreSQL cannot take it, queue it for the retries
        (the queue has room: ``accepting`` was checked before the write ran)."""
        try:
            await audit_store.insert(self._pool, entry)
        except UNAVAILABLE_ERRORS as exc:
            self._outage.failed(exc, pending=len(self._pending) + 1)
            self._pending.append(entry)
            self._wakeup.set()
            return
        except Exception:
            self.dropped += 1
            log.exception("audit record refused by PostgreSQL; dropped",
                          extra={"audit_trace_id": entry.trace_id})
            return
        self.written += 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def close(self, timeout_s: float) -> None:
        """Stop the writer and write everything still queued (clean shutdown), all within
        ``timeout_s``."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        if self._task is not None:
            # Let a write in progress finish rather than cancel it half-way (it could have
            # committed without us knowing); cancel only a writer stuck past the grace time.
            self._stopping = True
            self._wakeup.set()
            await finish_within(self._task, timeout_s / 2)
        try:
            async with asyncio.timeout_at(deadline):
                await self.flush()
        except Exception:
            log.error("audit records lost at shutdown: PostgreSQL did not take them in time",
                      extra={"lost": len(self._pending)})

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
            except Exception as exc:
                self._outage.failed(exc, pending=len(self._pending))
                delay = min(max(delay * 2, 0.5), _RETRY_MAX_S)
                continue
            delay = self._interval
            self._outage.recovered()

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


