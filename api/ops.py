"""Operations endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Literal

from aiohttp import web
from pydantic import BaseModel

from api.keys import METRICS, PG_POOL, REDIS
from api.routing import PUBLIC, Routes
from services.errors import ErrorCode, Unavailable

routes = Routes("ops")

READY_TIMEOUT_S = 2.0


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    database: Literal["ok", "unavailable"]
    redis: Literal["ok", "unavailable"]


@routes.get("/healthz", access=PUBLIC, summary="The process is alive", response=Health)
async def healthz(request: web.Request) -> Health:
    return Health()


async def _probe(check: Awaitable[object]) -> Literal["ok", "unavailable"]:
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await check
    except Exception:
        return "unavailable"
    return "ok"


@routes.get("/readyz", access=PUBLIC, summary="PostgreSQL and Redis are reachable",
            response=Readiness, errors=(ErrorCode.UNAVAILABLE,),
            description="503 with `data` naming the dependency that failed.")
async def readyz(request: web.Request) -> Readiness:
    database, redis = await asyncio.gather(
        _probe(request.app[PG_POOL].fetchval("SELECT 1")),
        _probe(request.app[REDIS].ping()),
    )
    readiness = Readiness(database=database, redis=redis)
    if "unavailable" in (database, redis):
        raise Unavailable("not ready", data=readiness.model_dump())
    return readiness


@routes.get("/metrics", access=PUBLIC, summary="Prometheus metrics",
            raw_content_type="text/plain; version=0.0.4",
            description="Keep this port private or filter /metrics at the proxy.")
async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
