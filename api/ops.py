"""Operations endpoints: liveness and readiness. Prometheus metrics have a listener of
their own (api/metrics_listener.py), off the API port."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from api.keys import READINESS, TIMESCALE_JOBS
from api.routing import PUBLIC, Routes
from services.errors import ErrorCode, Unavailable

routes = Routes("ops")

class Health(BaseModel):
    status: Literal["ok"] = "ok"


class FailingJob(BaseModel):
    job_id: int
    name: str
    last_run_started_at: datetime | None
    total_failures: int | None


class TimescaleJobsHealth(BaseModel):
    jobs: int = Field(description="TimescaleDB background jobs (policies) of the database")
    failing: list[FailingJob] = Field(description="jobs whose last run failed")


class Readiness(BaseModel):
    database: Literal["ok", "unavailable"]
    redis: Literal["ok", "unavailable"]
    timescaledb: TimescaleJobsHealth | None = Field(
        None, description="on the TimescaleDB variant: its jobs, as last read (every "
                          "minute); a failing job does not make the hub unready")


@routes.get("/healthz", access=PUBLIC, summary="The process is alive", response=Health)
async def healthz(request: web.Request) -> Health:
    return Health()


@routes.get("/readyz", access=PUBLIC, summary="PostgreSQL and Redis are reachable",
            response=Readiness, errors=(ErrorCode.UNAVAILABLE,),
            description="Answers within a second. 503 with `data` naming the dependency "
                        "that failed; on TimescaleDB, `timescaledb` lists failing jobs.")
async def readyz(request: web.Request) -> Readiness:
    states = await request.app[READINESS].check()
    jobs = request.app.get(TIMESCALE_JOBS)
    readiness = Readiness(**states, timescaledb=None if jobs is None else TimescaleJobsHealth(
        jobs=len(jobs.jobs), failing=[FailingJob(**job) for job in jobs.failing]))
    if "unavailable" in states.values():
        raise Unavailable("not ready", data=readiness.model_dump(mode="json",
                                                                 exclude_none=True))
    return readiness
