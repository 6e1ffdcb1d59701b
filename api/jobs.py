"""``/api/v1/jobs/{id}``: any asynchronous operation; customers see their tenant's only."""

from __future__ import annotations

from aiohttp import web

from api.items import JobItem
from api.keys import JOBS, PRINCIPAL
from api.routing import Routes
from services.errors import ErrorCode
from services.ids import JOB, parse_id

routes = Routes("jobs")


@routes.get("/api/v1/jobs/{id}", access="job:read", summary="One job",
            response=JobItem, errors=(ErrorCode.NOT_FOUND,))
async def get_job(request: web.Request) -> JobItem:
    job_id = parse_id(JOB, request.match_info["id"], "job")
    return JobItem.from_row(await request.app[JOBS].get(job_id, request[PRINCIPAL]))
