"""The machine list stays index-driven with 10,000 machines (EXPLAIN, not timings)."""

from __future__ import annotations

import pytest

from storage import machines
from storage.machines import MachineFilter


@pytest.fixture
async def ten_thousand_machines(db):
    tenant = await db.fetchval("INSERT INTO tenants (name) VALUES ('Acme') RETURNING id")
    await db.execute("""
        INSERT INTO machines (id, name, region, ip, gpu_model, gpu_count, agent_token_hash,
                              tenant_id, allocation_status, status)
        SELECT 'node-' || lpad(i::text, 5, '0'), 'gpu-host-' || i, 'region-' || (i % 50),
               ('10.' || (i / 65536) || '.' || (i / 256 % 256) || '.' || (i % 256))::inet,
               (ARRAY['NVIDIA H100', 'NVIDIA A100', 'RTX 4090', 'L40S'])[1 + i % 4]
                   || ' rev' || (i % 100),
               8, sha256(i::text::bytea),
               CASE WHEN i % 100 = 0 THEN $1::bigint END,
               CASE WHEN i % 100 = 0 THEN 'allocated' ELSE 'idle' END,
               CASE WHEN i % 10 = 0 THEN 'offline' ELSE 'online' END
        FROM generate_series(1, 10000) AS i
    """, tenant)
    await db.execute("ANALYZE machines")
    return tenant


async def _plan(db, flt):
    captured = []

    class Explaining:
        async def fetchval(self, query, *args):
            return await db.fetchval(query, *args)

        async def fetch(self, query, *args):
            rows = await db.fetch("EXPLAIN " + query, *args)
            captured.append("\n".join(r[0] for r in rows))
            return []

    await machines.page(Explaining(), flt, limit=10, offset=0)
    return captured[0]


@pytest.mark.parametrize("flt", [
    MachineFilter(),
    MachineFilter(keyword="gpu-host-4242"),
    MachineFilter(gpu_model="rev42"),
    MachineFilter(region="region-7"),
    MachineFilter(allocation_status="allocated"),
    MachineFilter(status="offline", region="region-3"),
], ids=["unfiltered", "keyword", "gpu_model", "region", "allocation_status", "status+region"])
async def test_machine_page_query_uses_indexes(db, ten_thousand_machines, flt):
    plan = await _plan(db, flt)
    assert "Seq Scan on machines" not in plan, plan


async def test_machine_page_query_by_tenant_uses_an_index(db, ten_thousand_machines):
    plan = await _plan(db, MachineFilter(tenant_id=ten_thousand_machines))
    assert "Seq Scan on machines" not in plan, plan


async def test_filters_return_the_right_machines_at_scale(db, ten_thousand_machines):
    rows, total = await machines.page(db, MachineFilter(keyword="gpu-host-4242"), limit=10,
                                      offset=0)
    assert [r["id"] for r in rows] == ["node-04242"] and total == 1
    rows, total = await machines.page(db, MachineFilter(tenant_id=ten_thousand_machines),
                                      limit=5, offset=95)
    assert total == 100 and [r["id"] for r in rows] == ["node-09600", "node-09700",
                                                        "node-09800", "node-09900",
                                                        "node-10000"]
