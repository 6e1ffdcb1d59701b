"""``/api/v1/admin/audit-logs``: the trail of operator actions."""

from __future__ import annotations

from typing import Any, Literal

import asyncpg
from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field

from api.keys import AUDIT
from api.models import Page, PageQuery, UserId, WindowQuery
from api.routing import Routes
from services.ids import API_KEY, format_id
from storage.audit import AuditFilter

routes = Routes("audit")


class AuditQuery(PageQuery, WindowQuery):
    user_id: UserId | None = None
    method: Literal["POST", "PUT", "PATCH", "DELETE"] | None = None
    path: str | None = Field(None, max_length=512, description="path prefix")


class AuditLogItem(BaseModel):
    id: int
    user_id: int | None
    username: str | None
    tenant_id: int | None
    ip: str | None
    method: str
    path: str
    body: Any = Field(description="request body with secrets replaced by \"***\"")
    status: int
    trace_id: str
    duration_ms: float
    created_at: AwareDatetime
    api_key_id: str | None = Field(description="the API key that acted (`key-N`), or null",
                                   examples=["key-12"])

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> AuditLogItem:
        key_id = row["api_key_id"]
        return cls.model_validate(
            {**dict(row), "api_key_id": None if key_id is None else format_id(API_KEY, key_id)})


@routes.get("/api/v1/admin/audit-logs", access="audit:read", summary="List audit records",
            query=AuditQuery, response=Page[AuditLogItem],
            description="Newest first. Every POST/PUT/PATCH/DELETE is recorded, failed ones "
                        "included; agent traffic is not.")
async def list_audit_logs(request: web.Request, query: AuditQuery) -> Page[AuditLogItem]:
    flt = AuditFilter(user_id=query.user_id, method=query.method, path_prefix=query.path,
                      since=query.since, until=query.until)
    result = await request.app[AUDIT].page(flt, page=query.page, page_size=query.page_size)
    return Page[AuditLogItem](
        list=[AuditLogItem.from_row(row) for row in result.rows],
        total=result.total, page=query.page, page_size=query.page_size,
    )
