"""The audit trail: batched COPY in, filtered pages out."""

from __future__ import annotations

from dataclasses import astuple, dataclass
from datetime import datetime
from typing import Any

import asyncpg

from storage.db import Executor, Where, escape_like


@dataclass(frozen=True, slots=True)
class AuditRecord:
    created_at: datetime
    user_id: int | None
    username: str | None
    tenant_id: int | None
    ip: str | None
    method: str
    path: str
    body: Any
    status: int
    trace_id: str
    duration_ms: float
    api_key_id: int | None = None  # the API key that acted, if one did


_COLUMNS = tuple(AuditRecord.__dataclass_fields__)


@dataclass(frozen=True)
class AuditFilter:
    user_id: int | None = None
    method: str | None = None
    path_prefix: str | None = None
    since: datetime | None = None
    until: datetime | None = None


_PAGE = """
SELECT id, user_id, username, tenant_id, host(ip) AS ip, method, path, body, status,
       trace_id, duration_ms, created_at, api_key_id
FROM audit_logs{where}
ORDER BY created_at DESC, id DESC
LIMIT {limit} OFFSET {offset}
"""
_COUNT = "SELECT count(*) FROM audit_logs{where}"


_INSERT = (f"INSERT INTO audit_logs ({', '.join(_COLUMNS)}) "
           f"VALUES ({', '.join(f'${i}' for i in range(1, len(_COLUMNS) + 1))})")


async def insert(db: Executor, record: AuditRecord) -> None:
    await db.execute(_INSERT, *astuple(record))


async def copy_in(conn: asyncpg.Connection, records: list[AuditRecord]) -> None:
    await conn.copy_records_to_table(
        "audit_logs", records=[astuple(r) for r in records], columns=_COLUMNS
    )


async def page(db: Executor, flt: AuditFilter, *, limit: int,
               offset: int) -> tuple[list[asyncpg.Record], int]:
    where = Where()
    if flt.user_id is not None:
        where.add("user_id = {}", flt.user_id)
    if flt.method is not None:
        where.add("method = {}", flt.method)
    if flt.path_prefix is not None:
        where.add("path LIKE {}", escape_like(flt.path_prefix) + "%")
    if flt.since is not None:
        where.add("created_at >= {}", flt.since)
    if flt.until is not None:
        where.add("created_at < {}", flt.until)
    total = await db.fetchval(_COUNT.format(where=where.sql), *where.args)
    clause = where.sql
    query = _PAGE.format(where=clause, limit=where.param(limit), offset=where.param(offset))
    return await db.fetch(query, *where.args), total
