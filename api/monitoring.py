"""Live monitoring and GPU trends for admins."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from api.keys import TELEMETRY
from api.models import Query
from api.routing import Routes
from services.errors import ErrorCode

routes = Routes("monitoring")


class GpuNow(BaseModel):
    index: int
    util: float
    mem_used: float
    mem_total: float
    temp: float
    power: float


class MachineNow(BaseModel):
    machine_id: str
    status: Literal["online", "offline"]
    gpu_util: float | None = Field(description="mean over the GPUs, percent")
    gpu_mem: float = Field(description="MiB used, summed over the GPUs")
    cpu_util: float
    ts: float = Field(description="sample time, epoch seconds")
    gpus: list[GpuNow]


class Realtime(BaseModel):
    machines: list[MachineNow]


class TrendQuery(Query):
    range: Literal["1h", "6h", "24h", "7d", "30d"] = "24h"
    machine_id: str | None = Field(None, max_length=64)


class TrendQueryOwn(Query):
    range: Literal["1h", "6h", "24h", "7d", "30d"] = "24h"


class TrendPoint(BaseModel):
    ts: int = Field(description="bucket start, epoch seconds")
    avg_util: float
    max_util: float
    avg_mem_util: float | None = Field(description="mean of mem_used / mem_total x 100")


class Trend(BaseModel):
    interval: int = Field(description="bucket width, seconds")
    points: list[TrendPoint]


@routes.get("/api/v1/admin/monitoring/realtime", access="monitoring:read",
            summary="The latest sample of every machine", response=Realtime,
            description="Read from Redis in one round trip.")
async def realtime(request: web.Request) -> Realtime:
    return Realtime.model_validate({"machines": await request.app[TELEMETRY].realtime()})


@routes.get("/api/v1/admin/dashboard/gpu-trend", access="monitoring:read",
            summary="GPU utilisation over time, fleet-wide or for one machine",
            query=TrendQuery, response=Trend, errors=(ErrorCode.NOT_FOUND,),
            description="1h: 1 min buckets, 6h: 5 min, 24h: 15 min, 7d: 1 h, 30d: 6 h. Oldest "
                        "first, up to and including the current bucket; empty buckets are "
                        "left out. Ranges above 6 h read only the rollups.")
async def gpu_trend(request: web.Request, query: TrendQuery) -> Trend:
    interval, points = await request.app[TELEMETRY].trend(query.range,
                                                          machine_id=query.machine_id)
    return Trend.model_validate({"interval": interval, "points": points})
