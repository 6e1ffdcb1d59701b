"""EXPLAIN ANALYZE of the admin machine list with a large fleet.

Creates a scratch database, migrates it, inserts N machines (default 10,000), runs the
list query of storage/machines.py for each filter and prints the plan and its time.

    .venv/bin/python loadtest/explain_machines.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from storage import machines
from storage.db import create_pool
from storage.machines import MachineFilter
from storage.migrate import migrate

FILTERS = {
    "unfiltered": MachineFilter(),
    "keyword=gpu-host-4242": MachineFilter(keyword="gpu-host-4242"),
    "keyword=10.0.4": MachineFilter(keyword="10.0.4"),
    "gpu_model=rev42": MachineFilter(gpu_model="rev42"),
    "region=region-7": MachineFilter(region="region-7"),
    "allocation_status=allocated": MachineFilter(allocation_status="allocated"),
    "status=offline&region=region-3": MachineFilter(status="offline", region="region-3"),
}

SEED = """
INSERT INTO machines (id, name, region, ip, gpu_model, gpu_count, agent_token_hash, tenant_id,
                      allocation_status, status)
SELECT 'node-' || lpad(i::text, 6, '0'), 'gpu-host-' || i, 'region-' || (i % 50),
       ('10.' || (i / 65536) || '.' || (i / 256 % 256) || '.' || (i % 256))::inet,
       (ARRAY['NVIDIA H100', 'NVIDIA A100', 'RTX 4090', 'L40S'])[1 + i % 4] || ' rev' || (i % 100),
       8, sha256(i::text::bytea), CASE WHEN i % 100 = 0 THEN $2::bigint END,
       CASE WHEN i % 100 = 0 THEN 'allocated' ELSE 'idle' END,
       CASE WHEN i % 10 = 0 THEN 'offline' ELSE 'online' END
FROM generate_series(1, $1::int) AS i
"""


class Explaining:
    """Runs the count as is and the page query under EXPLAIN ANALYZE."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.plan = ""

    async def fetchval(self, query: str, *args: object) -> object:
        return await self.pool.fetchval(query, *args)

    async def fetch(self, query: str, *args: object) -> list:
        rows = await self.pool.fetch("EXPLAIN (ANALYZE, COSTS OFF) " + query, *args)
        self.plan = "\n".join(r[0] for r in rows)
        return []


async def main(dsn: str, count: int) -> None:
    name = f"remotegpu_explain_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    target = urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))
    try:
        conn = await asyncpg.connect(target)
        await migrate(conn)
        tenant = await conn.fetchval("INSERT INTO tenants (name) VALUES ('Acme') RETURNING id")
        await conn.execute(SEED, count, tenant)
        await conn.execute("ANALYZE")
        await conn.close()
        pool = await create_pool(target, min_size=1, max_size=2)
        print(f"{count} machines")
        for label, flt in [*FILTERS.items(), (f"tenant_id={tenant}",
                                              MachineFilter(tenant_id=tenant))]:
            explaining = Explaining(pool)
            await machines.page(explaining, flt, limit=10, offset=0)
            print(f"\n## {label}\n{explaining.plan}")
        await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--machines", type=int, default=10_000)
    args = parser.parse_args()
    asyncio.run(main(args.dsn, args.machines))
