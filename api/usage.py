"""Usage (CONTRACT.md §4c): leased hours, GPU-hours and busy GPU-hours per machine, for a
tenant's own users (``/api/v1/customer/usage``) and for staff (``/api/v1/admin/usage``)."""

from __future__ import annotations

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.keys import PRINCIPAL, USAGE
from api.models import TenantId, WindowQuery
from api.routing import Routes
from services.errors import ErrorCode

routes = Routes("usage")

_WINDOW = ("The window `[from, to)`: `to` defaults to now, `from` to 30 days before `to`; "
           "`from` must be before `to`, at most 366 days. Lease time counts up to now. "
           "Attributed by lease: a machine reclaimed since (and maybe leased to another "
           "tenant) still counts for the tenant that held it.")


class AdminUsageQuery(WindowQuery):
    tenant_id: TenantId


class MachineUsage(BaseModel):
    machine_id: str
    leased_hours: float = Field(description="lease time inside the window: from the lease's "
                                            "start to the earliest of its close, its expiry "
                                            "and now")
    gpu_hours: float | None = Field(description="leased hours x the machine's GPU count; null "
                                                "for a machine deleted since")
    busy_gpu_hours: float | None = Field(
        description="per hour of the 1 h rollups: the mean utilisation of the machine's GPUs "
                    "/ 100 x its GPU count x the part of the hour leased in the window, "
                    "summed; hours without samples add nothing; null when no sample exists "
                    "for the leased time")


class Usage(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True)  # `from` is a Python keyword

    since: AwareDatetime = Field(alias="from")
    until: AwareDatetime = Field(alias="to")
    machines: list[MachineUsage] = Field(description="machines leased in the window, by id")


@routes.get("/api/v1/customer/usage", access="tenant:machine:read",
            summary="What my tenant leased and used", query=WindowQuery, response=Usage,
            description=_WINDOW)
async def my_usage(request: web.Request, query: WindowQuery) -> Usage:
    usage = await request.app[USAGE].of_tenant(request[PRINCIPAL].tenant_id, query.since,
                                                query.until)
    return Usage.model_validate(usage)


@routes.get("/api/v1/admin/usage", access="customer:read",
            summary="What a customer leased and used", query=AdminUsageQuery,
            response=Usage, errors=(ErrorCode.NOT_FOUND,),
            description=_WINDOW + " `tenant_id` is required; an unknown one is 404.")
async def customer_usage(request: web.Request, query: AdminUsageQuery) -> Usage:
    usage = await request.app[USAGE].of_customer(query.tenant_id, query.since, query.until)
    return Usage.model_validate(usage)
