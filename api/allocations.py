"""``/api/v1/admin/allocations``: batch leases, the lease list, renewals."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from api.items import AllocationItem
from api.keys import ALLOCATIONS, PRINCIPAL
from api.models import (
    Body,
    LeaseStart,
    MachineId,
    Page,
    PageQuery,
    PathParams,
    TenantId,
    prefixed_id,
)
from api.routing import Routes
from services.allocations import MAX_BATCH
from services.errors import ErrorCode
from services.ids import ALLOCATION, format_id, parse_id
from storage.allocations import AllocationFilter

routes = Routes("allocations")


class BatchAllocateIn(Body):
    tenant_id: TenantId
    machine_ids: list[MachineId] = Field(min_length=1, max_length=MAX_BATCH)
    duration_months: int = Field(ge=1, le=36)
    start_time: LeaseStart | None = Field(
        None, description="default now; within 10 years of now, past (back-dating) or future")
    remark: str | None = Field(None, max_length=1024)


class AllocationIds(BaseModel):
    allocation_ids: list[str]


class AllocationQuery(PageQuery):
    status: Literal["active", "reclaiming", "reclaimed"] | None = None
    tenant_id: TenantId | None = None
    machine_id: str | None = Field(None, max_length=64)


class RenewIn(Body):
    duration_months: int = Field(ge=1, le=36)


class AllocationPath(PathParams):
    id: prefixed_id(ALLOCATION)  # type: ignore[valid-type]


@routes.post("/api/v1/admin/allocations", access="allocation:write",
             summary="Lease several machines to a tenant, all or nothing",
             body=BatchAllocateIn, response=AllocationIds,
             errors=(ErrorCode.NOT_FOUND, ErrorCode.CONFLICT),
             description="If any machine is not allocatable nothing is leased and the 409 "
                         "names each one: `data.machines = [{id, reason}]`.")
async def allocate_batch(request: web.Request, body: BatchAllocateIn) -> AllocationIds:
    ids = await request.app[ALLOCATIONS].allocate(
        body.machine_ids, tenant_id=body.tenant_id, months=body.duration_months,
        start_time=body.start_time, remark=body.remark, actor=request[PRINCIPAL].user_id,
    )
    return AllocationIds(allocation_ids=[format_id(ALLOCATION, i) for i in ids])


@routes.get("/api/v1/admin/allocations", access="machine:read", summary="List leases",
            query=AllocationQuery, response=Page[AllocationItem],
            description="Newest first.")
async def list_allocations(request: web.Request,
                           query: AllocationQuery) -> Page[AllocationItem]:
    flt = AllocationFilter(status=query.status, tenant_id=query.tenant_id,
                           machine_id=query.machine_id)
    rows, total = await request.app[ALLOCATIONS].page(flt, limit=query.page_size,
                                                      offset=query.offset)
    return Page[AllocationItem](list=[AllocationItem.from_row(r) for r in rows], total=total,
                                page=query.page, page_size=query.page_size)


@routes.post("/api/v1/admin/allocations/{id}/renew", access="allocation:write",
             summary="Extend an active lease", path_params=AllocationPath, body=RenewIn,
             response=AllocationItem,
             errors=(ErrorCode.NOT_FOUND, ErrorCode.CONFLICT),
             description="Adds calendar months; the expiry is recomputed from the start so "
                         "month ends do not drift.")
async def renew_allocation(request: web.Request, body: RenewIn) -> AllocationItem:
    allocation_id = parse_id(ALLOCATION, request.match_info["id"], "allocation")
    row = await request.app[ALLOCATIONS].renew(allocation_id, body.duration_months)
    return AllocationItem.from_row(row)
