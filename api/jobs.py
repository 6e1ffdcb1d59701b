"""Jobs: any asynchronous operation (``/api/v1/jobs/{id}``), the platform's job list and a
tenant's own; customers see their tenant's jobs only."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from api.items import JobItem, JobKind, JobStatus
from api.keys import JOBS, PRINCIPAL
from api.models import Page, PageQuery, PathParams, TenantId, prefixed_id
from api.routing import Routes
from services.errors import ErrorCode
from services.ids import JOB, parse_id
from storage.jobs import JobFilter

routes = Routes("jobs")


class JobPath(PathParams):
    id: prefixed_id(JOB)  # type: ignore[valid-type]


class TenantJobQuery(PageQuery):
    kind: JobKind | None = None
    status: JobStatus | None = None
    machine_id: str | None = Field(None, max_length=64)


class JobQuery(TenantJobQuery):
    tenant_id: TenantId | None = None


def _page(rows: list[Any], total: int, query: PageQuery) -> Page[JobItem]:
    return Page[JobItem](list=[JobItem.from_row(r) for r in rows], total=total,
                         page=query.page, page_size=query.page_size)


@routes.get("/api/v1/jobs/{id}", access="job:read", summary="One job",
            path_params=JobPath,
            response=JobItem, errors=(ErrorCode.NOT_FOUND,))
async def get_job(request: web.Request) -> JobItem:
    job_id = parse_id(JOB, request.match_info["id"], "job")
    return JobItem.from_row(await request.app[JOBS].get(job_id, request[PRINCIPAL]))


@routes.get("/api/v1/admin/jobs", access="job:read", summary="List jobs",
            query=JobQuery, response=Page[JobItem],
            description="Newest first. `job:read` is a customer permission too: a tenant's "
                        "user gets its own tenant's jobs here, whatever `tenant_id` says.")
async def list_jobs(request: web.Request, query: JobQuery) -> Page[JobItem]:
    flt = JobFilter(kind=query.kind, status=query.status, machine_id=query.machine_id,
                    tenant_id=query.tenant_id)
    rows, total = await request.app[JOBS].page(flt, request[PRINCIPAL],
                                               limit=query.page_size, offset=query.offset)
    return _page(rows, total, query)


@routes.get("/api/v1/customer/jobs", access="job:read", summary="My tenant's jobs",
            query=TenantJobQuery, response=Page[JobItem],
            description="Newest first: reclaims, SSH resets, mounts and task commands of the "
                        "caller's tenant. A machine of another tenant in `machine_id` matches "
                        "nothing, as an unknown one does.")
async def my_jobs(request: web.Request, query: TenantJobQuery) -> Page[JobItem]:
    flt = JobFilter(kind=query.kind, status=query.status, machine_id=query.machine_id)
    rows, total = await request.app[JOBS].page_of_tenant(
        request[PRINCIPAL].tenant_id, flt, limit=query.page_size, offset=query.offset)
    return _page(rows, total, query)
