"""``/api/v1/admin/alerts``: what needs an operator's attention."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field

from api.keys import ALERTS, PRINCIPAL
from api.models import Page, PageQuery
from api.routing import Routes
from services.alerts import alert_event
from services.errors import ErrorCode
from services.ids import ALERT, parse_id
from storage.alerts import AlertFilter

routes = Routes("alerts")


class AlertQuery(PageQuery):
    status: Literal["active", "acknowledged", "resolved"] = "active"
    severity: Literal["info", "warning", "critical"] | None = None
    machine_id: str | None = Field(None, max_length=64)


class AlertItem(BaseModel):
    id: str = Field(examples=["alert-3"])
    machine_id: str
    tenant_id: int | None
    rule: Literal["machine_offline", "gpu_overheat", "gpu_xid", "gpu_ecc", "gpu_remapped_rows",
                  "disk_full", "lease_expiring", "reclaim_stuck"]
    severity: Literal["info", "warning", "critical"]
    status: Literal["active", "acknowledged", "resolved"]
    message: str
    details: dict[str, Any]
    first_seen_at: AwareDatetime
    last_seen_at: AwareDatetime
    resolved_at: AwareDatetime | None
    acknowledged_by: str | None = Field(description="username")
    acknowledged_at: AwareDatetime | None

    @classmethod
    def from_row(cls, row: Any) -> AlertItem:
        return cls.model_validate(alert_event(row))


@routes.get("/api/v1/admin/alerts", access="alert:read", summary="List alerts",
            query=AlertQuery, response=Page[AlertItem],
            description="Active ones by default; most recently seen first.")
async def list_alerts(request: web.Request, query: AlertQuery) -> Page[AlertItem]:
    flt = AlertFilter(status=query.status, severity=query.severity, machine_id=query.machine_id)
    rows, total = await request.app[ALERTS].page(flt, limit=query.page_size,
                                                 offset=query.offset)
    return Page[AlertItem](list=[AlertItem.from_row(r) for r in rows], total=total,
                           page=query.page, page_size=query.page_size)


@routes.post("/api/v1/admin/alerts/{id}/ack", access="alert:write",
             summary="Acknowledge an alert", response=AlertItem,
             errors=(ErrorCode.NOT_FOUND, ErrorCode.CONFLICT),
             description="An acknowledged alert stays open until its condition clears. "
                         "Acknowledging twice changes nothing; a resolved alert is 409.")
async def ack_alert(request: web.Request) -> AlertItem:
    alert_id = parse_id(ALERT, request.match_info["id"], "alert")
    row = await request.app[ALERTS].acknowledge(alert_id, request[PRINCIPAL].user_id)
    return AlertItem.from_row(row)
