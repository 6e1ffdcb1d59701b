"""Dashboard figures."""

from __future__ import annotations

from typing import Any

import asyncpg

from storage import dashboard as dashboard_store


class DashboardService:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def stats(self) -> dict[str, Any]:
        row = dict(await dashboard_store.stats(self._pool))
        total, allocated = row.pop("total_machines"), row.pop("allocated_machines")
        return {
            **row,
            "total_machines": total,
            "allocation_rate": round(allocated / total * 100, 1) if total else 0.0,
            # per-machine utilisation arrives with agent telemetry
            "avg_gpu_utilization": None,
        }
