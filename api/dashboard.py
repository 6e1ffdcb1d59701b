"""``/api/v1/admin/dashboard``: fleet numbers at a glance."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field

from api.items import AllocationItem
from api.keys import ALLOCATIONS, DASHBOARD
from api.models import Query
from api.routing import Routes

routes = Routes("dashboard")


class Stats(BaseModel):
    total_machines: int
    online_machines: int
    offline_machines: int
    total_gpus: int
    avg_gpu_utilization: float | None = Field(
        description="mean of the online machines' latest gpu_util; null when none reports")
    allocation_rate: float = Field(description="allocated / total machines x 100")
    active_customers: int = Field(description="enabled customers holding a machine now")
    active_alerts: int = Field(description="alerts not resolved (acknowledged included)")


class RecentQuery(Query):
    limit: int = Field(10, ge=1, le=50)


@routes.get("/api/v1/admin/dashboard/stats", access="monitoring:read",
            summary="Fleet statistics", response=Stats)
async def stats(request: web.Request) -> Stats:
    return Stats.model_validate(await request.app[DASHBOARD].stats())


@routes.get("/api/v1/admin/allocations/recent", access="machine:read",
            summary="The latest leases", query=RecentQuery, response=list[AllocationItem],
            description="Newest first.")
async def recent_allocations(request: web.Request, query: RecentQuery) -> list[AllocationItem]:
    rows = await request.app[ALLOCATIONS].recent(query.limit)
    return [AllocationItem.from_row(r) for r in rows]
