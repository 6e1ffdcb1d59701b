"""Dashboard figures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg

from storage import dashboard as dashboard_store


class DashboardService:
    def __init__(self, pool: asyncpg.Pool, avg_gpu_util: Callable[[], float | None]) -> None:
        self._pool = pool
        self._avg_gpu_util = avg_gpu_util

    async def stats(self) -> dict[str, Any]:
        row = dict(await dashboard_store.stats(self._pool))
        total, allocated = row.pop("total_machines"), row.pop("allocated_machines")
        return {
            **row,
            "total_machines": total,
            "allocation_rate": round(allocated / total * 100, 1) if total else 0.0,
            "avg_gpu_utilization": self._avg_gpu_util(),
        }
