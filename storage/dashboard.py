"""Dashboard aggregates, each computed by PostgreSQL in one statement."""

from __future__ import annotations

import asyncpg

from storage.db import Executor

# active_customers: enabled tenants holding at least one machine right now.
_STATS = """
SELECT m.total_machines, m.online_machines, m.offline_machines, m.total_gpus,
       m.allocated_machines,
       (SELECT count(DISTINCT a.tenant_id) FROM allocations a
        JOIN tenants t ON t.id = a.tenant_id
        WHERE a.status <> 'reclaimed' AND t.status = 'active') AS active_customers,
       (SELECT count(*) FROM alerts WHERE status <> 'resolved') AS active_alerts
FROM (SELECT count(*) AS total_machines,
             count(*) FILTER (WHERE status = 'online') AS online_machines,
             count(*) FILTER (WHERE status = 'offline') AS offline_machines,
             coalesce(sum(gpu_count), 0) AS total_gpus,
             count(*) FILTER (WHERE allocation_status = 'allocated') AS allocated_machines
      FROM machines) m
"""


async def stats(db: Executor) -> asyncpg.Record:
    return await db.fetchrow(_STATS)
