"""Training tasks of tenants."""

from __future__ import annotations

import asyncpg

_STOP_LIVE_ON_MACHINE = """
UPDATE tasks SET status = 'stopped', error = $3, updated_at = now(), finished_at = now()
WHERE machine_id = $1 AND tenant_id = $2
  AND status IN ('pending', 'starting', 'running', 'stopping')
"""


async def stop_live_on_machine(conn: asyncpg.Connection, machine_id: str, tenant_id: int,
                               reason: str) -> None:
    await conn.execute(_STOP_LIVE_ON_MACHINE, machine_id, tenant_id, reason)
